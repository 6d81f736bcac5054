"""Pre-annotations for Label Studio: predicted masks as polygons, and polygons back to masks.

The import file is Label Studio's basic JSON task format with a `predictions` list, as its
documentation describes it ("Import pre-annotated data into Label Studio",
https://labelstud.io/guide/predictions, and the PolygonLabels tag, https://labelstud.io/tags/polygonlabels):

    [{"data": {"image": "<url of the photo>"},
      "predictions": [{"model_version": "3", "score": 0.41,
                       "result": [{"id": "r1", "type": "polygonlabels",
                                   "from_name": "label", "to_name": "image",
                                   "original_width": 1024, "original_height": 768, "image_rotation": 0,
                                   "value": {"points": [[x%, y%], ...], "polygonlabels": ["counter"],
                                             "closed": true}}]}]}]

Points are percentages (0-100) of the image's width and height, measured from its top-left
corner. Polygons, not the `brushlabels` RLE: the RLE is a bit-packed format defined only by
the label-studio-converter code, while polygons are plain JSON a labeller can drag. Each
4-connected region of the mask becomes one polygon traced along its pixel edges and
simplified (Douglas-Peucker, `tolerance` pixels); holes inside a region are not drawn
(Label Studio's polygons have none), which a counter window does not need.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote

import numpy as np

LABEL = "counter"
FROM_NAME, TO_NAME = "label", "image"
POLYGONS = ("polygonlabels", "polygon")  # a result's types that draw a polygon
# The most pixels a labelled photo can have: Pillow refuses to decode a larger one (a decompression
# bomb, over twice its MAX_IMAGE_PIXELS), and a mask that size would take gigabytes.
MAX_PIXELS = 178_956_970
# The labelling configuration the import file matches (Settings > Labeling Interface > Code).
CONFIG_XML = f"""<View>
  <Image name="{TO_NAME}" value="$image" zoom="true"/>
  <PolygonLabels name="{FROM_NAME}" toName="{TO_NAME}" strokeWidth="2" opacity="0.3">
    <Label value="{LABEL}" background="#ff00ff"/>
  </PolygonLabels>
</View>
"""

Point = tuple[float, float]
# Edge directions, clockwise around the foreground with y pointing down: east, south, west, north.
_STEP = {(1, 0): 0, (0, 1): 1, (-1, 0): 2, (0, -1): 3}


def _boundary_edges(mask: np.ndarray) -> dict[tuple[int, int], list[tuple[int, int]]]:
    """Pixel-edge segments between foreground and background, as start corner -> end corners."""
    padded = np.pad(mask.astype(bool), 1)
    inner = padded[1:-1, 1:-1]
    outgoing: dict[tuple[int, int], list[tuple[int, int]]] = {}
    sides = (
        (~padded[:-2, 1:-1], (0, 0), (1, 0)),  # top side, heading east
        (~padded[1:-1, 2:], (1, 0), (1, 1)),  # right side, heading south
        (~padded[2:, 1:-1], (1, 1), (0, 1)),  # bottom side, heading west
        (~padded[1:-1, :-2], (0, 1), (0, 0)),  # left side, heading north
    )
    for open_side, (sx, sy), (ex, ey) in sides:
        rows, cols = np.nonzero(inner & open_side)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            outgoing.setdefault((c + sx, r + sy), []).append((c + ex, r + ey))
    return outgoing


def _loops(mask: np.ndarray) -> list[list[tuple[int, int]]]:
    """Closed boundary loops in corner coordinates; outer ones clockwise, holes anticlockwise.

    Each edge's successor is the one edge leaving its end corner, or, where two regions touch
    at a corner (two edges leave it), the one that turns right: that keeps diagonal neighbours
    apart, and makes "successor" a one-to-one map, so following it always returns to the start.
    """
    outgoing = _boundary_edges(mask)

    def successor(edge: tuple[tuple[int, int], tuple[int, int]]) -> tuple[tuple[int, int], tuple[int, int]]:
        (ax, ay), corner = edge
        ends = outgoing[corner]
        if len(ends) == 1:
            return corner, ends[0]
        heading = _STEP[(corner[0] - ax, corner[1] - ay)]
        for end in ends:
            if (_STEP[(end[0] - corner[0], end[1] - corner[1])] - heading) % 4 == 1:
                return corner, end
        raise AssertionError("a corner where two regions touch always has a right turn")

    used: set[tuple[tuple[int, int], tuple[int, int]]] = set()
    loops = []
    for corner in sorted(outgoing):
        for end in outgoing[corner]:
            first = (corner, end)
            if first in used:
                continue
            loop, edge = [], first
            while True:
                used.add(edge)
                loop.append(edge[0])
                edge = successor(edge)
                if edge == first:
                    break
            loops.append(loop)
    return loops


def _area(points: Sequence[Point]) -> float:
    """Signed area (shoelace); positive for clockwise loops in y-down image coordinates."""
    xs = np.array([p[0] for p in points], dtype=float)
    ys = np.array([p[1] for p in points], dtype=float)
    return float(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1))) / 2


def _simplify(points: list[Point], tolerance: float) -> list[Point]:
    """Douglas-Peucker on an open chain, keeping both ends (with a stack: chains can be long)."""
    if len(points) < 3:
        return points
    pts = np.asarray(points, dtype=float)
    keep = np.zeros(len(pts), dtype=bool)
    keep[[0, -1]] = True
    stack = [(0, len(pts) - 1)]
    while stack:
        i, j = stack.pop()
        if j - i < 2:
            continue
        a, b, inner = pts[i], pts[j], pts[i + 1 : j]
        ab = b - a
        norm = float(np.hypot(ab[0], ab[1]))
        if norm == 0:
            dist = np.hypot(inner[:, 0] - a[0], inner[:, 1] - a[1])
        else:
            dist = np.abs(ab[0] * (inner[:, 1] - a[1]) - ab[1] * (inner[:, 0] - a[0])) / norm
        k = int(np.argmax(dist))
        if dist[k] > tolerance:
            keep[i + 1 + k] = True
            stack += [(i, i + 1 + k), (i + 1 + k, j)]
    return [points[i] for i in np.flatnonzero(keep)]


def mask_to_polygons(
    mask: np.ndarray, tolerance: float | None = None, min_area: float = 4.0
) -> list[list[Point]]:
    """The outer outline of each region of a (H, W) mask, in pixel-corner coordinates.

    `tolerance` (pixels) is how far the simplified outline may stray from the traced one;
    None: 2 % of the region's size (its area's square root), between 0.5 and 1.5 pixels, so a
    small region keeps its exact staircase and a large one loses its hundreds of steps.
    """
    polygons = []
    for loop in _loops(mask):
        points: list[Point] = [(float(x), float(y)) for x, y in loop]
        area = _area(points)
        if area < min_area:  # a hole (negative) or a speck
            continue
        tol = tolerance if tolerance is not None else min(1.5, max(0.5, 0.02 * area**0.5))
        # Split the closed loop at its farthest point from the start, simplify both halves.
        far = int(np.argmax([np.hypot(x - points[0][0], y - points[0][1]) for x, y in points]))
        chain = [*points, points[0]]
        simple = _simplify(chain[: far + 1], tol)[:-1] + _simplify(chain[far:], tol)[:-1]
        if len(simple) >= 3:
            polygons.append(simple)
    return polygons


def polygons_to_mask(polygons: Sequence[Sequence[Point]], height: int, width: int) -> np.ndarray:
    """Fill polygons (pixel-corner coordinates): a pixel is inside when its centre is (even-odd)."""
    mask = np.zeros((height, width), dtype=bool)
    for polygon in polygons:
        pts = np.asarray(polygon, dtype=float)
        x0, y0 = np.clip(np.floor(pts.min(axis=0)).astype(int), 0, None)
        x1 = min(width, int(np.ceil(pts[:, 0].max())))
        y1 = min(height, int(np.ceil(pts[:, 1].max())))
        if x1 <= x0 or y1 <= y0:
            continue
        cx = np.arange(x0, x1) + 0.5
        cy = (np.arange(y0, y1) + 0.5)[:, None]
        inside = np.zeros((y1 - y0, x1 - x0), dtype=bool)
        for (ax, ay), (bx, by) in zip(pts, np.roll(pts, -1, axis=0), strict=True):
            if ay == by:
                continue
            crosses = (ay > cy) != (by > cy)
            x_at = ax + (cy - ay) * (bx - ax) / (by - ay)
            inside ^= crosses & (cx < x_at)
        mask[y0:y1, x0:x1] |= inside
    return mask


def prediction(
    mask: np.ndarray, model_version: str, score: float, tolerance: float | None = None
) -> dict[str, Any]:
    """One Label Studio prediction: a `polygonlabels` result per region of the mask."""
    height, width = mask.shape
    result = [
        {
            "id": f"r{i}",
            "type": "polygonlabels",
            "from_name": FROM_NAME,
            "to_name": TO_NAME,
            "original_width": int(width),
            "original_height": int(height),
            "image_rotation": 0,
            "value": {
                "points": [[round(x / width * 100, 4), round(y / height * 100, 4)] for x, y in polygon],
                "polygonlabels": [LABEL],
                "closed": True,
            },
        }
        for i, polygon in enumerate(mask_to_polygons(mask, tolerance), start=1)
    ]
    return {"model_version": model_version, "score": round(float(score), 6), "result": result}


def task(image_url: str, mask: np.ndarray, model_version: str, score: float) -> dict[str, Any]:
    """One task of the import file: the photo's URL and the model's mask as a prediction."""
    return {"data": {"image": image_url}, "predictions": [prediction(mask, model_version, score)]}


def result_mask(result: Sequence[dict[str, Any]]) -> np.ndarray:
    """The mask a prediction's or annotation's `result` list draws (its polygon results filled).

    ValueError, KeyError or TypeError where the result is not what Label Studio writes."""
    polygons, size = [], None
    for item in result:
        if not isinstance(item, dict) or item.get("type") not in POLYGONS:
            continue
        width, height = int(item["original_width"]), int(item["original_height"])
        if width < 1 or height < 1 or width * height > MAX_PIXELS:
            raise ValueError(f"it says the photo is {width}x{height} pixels")
        points = [(float(x), float(y)) for x, y in item["value"]["points"]]
        if not np.isfinite(points).all():
            raise ValueError("a point of its polygon is not a number")
        size = (height, width)
        polygons.append([(x / 100 * width, y / 100 * height) for x, y in points])
    if size is None:
        raise ValueError("the result holds no polygon, so it does not say the image's size")
    return polygons_to_mask(polygons, *size)


def labelled_masks(export: Any) -> tuple[list[tuple[str, str, np.ndarray]], list[tuple[str, str]]]:
    """(name, image URL, mask) of each task of a Label Studio JSON export, and (name, why) of those left out.

    A task's mask is its last annotation that was not cancelled, its polygons filled; a task
    whose annotation holds no polygon (no counter window in the photo) is left out: a pair
    needs a window to learn from, and so is one that is not as Label Studio writes tasks.
    `name` is the task's `data.name` (what `wms data suggest` wrote), else the file name in
    `data.image`.
    """
    if not isinstance(export, list):
        raise ValueError("a Label Studio JSON export is a list of tasks")
    masks, left_out = [], []
    for task in export:
        data = task.get("data") if isinstance(task, dict) else None
        if not isinstance(data, dict):
            left_out.append(("?", "not a Label Studio task (an object with data and annotations)"))
            continue
        url = str(data.get("image", ""))
        name = str(data.get("name") or unquote(url.rsplit("/", 1)[-1].rsplit("=", 1)[-1].rsplit(".", 1)[0]))
        annotations = task.get("annotations", [])
        if not isinstance(annotations, list) or not all(isinstance(a, dict) for a in annotations):
            left_out.append((name or "?", "its annotations are not a list of Label Studio annotations"))
            continue
        done = [a for a in annotations if not a.get("was_cancelled")] if data else []
        if not done:
            left_out.append((name or "?", "not labelled"))
            continue
        result = done[-1].get("result", [])
        if not isinstance(result, list):
            left_out.append((name, "its annotation's result is not a list"))
            continue
        if not any(isinstance(item, dict) and item.get("type") in POLYGONS for item in result):
            left_out.append((name, "no counter window drawn"))
            continue
        try:
            masks.append((name, url, result_mask(result)))
        except (ValueError, KeyError, TypeError, OverflowError) as exc:
            left_out.append((name, f"no usable polygon ({exc})"))
    return masks, left_out
