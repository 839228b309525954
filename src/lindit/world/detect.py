"""Prompt adherence in the spirit of GenEval: read the objects of a shapes-world image back from its pixels.

Classical vision, no learned weights, so the score means the same thing for every model:

1. Colour: every pixel is explained as ``background + alpha * (colour - background)`` for the palette colour
   that leaves the smallest residual; it is foreground if alpha >= 0.5 (the anti-aliasing threshold the
   renderer's half-covered pixels sit on) and the residual is small relative to the colour (so grey or
   off-palette noise is not an object).
2. Objects: 4-connected components of each colour, ignoring specks smaller than a third of the smallest
   object the world draws.
3. Shape: each component's coverage (alpha, including its anti-aliased rim) is compared by soft IoU with a
   circle, a square and a triangle of the same area and centroid, drawn by the world's own renderer; the
   best fit wins if its IoU is at least ``MIN_IOU``, else the shape is "unknown" (a blob is no circle).
4. Position: the 3x3 cell of the component's centroid.

An image matches a label when the detected objects equal the label's objects as a multiset: every prompted
object present with the right shape, colour and cell, and nothing else.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .draw import SCALE_RANGE, SHAPE_SPECS, coverage
from .grammar import BACKGROUND, COLOURS, WorldObject, parse_caption, position_at

__all__ = ["MIN_IOU", "adherence", "classify_pixels", "detect", "matches", "to_unit"]

MIN_IOU = 0.7  # correct fits of rendered shapes score >= 0.94 at 32 px; the runner-up <= 0.88
_MAX_RESIDUAL = 0.5  # residual / (alpha * |colour - background|): about 27 degrees off the colour's direction
_MIN_AREA = 1 / 3  # of the smallest object the renderer draws
_COLOUR_NAMES = tuple(COLOURS)


def to_unit(image: torch.Tensor) -> torch.Tensor:
    """An image as float (3, H, W) in [0, 1]: uint8 in [0, 255] or float in [-1, 1] (the world's range)."""
    if image.dtype == torch.uint8:
        return image.float() / 255
    return ((image.float() + 1) / 2).clamp(0, 1)


def _explain_pixels(image: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Best palette index per pixel or -1, (H, W) int, and every colour's coverage alpha, (K, H, W).

    numpy rather than torch: on images this small, thread-pool overhead would dominate the arithmetic.
    """
    background = np.asarray(BACKGROUND)
    directions = np.asarray(list(COLOURS.values())) - background  # (K, 3)
    pixels = to_unit(image).permute(1, 2, 0).double().numpy() - background  # (H, W, 3)
    alpha = np.maximum(pixels @ directions.T / np.square(directions).sum(-1), 0)  # (H, W, K)
    residual = np.linalg.norm(pixels[..., None, :] - alpha[..., None] * directions, axis=-1)  # (H, W, K)
    best = residual.argmin(-1)[..., None]  # (H, W, 1)
    best_alpha, best_residual = np.take_along_axis(alpha, best, -1), np.take_along_axis(residual, best, -1)
    explained = best_alpha * np.linalg.norm(directions, axis=-1)[best]  # (H, W, 1): length explained
    foreground = (best_alpha >= 0.5) & (best_residual <= _MAX_RESIDUAL * explained)
    return np.where(foreground, best, -1)[..., 0], np.minimum(alpha, 1).transpose(2, 0, 1)


def classify_pixels(image: torch.Tensor) -> torch.Tensor:
    """Palette index of every pixel of an image (3, H, W), or -1 for background: (H, W) long."""
    return torch.from_numpy(_explain_pixels(image)[0]).long()


def _components(masks: np.ndarray) -> np.ndarray:
    """4-connected components of each of K masks (K, H, W) bool -> labels (K, H, W) int, 0 = none.

    Every pixel starts with its own id and repeatedly takes the largest id among its masked neighbours;
    after as many rounds as the longest path inside a component, each component carries a single id.
    """
    _, height, width = masks.shape
    ids = np.arange(1, height * width + 1).reshape(1, height, width) * masks  # (K, H, W)
    while True:
        grown = ids.copy()
        np.maximum(grown[:, 1:], ids[:, :-1], out=grown[:, 1:])
        np.maximum(grown[:, :-1], ids[:, 1:], out=grown[:, :-1])
        np.maximum(grown[:, :, 1:], ids[:, :, :-1], out=grown[:, :, 1:])
        np.maximum(grown[:, :, :-1], ids[:, :, 1:], out=grown[:, :, :-1])
        grown *= masks
        if np.array_equal(grown, ids):
            return ids
        ids = grown


def _soft_mask(mask: np.ndarray, background: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Coverage (H, W) of one component: its colour's alpha on the component and on the background pixels
    bordering it, where its anti-aliased edge lies; zero elsewhere."""
    ring = np.zeros_like(mask)
    ring[1:] |= mask[:-1]
    ring[:-1] |= mask[1:]
    ring[:, 1:] |= mask[:, :-1]
    ring[:, :-1] |= mask[:, 1:]
    return alpha * (mask | (ring & background))


def _fit_shape(soft: np.ndarray, cx: float, cy: float) -> str:
    """Best-fitting shape name for a component's coverage (H, W) with centroid (cx, cy), or "unknown".

    Soft IoU with each shape of the same area and centroid: it uses the sub-pixel information of the
    anti-aliased edges, which thresholding would lose (a small square then looks like a circle).
    """
    height, width = soft.shape
    best, best_iou = "unknown", MIN_IOU
    for name, spec in SHAPE_SPECS.items():
        h = math.sqrt(soft.sum() / spec.area)
        template = coverage(name, cx, cy - spec.centroid_dy * h, h, height, width)  # (H, W)
        iou = np.minimum(soft, template).sum() / np.maximum(soft, template).sum()
        if iou >= best_iou:
            best, best_iou = name, iou
    return best


def _min_area(height: int, width: int) -> float:
    half = SCALE_RANGE[0] * min(height, width) / 3 / 2  # smallest half-extent, pixels
    return _MIN_AREA * min(spec.area for spec in SHAPE_SPECS.values()) * half * half


def detect(image: torch.Tensor) -> list[WorldObject]:
    """The objects visible in an image (3, H, W), float in [-1, 1] or uint8, ordered by colour."""
    _, height, width = image.shape
    colours, alpha = _explain_pixels(image)  # (H, W), (K, H, W)
    present = np.unique(colours[colours >= 0])  # (P,): only these colours need components
    labels = _components(colours[None] == present[:, None, None])  # (P, H, W)
    ys, xs = np.mgrid[0:height, 0:width] + 0.5  # pixel centres
    objects = []
    for k, colour_labels in zip(present, labels):
        for component in np.unique(colour_labels[colour_labels > 0]):
            mask = colour_labels == component  # (H, W)
            if mask.sum() < _min_area(height, width):
                continue
            soft = _soft_mask(mask, colours < 0, alpha[k])  # (H, W)
            cx, cy = (xs * soft).sum() / soft.sum(), (ys * soft).sum() / soft.sum()
            row, col = min(int(cy * 3 / height), 2), min(int(cx * 3 / width), 2)
            objects.append(WorldObject(_fit_shape(soft, cx, cy), _COLOUR_NAMES[k], position_at(row, col)))
    return objects


def matches(image: torch.Tensor, label: list[WorldObject] | str) -> bool:
    """Whether an image (3, H, W) shows exactly the objects of a label (or a caption of the grammar)."""
    label = parse_caption(label) if isinstance(label, str) else label
    return sorted(detect(image)) == sorted(WorldObject(*obj) for obj in label)


def adherence(images: torch.Tensor | list[torch.Tensor], labels: list[list[WorldObject] | str]) -> float:
    """Fraction of images (B, 3, H, W) or a list of (3, H, W) that match their label or caption, in [0, 1]."""
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if len(labels) == 0:
        raise ValueError("adherence of an empty batch is undefined")
    return sum(matches(image, label) for image, label in zip(images, labels)) / len(labels)


def main(argv: list[str] | None = None) -> int:
    """``python -m lindit.world.detect ARGS``, kept for old scripts: runs ``lindit world detect ARGS``."""
    from ..cli import forward

    return forward(["world", "detect"], argv)


if __name__ == "__main__":
    raise SystemExit(main())
