"""Procedural datasets of the shapes world: coloured shapes at positions, with captions.

Sample ``i`` of a dataset with seed ``s`` is a pure function of (stream, s, i) and the image size: its
random generator is ``numpy.random.default_rng([stream, s, i])``, so samples are random-access, reproducible
across runs and machines, and datasets of different streams (text-to-image, class-conditional, evaluation
prompts) or seeds never share a sample. The scene (objects and their jitter) does not depend on the size:
sample ``i`` at 32x32 and at 64x48 shows the same objects.

    lindit world shapes --grid docs/world-samples.png   # a PNG grid of samples + their captions
"""

from __future__ import annotations


import numpy as np
import torch
from torch.utils.data import Dataset

from .draw import SCALE_RANGE, PlacedObject, render
from .grammar import COLOURS, POSITIONS, SHAPES, WorldObject, caption

__all__ = [
    "ShapesClassDataset",
    "ShapesDataset",
    "collate",
    "evaluation_prompts",
    "image_size",
    "render_scene",
    "sample_scene",
]

# Independent random streams, so that e.g. the evaluation prompts never reuse a training scene's draws.
_STREAMS = {"scenes": 0, "classes": 1, "prompts": 2}
_COLOUR_NAMES = tuple(COLOURS)
MIN_SIZE, MAX_SIZE = 16, 512


def image_size(size: int | tuple[int, int]) -> tuple[int, int]:
    """(height, width) from an int (square) or a pair; both must lie in [MIN_SIZE, MAX_SIZE]."""
    height, width = (size, size) if isinstance(size, int) else size
    if not (MIN_SIZE <= height <= MAX_SIZE and MIN_SIZE <= width <= MAX_SIZE):
        raise ValueError(f"image size must be in [{MIN_SIZE}, {MAX_SIZE}], got {height}x{width}")
    return int(height), int(width)


def _rng(stream: str, seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([_STREAMS[stream], seed, index])


def _place(rng: np.random.Generator, obj: WorldObject) -> PlacedObject:
    jx, jy = rng.uniform(-1.0, 1.0, size=2)
    return PlacedObject(obj, float(rng.uniform(*SCALE_RANGE)), float(jx), float(jy))


def sample_scene(rng: np.random.Generator, max_objects: int = 2) -> list[PlacedObject]:
    """1..max_objects objects with uniform shape, colour and distinct cells, each with random jitter."""
    count = int(rng.integers(1, max_objects + 1))
    cells = rng.choice(len(POSITIONS), size=count, replace=False)
    scene = []
    for cell in cells:
        shape, colour = SHAPES[rng.integers(len(SHAPES))], _COLOUR_NAMES[rng.integers(len(COLOURS))]
        scene.append(_place(rng, WorldObject(shape, colour, POSITIONS[cell])))
    return scene


def render_scene(scene: list[PlacedObject], size: int | tuple[int, int] = 32) -> torch.Tensor:
    """The image of a scene as a float32 tensor (3, H, W) in [-1, 1]."""
    height, width = image_size(size)
    image = torch.from_numpy(render(scene, height, width)).permute(2, 0, 1)  # (3, H, W) in [0, 1]
    return (image * 2 - 1).float()


class ShapesDataset(Dataset):
    """Text-to-image view: item i is (image (3, H, W) in [-1, 1], caption, label list[WorldObject]).

    ``n`` samples of 1..``max_objects`` objects (at most 9, one per cell); ``size`` is an int or (H, W).
    Use ``collate`` as a DataLoader's ``collate_fn`` (labels have different lengths).
    """

    def __init__(self, n: int, seed: int = 0, size: int | tuple[int, int] = 32, max_objects: int = 2):
        if not 1 <= max_objects <= len(POSITIONS):
            raise ValueError(f"max_objects must be in [1, {len(POSITIONS)}], got {max_objects}")
        self.n, self.seed, self.size, self.max_objects = n, seed, image_size(size), max_objects

    def __len__(self) -> int:
        return self.n

    def scene(self, index: int) -> list[PlacedObject]:
        """The placed objects of sample ``index`` (cheap: nothing is drawn)."""
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} samples")
        return sample_scene(_rng("scenes", self.seed, index), self.max_objects)

    def label(self, index: int) -> list[WorldObject]:
        """The objects of sample ``index``, in caption order."""
        return [placed.obj for placed in self.scene(index)]

    def caption(self, index: int) -> str:
        """The caption of sample ``index``."""
        return caption(self.label(index))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str, list[WorldObject]]:
        scene = self.scene(index)
        label = [placed.obj for placed in scene]
        return render_scene(scene, self.size), caption(label), label


def collate(batch: list[tuple[torch.Tensor, str, list[WorldObject]]]):
    """DataLoader collate_fn for ShapesDataset: (images (B, 3, H, W), captions list[str], labels list)."""
    images, captions, labels = zip(*batch)
    return torch.stack(images), list(captions), list(labels)


class ShapesClassDataset(Dataset):
    """Class-conditional view: one object per image; item i is (image (3, H, W) in [-1, 1], class id).

    Class ``shape_index * len(COLOURS) + colour_index`` names a shape and colour ("red circle"); the cell
    is uniform over the 9 positions and is not part of the class.
    """

    num_classes = len(SHAPES) * len(COLOURS)
    class_names = [f"{colour} {shape}" for shape in SHAPES for colour in COLOURS]

    def __init__(self, n: int, seed: int = 0, size: int | tuple[int, int] = 32):
        self.n, self.seed, self.size = n, seed, image_size(size)

    def __len__(self) -> int:
        return self.n

    @staticmethod
    def class_object(class_id: int, position: str = "center") -> WorldObject:
        """The object of class ``class_id`` at ``position``."""
        shape_index, colour_index = divmod(class_id, len(COLOURS))
        return WorldObject(SHAPES[shape_index], _COLOUR_NAMES[colour_index], position)

    def scene(self, index: int) -> tuple[list[PlacedObject], int]:
        """The one-object scene of sample ``index`` and its class id."""
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} samples")
        rng = _rng("classes", self.seed, index)
        class_id = int(rng.integers(self.num_classes))
        obj = self.class_object(class_id, POSITIONS[rng.integers(len(POSITIONS))])
        return [_place(rng, obj)], class_id

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        scene, class_id = self.scene(index)
        return render_scene(scene, self.size), class_id


Prompt = tuple[str, list[WorldObject]]


def evaluation_prompts(n: int = 64, seed: int = 0, max_objects: int = 2) -> list[Prompt]:
    """``n`` distinct held-out (caption, label) pairs for prompt-adherence evaluation.

    Drawn from their own random stream, so they never reuse the draws of any ShapesDataset; the list for a
    smaller ``n`` is a prefix of the list for a larger one. Captions, being from a small grammar, may also
    occur in training data: the hold-out is of samples, not of compositions.
    """
    prompts, seen, index = [], set(), 0
    while len(prompts) < n:
        label = [placed.obj for placed in sample_scene(_rng("prompts", seed, index), max_objects)]
        index += 1
        if caption(label) not in seen:
            seen.add(caption(label))
            prompts.append((caption(label), label))
    return prompts


def save_grid(
    path: str, n: int = 16, seed: int = 0, size: int = 32, zoom: int = 4, columns: int = 8
) -> list[str]:
    """Write a PNG grid of the first ``n`` ShapesDataset samples (zoomed, no smoothing); return captions."""
    from PIL import Image

    data = ShapesDataset(n, seed=seed, size=size)
    images = torch.stack([data[i][0] for i in range(n)])  # (n, 3, H, W)
    images = ((images + 1) * 127.5).round().byte().repeat_interleave(zoom, 2).repeat_interleave(zoom, 3)
    rows = -(-n // columns)
    pad = torch.full((rows * columns - n, *images.shape[1:]), 255, dtype=torch.uint8)
    grid = torch.cat([images, pad]).unflatten(0, (rows, columns))  # (rows, cols, 3, h, w)
    grid = torch.nn.functional.pad(grid, (1, 1, 1, 1), value=255)  # white lines between tiles
    grid = grid.permute(0, 3, 1, 4, 2).flatten(0, 1).flatten(1, 2)  # (rows * h, cols * w, 3)
    Image.fromarray(grid.numpy()).save(path)
    return [data.caption(i) for i in range(n)]


def main(argv: list[str] | None = None) -> int:
    """``python -m lindit.world.shapes ARGS``, kept for old scripts: runs ``lindit world shapes ARGS``."""
    from ..cli import forward

    return forward(["world", "shapes"], argv)


if __name__ == "__main__":
    raise SystemExit(main())
