"""Synthetic water-meter photos with counter-window masks, for tests and demos without real data.

Every shape is drawn through one affine frame (scale, squash, rotation, shift) so the picture and the
mask rotate together without resampling; the picture is drawn at 2x and box-reduced for antialiasing,
the mask is drawn at 1x so it stays exactly {0, 255}.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from wms.errors import UsageError

Color = tuple[int, int, int]

# Segments of a seven-segment digit, as boxes in a unit cell (x0, y0, x1, y1); t is stroke width.
_DIGIT_SEGMENTS = ("abcdef", "bc", "abdeg", "abcdg", "bcfg", "acdfg", "acdefg", "abc", "abcdefg", "abcdfg")


def _segment_box(seg: str, t: float) -> tuple[float, float, float, float]:
    """Unit-cell box of one segment."""
    half = 0.5 - t / 2
    return {
        "a": (t, 0.0, 1 - t, t),
        "b": (1 - t, t, 1.0, half),
        "c": (1 - t, 0.5 + t / 2, 1.0, 1 - t),
        "d": (t, 1 - t, 1 - t, 1.0),
        "e": (0.0, 0.5 + t / 2, t, 1 - t),
        "f": (0.0, t, t, half),
        "g": (t, half, 1 - t, 0.5 + t / 2),
    }[seg]


class _Frame:
    """Affine map from meter-local coordinates (origin at the dial centre) to 1x and 2x pixels."""

    def __init__(self, angle: float, squash: float, center: tuple[float, float]) -> None:
        cos, sin = math.cos(angle), math.sin(angle)
        self.matrix = np.array([[cos, -sin * squash], [sin, cos * squash]])
        self.center = np.array(center)

    def px(self, points: np.ndarray) -> np.ndarray:
        """Local points (N, 2) to 1x pixel coordinates."""
        return points @ self.matrix.T + self.center

    def px2(self, points: np.ndarray) -> list[tuple[float, float]]:
        """Local points to 2x canvas coordinates; +0.5 aligns 2x2 blocks with 1x pixel centres."""
        return [(float(x), float(y)) for x, y in self.px(points) * 2 + 0.5]


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=float)


def _circle(cx: float, cy: float, r: float, n: int = 48) -> np.ndarray:
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], axis=1)


def _jitter(rng: np.random.Generator, color: Color, amount: int = 18) -> Color:
    r, g, b = (min(255, max(0, c + int(rng.integers(-amount, amount + 1)))) for c in color)
    return (r, g, b)


_WALLS: tuple[Color, ...] = (
    (200, 190, 170),
    (150, 150, 150),
    (225, 225, 220),
    (120, 100, 80),
    (90, 110, 120),
)
_METALS: tuple[Color, ...] = ((180, 140, 60), (160, 160, 165), (40, 60, 140), (30, 30, 30), (200, 200, 205))
_FACES: tuple[Color, ...] = ((240, 240, 235), (235, 225, 200), (220, 230, 240), (250, 250, 250))
_RED: Color = (200, 30, 30)


def _digits(
    draw: ImageDraw.ImageDraw,
    frame: _Frame,
    rng: np.random.Generator,
    box: tuple[float, float, float, float],
    n: int,
    ink: Color,
    cell: Color | None,
    red_from: int,
) -> None:
    """Draw a row of n seven-segment digits in local box (x0, y0, x1, y1), optionally on cells."""
    x0, y0, x1, y1 = box
    cw = (x1 - x0) / n
    t = float(rng.uniform(0.13, 0.2))
    for i in range(n):
        cx0 = x0 + i * cw
        if cell is not None:
            fill = _RED if i >= red_from else cell
            draw.polygon(frame.px2(_rect(cx0 + cw * 0.06, y0, cx0 + cw * 0.94, y1)), fill=fill)
        gx0, gx1 = cx0 + cw * 0.22, cx0 + cw * 0.78
        gy0, gy1 = y0 + (y1 - y0) * 0.15, y1 - (y1 - y0) * 0.15
        for seg in _DIGIT_SEGMENTS[int(rng.integers(10))]:
            u0, v0, u1, v1 = _segment_box(seg, t)
            quad = _rect(
                gx0 + u0 * (gx1 - gx0), gy0 + v0 * (gy1 - gy0), gx0 + u1 * (gx1 - gx0), gy0 + v1 * (gy1 - gy0)
            )
            draw.polygon(frame.px2(quad), fill=ink)


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """Wall-like colour with low-frequency blotches, at 2x size."""
    wall = np.array(_jitter(rng, _WALLS[rng.integers(len(_WALLS))], 25), dtype=np.float32)
    blotch = rng.normal(0, rng.uniform(5, 25), size=(6, 6, 1)).astype(np.float32)
    small = np.clip(wall + blotch + rng.normal(0, 4, size=(6, 6, 3)), 0, 255).astype(np.uint8)
    # Smooth at 1x, then nearest 2x: the final 2x2 reduce gives back the smooth texture, 3x cheaper.
    smooth = Image.fromarray(small).resize((size, size), Image.Resampling.BILINEAR)
    return smooth.resize((size * 2, size * 2), Image.Resampling.NEAREST)


def _scene(rng: np.random.Generator, size: int) -> tuple[Image.Image, Image.Image]:
    """Draw one meter at 2x plus its 1x mask."""
    s = float(size)
    canvas = _background(rng, size)
    draw = ImageDraw.Draw(canvas)

    # Window geometry first: its area fraction is the quantity the real data constrains (0.4-15%, mean 2.3%).
    n = int(rng.integers(5, 9))
    aspect = n * rng.uniform(0.55, 0.8)
    squash = float(rng.uniform(0.75, 1.0))
    frac = math.exp(rng.uniform(math.log(0.004), math.log(0.08)))
    h = math.sqrt(frac * s * s / (aspect * squash))
    w = aspect * h
    radius = w / rng.uniform(1.1, 1.5)
    dy_max = max(0.0, math.sqrt(max(0.0, (0.93 * radius) ** 2 - (w / 2) ** 2)) - h / 2)
    dy = float(rng.uniform(-min(0.4 * radius, dy_max), min(0.05 * radius, dy_max)))
    angle = math.radians(rng.uniform(-25, 25))

    # Place the dial so the whole window is inside the picture; the dial itself may be cut off.
    window = _rect(-w / 2, dy - h / 2, w / 2, dy + h / 2)
    probe = _Frame(angle, squash, (0.0, 0.0)).px(window)
    margin = 0.02 * s
    lo = margin - probe.min(axis=0)
    hi = s - margin - probe.max(axis=0)
    # Triangular rather than uniform: people photograph meters roughly centred.
    center = tuple(
        float(a + (b - a) * rng.uniform(0, 1, 2).mean()) if b > a else float((a + b) / 2)
        for a, b in zip(lo, hi, strict=True)
    )
    frame = _Frame(angle, squash, (center[0], center[1]))

    metal = _jitter(rng, _METALS[rng.integers(len(_METALS))])
    # A pipe through the meter body, as in real installations.
    pipe_w = radius * rng.uniform(0.5, 0.9)
    pipe_dir = 0.0 if rng.random() < 0.7 else math.pi / 2
    pipe = _rect(-4 * s, -pipe_w / 2, 4 * s, pipe_w / 2)
    rot = np.array([[math.cos(pipe_dir), -math.sin(pipe_dir)], [math.sin(pipe_dir), math.cos(pipe_dir)]])
    draw.polygon(frame.px2(pipe @ rot.T), fill=_jitter(rng, metal, 30))

    if rng.random() < 0.5:
        # A dark label/sticker on the wall: same colour and shape family as the window, not masked.
        lx, ly = rng.uniform(-1.5, 1.5, size=2) * radius
        lw, lh = w * rng.uniform(0.4, 1.0), h * rng.uniform(0.8, 1.6)
        draw.polygon(frame.px2(_rect(lx, ly, lx + lw, ly + lh)), fill=_jitter(rng, (25, 25, 35)))
        _digits(
            draw, frame, rng, (lx, ly, lx + lw, ly + lh), int(rng.integers(4, 9)), (230, 230, 230), None, 99
        )

    draw.polygon(frame.px2(_circle(0, 0, radius * rng.uniform(1.15, 1.35))), fill=metal)
    draw.polygon(frame.px2(_circle(0, 0, radius)), fill=_jitter(rng, _FACES[rng.integers(len(_FACES))], 10))

    # Tick marks around the dial edge.
    ink = _jitter(rng, (30, 30, 30), 20)
    for a in np.linspace(0, 2 * np.pi, int(rng.integers(20, 60)), endpoint=False):
        d = np.array([math.cos(a), math.sin(a)])
        tick = np.stack([d * radius * 0.97, d * radius * rng.uniform(0.85, 0.92)])
        draw.line(frame.px2(tick), fill=ink, width=max(1, round(radius * 0.02)))

    # Small red dials below the window: the usual distractors on real meters.
    below = dy + h / 2
    for _ in range(int(rng.integers(0, 5))):
        r = radius * rng.uniform(0.07, 0.13)
        cx, cy = rng.uniform(-0.6, 0.6) * radius, rng.uniform(below + r * 1.3, below + r * 1.3 + 0.3 * radius)
        if math.hypot(cx, cy) + r > 0.9 * radius:
            continue
        draw.polygon(frame.px2(_circle(cx, cy, r, 20)), fill=_RED, outline=ink)
        a = rng.uniform(0, 2 * np.pi)
        needle = np.array([[cx, cy], [cx + r * 0.9 * math.cos(a), cy + r * 0.9 * math.sin(a)]])
        draw.line(frame.px2(needle), fill=(20, 20, 20), width=max(1, round(r * 0.3)))

    if rng.random() < 0.6:
        # Printed serial number under the window: digits without a window around them.
        sh = h * rng.uniform(0.25, 0.45)
        sy = min(below + 0.45 * radius, 0.8 * radius - sh)
        sw = sh * rng.uniform(3, 6)
        _digits(draw, frame, rng, (-sw / 2, sy, sw / 2, sy + sh), int(rng.integers(5, 10)), ink, None, 99)

    # The counter window: a frame, then digit cells, the last few often red (litres).
    bezel = h * rng.uniform(0.08, 0.25)
    frame_color = _jitter(rng, (20, 20, 20) if rng.random() < 0.7 else (200, 200, 195), 20)
    draw.polygon(
        frame.px2(_rect(-w / 2 - bezel, dy - h / 2 - bezel, w / 2 + bezel, dy + h / 2 + bezel)),
        fill=frame_color,
    )
    dark_cells = rng.random() < 0.6
    cell = _jitter(rng, (15, 15, 15) if dark_cells else (235, 235, 230), 12)
    draw.polygon(frame.px2(window), fill=_jitter(rng, (60, 60, 60) if dark_cells else (180, 180, 180), 20))
    digit_ink = (240, 240, 240) if dark_cells else (20, 20, 20)
    pad = h * 0.06
    red_from = n - int(rng.integers(0, 4))
    _digits(
        draw,
        frame,
        rng,
        (-w / 2 + pad, dy - h / 2 + pad, w / 2 - pad, dy + h / 2 - pad),
        n,
        digit_ink,
        cell,
        red_from,
    )

    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).polygon([(float(x), float(y)) for x, y in frame.px(window)], fill=255)
    return canvas, mask


def _photo_effects(rng: np.random.Generator, canvas: Image.Image, size: int) -> Image.Image:
    """Reduce the 2x canvas and add blur, a lighting gradient and sensor noise."""
    img = canvas.reduce(2)
    radius = rng.uniform(0.0, 1.5) * size / 512
    if radius > 0.3:
        # One box pass instead of a gaussian (three passes): visually alike at these radii, 3x cheaper.
        img = img.filter(ImageFilter.BoxBlur(radius))
    arr = np.asarray(img, dtype=np.float32)
    ramp = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    gx, gy = rng.uniform(-0.6, 0.6, size=2).astype(np.float32)
    light = 1.0 + gx * ramp[None, :] + gy * ramp[:, None] + np.float32(rng.uniform(-0.15, 0.15))
    # Luminance-only noise: a third of the random numbers, and the network must cope with it all the same.
    noise = rng.standard_normal((size, size), dtype=np.float32)
    noise *= np.float32(rng.uniform(2, 10))
    arr *= light[:, :, None]
    arr += noise[:, :, None]
    np.clip(arr, 0, 255, out=arr)
    return Image.fromarray(arr.astype(np.uint8), "RGB")


def synth_pair(seed: int, index: int, size: int = 512) -> tuple[Image.Image, Image.Image]:
    """Generate pair `index` of `seed` in memory: (RGB image, L mask with values {0, 255})."""
    # Seeding per pair keeps pair i identical whatever count a caller asks for.
    rng = np.random.default_rng([seed, index])
    canvas, mask = _scene(rng, size)
    return _photo_effects(rng, canvas, size), mask


def synthesize(
    out: Path,
    count: int,
    size: int = 512,
    seed: int = 0,
    progress: Callable[[], None] | None = None,
) -> list[str]:
    """Write `count` synthetic pairs to `out/images` and `out/masks` as PNG; return their ids."""
    if count < 1:
        raise UsageError(f"count must be at least 1, got {count}")
    if size < 16:
        raise UsageError(f"size must be at least 16 px, got {size}")
    if seed < 0:
        raise UsageError(f"seed must be 0 or more, got {seed}")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    ids = []
    for i in range(count):
        pair_id = f"synth_s{seed}_{i:05d}"
        image, mask = synth_pair(seed, i, size)
        # Low compression: the noise makes PNG barely compressible, so level 6 only costs time.
        image.save(out / "images" / f"{pair_id}.png", compress_level=1)
        mask.save(out / "masks" / f"{pair_id}.png", compress_level=1)
        ids.append(pair_id)
        if progress is not None:
            progress()
    return ids
