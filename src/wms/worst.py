"""The photos a model gets most wrong, drawn for a person: one overlay each and an index page.

`wms evaluate MODEL DATASET --worst 10 --out DIR` writes them for any model, and every training
run logs its test split's worst under `worst/`. Torch-free: the masks come from any
`MaskPredictor`, predicted again for just these few photos rather than kept for the whole split.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import quote

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from wms.data.pairs import Pair
from wms.scores import ImageScore, MaskPredictor, predict
from wms.train.preprocess import mask_to_array, open_image, open_mask

INDEX = "index.html"
DISPLAY = 512  # longest side of an overlay: a 64-px photo and a 4000-px one read alike
TRUE, PREDICTED, BOTH = (0, 230, 0), (255, 0, 255), (255, 255, 255)


def save_jpeg(image: Image.Image, path: Path) -> None:
    """Save a drawing over a photo as a photo: JPEG at quality 90 takes a fifth of a PNG's bytes,
    and with the colours kept at full resolution (4:4:4) 2-pixel outlines stay sharp."""
    image.save(path, format="JPEG", quality=90, subsampling=0)


def pick_worst(scores: Sequence[ImageScore], n: int) -> list[ImageScore]:
    """The `n` scores with the lowest Dice, worst first (ties by id, so the choice is stable)."""
    return sorted(scores, key=lambda s: (s.dice, s.id))[:n]


def _display(image: Image.Image, mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A bool mask at the overlay's size (masks stay sharp: nearest neighbour)."""
    resized = Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.Resampling.NEAREST)
    return np.asarray(resized) > 127


def _outline(mask: np.ndarray, width: int) -> np.ndarray:
    """The mask's pixels within `width` of its border."""
    inner = mask.copy()
    for _ in range(width):  # erode by one pixel: keep what has all four neighbours
        padded = np.pad(inner, 1)
        inner = inner & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def draw_overlay(
    image: Image.Image, true: np.ndarray, predicted: np.ndarray, score: ImageScore
) -> Image.Image:
    """The photo with the true mask in green and the predicted one in magenta (white where both).

    Each mask is outlined in its colour and the pixels inside are tinted, so a miss, an extra
    region and the overlap all show; the Dice is written large in the top-left corner.
    """
    scale = DISPLAY / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    rgb = np.asarray(image.convert("RGB").resize(size, Image.Resampling.BILINEAR), dtype=np.float32)
    true, predicted = _display(image, true, size), _display(image, predicted, size)
    for region, colour, weight in (
        (true & ~predicted, TRUE, 0.5),
        (predicted & ~true, PREDICTED, 0.5),
        (true & predicted, BOTH, 0.35),
    ):
        rgb[region] = (1 - weight) * rgb[region] + weight * np.array(colour, dtype=np.float32)
    rgb[_outline(true, 2)] = TRUE
    rgb[_outline(predicted, 2)] = PREDICTED
    overlay = Image.fromarray(rgb.astype(np.uint8))

    draw = ImageDraw.Draw(overlay, "RGBA")
    big, small = ImageFont.load_default(size=DISPLAY // 11), ImageFont.load_default(size=DISPLAY // 28)
    name = score.id if len(score.id) <= 32 else score.id[:31] + "…"
    lines = [(f"Dice {score.dice:.4f}", big), (f"IoU {score.iou:.4f}   {name}", small)]
    heights = [round(draw.textbbox((0, 0), text, font=font)[3]) for text, font in lines]
    width = max(round(draw.textbbox((0, 0), text, font=font)[2]) for text, font in lines)
    draw.rectangle((0, 0, width + 16, sum(heights) + 20), fill=(0, 0, 0, 170))
    y = 6
    for (text, font), height in zip(lines, heights, strict=True):
        draw.text((8, y), text, font=font, fill=(255, 255, 255))
        y += height + 6
    x, y = 8, overlay.height - DISPLAY // 28 - 12
    draw.rectangle((0, y - 6, overlay.width, overlay.height), fill=(0, 0, 0, 140))
    swatch = DISPLAY // 36
    for text, colour in (("true", TRUE), ("predicted", PREDICTED), ("both", BOTH)):
        draw.rectangle((x, y + 3, x + swatch, y + 3 + swatch), fill=colour)
        draw.text((x + swatch + 6, y), text, font=small, fill=colour)
        x += swatch + 24 + round(draw.textlength(text, font=small))
    return overlay


def _file_name(rank: int, width: int, photo_id: str) -> str:
    """`03-<id>.jpg`: sorts worst first, and an id with odd characters stays a plain file name."""
    return f"{rank:0{width}d}-{re.sub(r'[^A-Za-z0-9._-]+', '_', photo_id)[:80]}.jpg"


def _index_page(title: str, rows: Sequence[tuple[ImageScore, str]]) -> str:
    items = "\n".join(
        f'<li><a href="{quote(name)}"><img src="{quote(name)}" alt="overlay of {html.escape(s.id)}"></a>'
        f'<p><span class="id">{html.escape(s.id)}</span> Dice <b class="dice">{s.dice:.4f}</b>'
        f' IoU <span class="iou">{s.iou:.4f}</span></p></li>'
        for s, name in rows
    )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; background: #fafafa; }}
ol {{ display: flex; flex-wrap: wrap; gap: 1.5rem; padding: 0; list-style-position: inside; }}
li {{ width: 384px; }}
img {{ width: 100%; border: 1px solid #ccc; }}
.id {{ font-family: monospace; word-break: break-all; }}
</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<p>The {len(rows)} photos with the lowest Dice, worst first. Green: the true mask;
magenta: the predicted one; white: where they agree. Click an image for full size.</p>
<ol class="worst">
{items}
</ol>
</body>
</html>
"""


def write_worst(
    out: Path,
    scores: Sequence[ImageScore],
    pairs: Sequence[Pair],
    masks: Sequence[np.ndarray],
    title: str,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """One overlay JPEG per photo and an index page listing them worst first; returns the page.

    `scores`, `pairs` and `masks` are aligned: `masks[i]` was predicted from `pairs[i].image`.
    """
    out.mkdir(parents=True, exist_ok=True)
    chosen = sorted(zip(scores, pairs, masks, strict=True), key=lambda row: (row[0].dice, row[0].id))
    width = max(2, len(str(len(chosen))))
    rows = []
    for rank, (score, pair, predicted) in enumerate(chosen, start=1):
        name = _file_name(rank, width, score.id)
        true = mask_to_array(open_mask(pair.mask))
        save_jpeg(draw_overlay(open_image(pair.image), true, predicted, score), out / name)
        rows.append((score, name))
        if progress:
            progress(1)
    page = out / INDEX
    page.write_text(_index_page(title, rows), encoding="utf-8")
    return page


def save_worst(
    out: Path,
    predictor: MaskPredictor,
    scores: Sequence[ImageScore],
    pairs: Sequence[Pair],
    n: int,
    title: str,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """The `n` lowest-Dice photos of `scores` (scored on `pairs`), predicted again and written by
    `write_worst`; returns the index page."""
    worst = pick_worst(scores, n)
    by_id = {p.id: p for p in pairs}
    chosen = [by_id[s.id] for s in worst]
    return write_worst(out, worst, chosen, predict(predictor, chosen), title, progress)
