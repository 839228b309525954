"""Anti-aliased rendering of shapes-world scenes with numpy.

Geometry lives in units of the smaller side ``m`` of a layout cell (an image of H x W has cells of
H/3 x W/3), so a scene looks the same at every resolution and aspect ratio, and shapes are never stretched.
An object of scale ``s`` has half-extent ``h = s * m / 2`` and sits in its cell at a jittered centre that
keeps it ``MARGIN * m`` inside the cell border: objects in neighbouring cells never touch.

Pixel coverage is the fraction of a ``SUPERSAMPLE`` x ``SUPERSAMPLE`` grid of sub-pixel points inside the
shape; the detector renders its templates with the same functions.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np

from .grammar import BACKGROUND, COLOURS, WorldObject, cell_of

__all__ = ["MARGIN", "SCALE_RANGE", "SHAPE_SPECS", "PlacedObject", "coverage", "placement", "render"]

SCALE_RANGE = (0.55, 0.80)  # object size as a fraction of the smaller cell side
MARGIN = 0.06  # gap to the cell border, fraction of the smaller cell side; >= 1 px from 32 px up
SUPERSAMPLE = 4
_SQUARE = 0.85  # squares' half-side relative to h, so they are about as large as circles


class ShapeSpec(NamedTuple):
    """How to draw a shape of half-extent h, and what the detector needs to fit one."""

    inside: Callable[[np.ndarray, np.ndarray, float], np.ndarray]  # (dx, dy, h) -> bool, offsets from centre
    area: float  # area / h**2
    centroid_dy: float  # (centroid y - box centre y) / h; y points down


def _circle(dx, dy, h):
    return dx * dx + dy * dy <= h * h


def _square(dx, dy, h):
    return (np.abs(dx) <= _SQUARE * h) & (np.abs(dy) <= _SQUARE * h)


def _triangle(dx, dy, h):
    # Apex at the top, base at the bottom: width grows linearly from 0 to 2h going down.
    return (dy <= h) & (np.abs(dx) <= (dy + h) / 2)


SHAPE_SPECS = {
    "circle": ShapeSpec(_circle, math.pi, 0.0),
    "square": ShapeSpec(_square, (2 * _SQUARE) ** 2, 0.0),
    "triangle": ShapeSpec(_triangle, 2.0, 1.0 / 3.0),
}


class PlacedObject(NamedTuple):
    """A WorldObject plus its size-independent jitter: scale in SCALE_RANGE, jx and jy in [-1, 1]."""

    obj: WorldObject
    scale: float
    jx: float
    jy: float


def placement(placed: PlacedObject, height: int, width: int) -> tuple[float, float, float]:
    """Centre (cx, cy) and half-extent h in pixels of a placed object in an image of height x width."""
    cell_h, cell_w = height / 3, width / 3
    m = min(cell_h, cell_w)
    h = placed.scale * m / 2
    row, col = cell_of(placed.obj.position)
    slack_x = cell_w / 2 - h - MARGIN * m  # how far the centre may move and stay MARGIN inside the cell
    slack_y = cell_h / 2 - h - MARGIN * m
    return (col + 0.5) * cell_w + placed.jx * slack_x, (row + 0.5) * cell_h + placed.jy * slack_y, h


def coverage(shape: str, cx: float, cy: float, h: float, height: int, width: int) -> np.ndarray:
    """Fraction of each pixel inside a shape centred at (cx, cy) with half-extent h: (height, width) float.

    Pixel (y, x) spans [x, x+1) x [y, y+1). Only a window around the shape is evaluated.
    """
    out = np.zeros((height, width))
    x0, x1 = max(0, math.floor(cx - h) - 1), min(width, math.ceil(cx + h) + 1)
    y0, y1 = max(0, math.floor(cy - h) - 1), min(height, math.ceil(cy + h) + 1)
    if x0 >= x1 or y0 >= y1:
        return out
    sub = (np.arange(SUPERSAMPLE) + 0.5) / SUPERSAMPLE
    xs = (np.arange(x0, x1)[:, None] + sub).reshape(-1) - cx  # (wx * S,)
    ys = (np.arange(y0, y1)[:, None] + sub).reshape(-1) - cy  # (wy * S,)
    hits = SHAPE_SPECS[shape].inside(xs[None, :], ys[:, None], h)  # (wy * S, wx * S)
    window = hits.reshape(y1 - y0, SUPERSAMPLE, x1 - x0, SUPERSAMPLE).mean(axis=(1, 3))  # (wy, wx)
    out[y0:y1, x0:x1] = window
    return out


def render(scene: list[PlacedObject], height: int, width: int) -> np.ndarray:
    """Image of a scene: (height, width, 3) float64 in [0, 1], objects alpha-blended over the background."""
    image = np.broadcast_to(np.asarray(BACKGROUND), (height, width, 3)).copy()  # (H, W, 3)
    for placed in scene:
        cx, cy, h = placement(placed, height, width)
        alpha = coverage(placed.obj.shape, cx, cy, h, height, width)[..., None]  # (H, W, 1)
        image = image * (1 - alpha) + np.asarray(COLOURS[placed.obj.colour]) * alpha
    return image
