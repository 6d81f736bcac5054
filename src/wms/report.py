"""What a person reads: training curves, predicted masks, and GitHub Actions outputs and summaries."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from wms.data.pairs import Pair
from wms.train.preprocess import mask_to_array, open_image, open_mask
from wms.worst import save_jpeg

if TYPE_CHECKING:  # the GitHub helpers below must not load torch
    from wms.train.segmenter import Segmenter


def plot_curves(history: Sequence[dict[str, float]], path: Path) -> None:
    """Training loss and validation Dice per epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    epochs = list(range(1, len(history) + 1))
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(epochs, [h["train_loss"] for h in history], marker="o")
    left.set(title="training loss (BCE + Dice)", xlabel="epoch")
    right.plot(epochs, [h["val_dice"] for h in history], marker="o", color="tab:green")
    right.set(title="validation Dice", xlabel="epoch", ylim=(0, 1))
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def overlay_grid(segmenter: Segmenter, pairs: Sequence[Pair], path: Path, tile: int = 256) -> None:
    """Images with the true mask tinted green and the predicted one red (yellow where both agree)."""
    tiles = []
    images = [open_image(p.image) for p in pairs]
    for pair, image, predicted in zip(pairs, images, segmenter.predict_masks(images), strict=True):
        true = mask_to_array(open_mask(pair.mask))
        rgb = np.asarray(image, dtype=np.float32)
        tint = np.zeros_like(rgb)
        tint[..., 0] = predicted * 255
        tint[..., 1] = true * 255
        either = (predicted | true)[..., None]
        mixed = np.where(either, 0.45 * rgb + 0.55 * tint, rgb).astype(np.uint8)
        tiles.append(Image.fromarray(mixed).resize((tile, tile)))
    columns = min(4, len(tiles)) or 1
    rows = -(-len(tiles) // columns)
    sheet = Image.new("RGB", (columns * tile, max(1, rows) * tile), "white")
    for i, t in enumerate(tiles):
        sheet.paste(t, ((i % columns) * tile, (i // columns) * tile))
    save_jpeg(sheet, path)


def plot_paired_dice(per_image: Sequence[dict[str, float]], baseline_version: str, path: Path) -> None:
    """Per-image Dice, candidate against baseline: points above the diagonal are images it improved."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = np.array([p["baseline_dice"] for p in per_image])
    cand = np.array([p["candidate_dice"] for p in per_image])
    better = cand > base
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="grey", linewidth=1, linestyle="--")
    ax.scatter(base[better], cand[better], s=14, color="tab:green", label=f"better ({better.sum()})")
    ax.scatter(base[~better], cand[~better], s=14, color="tab:red", label=f"not better ({(~better).sum()})")
    ax.set(
        xlabel=f"production (version {baseline_version}) Dice",
        ylabel="candidate Dice",
        xlim=(-0.02, 1.02),
        ylim=(-0.02, 1.02),
        title=f"per-image Dice on {len(per_image)} test images",
    )
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_github_output(values: dict[str, str]) -> None:
    """Append `key=value` lines to $GITHUB_OUTPUT (a no-op outside GitHub Actions)."""
    path = os.environ.get("GITHUB_OUTPUT")
    if not path:
        return
    with open(path, "a") as out:
        for key, value in values.items():
            if "\n" in value:
                delimiter = f"wms_{os.urandom(8).hex()}"
                out.write(f"{key}<<{delimiter}\n{value}\n{delimiter}\n")
            else:
                out.write(f"{key}={value}\n")


def write_step_summary(markdown: str) -> None:
    """Append Markdown to the job's summary page (a no-op outside GitHub Actions)."""
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if not path:
        return
    with open(path, "a") as out:
        out.write(markdown if markdown.endswith("\n") else markdown + "\n")
