"""Pictures a person would rather look at than numbers: training curves and predicted masks."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from wms.data.pairs import Pair
from wms.train.preprocess import mask_to_array, open_image, open_mask
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
    sheet.save(path)


def write_github_output(values: dict[str, str]) -> None:
    """Append `key=value` lines to $GITHUB_OUTPUT inside GitHub Actions; a no-op elsewhere."""
    path = os.environ.get("GITHUB_OUTPUT")
    if not path:
        return
    with open(path, "a") as fh:
        for key, value in values.items():
            if "\n" in value:
                fh.write(f"{key}<<WMS_EOF\n{value}\nWMS_EOF\n")
            else:
                fh.write(f"{key}={value}\n")


def write_step_summary(markdown: str) -> None:
    """Append Markdown to $GITHUB_STEP_SUMMARY inside GitHub Actions; a no-op elsewhere."""
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if path:
        with open(path, "a") as fh:
            fh.write(markdown.rstrip("\n") + "\n")
