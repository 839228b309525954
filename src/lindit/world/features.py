"""A small CNN that reads shapes-world images, whose penultimate features are the world's FID space.

Inception cannot be downloaded here, and would not know this world anyway. ``WorldClassifier`` predicts,
for each of the 9 layout cells, whether it is empty or which shape of which colour it holds; its
penultimate layer (a 16-d code per cell, 144-d in all) therefore encodes exactly the attributes a generator
must get right, and FID on it (``lindit.world.fid``) compares distributions of those. Images of any size
are resized to 36x36 inside.

The trained weights ship in ``assets/classifier.safetensors`` with ``assets/classifier.json`` recording
the training settings and held-out accuracy; retrain deterministically on the CPU (about 90 s on 2 idle cores) with

    lindit world features --train --out src/lindit/world/assets/classifier.safetensors
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .assets import ASSETS, load_asset, save_asset
from .grammar import COLOURS, POSITIONS, SHAPES, WorldObject
from .shapes import ShapesDataset, render_scene

__all__ = [
    "CELL_CLASSES",
    "TrainSettings",
    "WorldClassifier",
    "cell_targets",
    "evaluate",
    "heldout_accuracy",
    "train_classifier",
    "write_assets",
]

INPUT_SIZE = 36  # 12 px per layout cell
CELL_CLASSES = 1 + len(SHAPES) * len(COLOURS)  # 0: empty cell
ASSET = ASSETS / "classifier.safetensors"
COMMAND = "lindit world features --train --out src/lindit/world/assets/classifier.safetensors"


def cell_targets(label: list[WorldObject]) -> torch.Tensor:
    """Class of each of the 9 cells of a scene, row-major: 0 empty, else 1 + shape * colours + colour. (9,)"""
    targets = torch.zeros(len(POSITIONS), dtype=torch.long)
    for obj in label:
        shape, colour = SHAPES.index(obj.shape), list(COLOURS).index(obj.colour)
        targets[POSITIONS.index(obj.position)] = 1 + shape * len(COLOURS) + colour
    return targets


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    # GroupNorm (batch-independent, so features of an image do not depend on its batch) is what gets
    # training past the plateau where colours are learnt and shapes not: loss 0.01 vs 0.42 after 600 steps.
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(4, cout), nn.ReLU())


class WorldClassifier(nn.Module):
    """Images (B, 3, H, W) in [-1, 1] -> per-cell logits (B, 9, CELL_CLASSES); ``features`` -> (B, 9 * cell_dim).

    A fully convolutional body maps the image, resized to 36x36, to a 9x9 grid (3x3 per layout cell); one
    linear layer shared by all cells turns each cell's 3x3 block into a ``cell_dim`` ReLU code (the features,
    concatenated in row-major cell order), and one shared linear head classifies each code. Sharing across
    cells lets every image teach the head nine times, which is what makes CPU training take minutes.
    """

    def __init__(self, width: int = 64, cell_dim: int = 16):
        super().__init__()
        self.config = {"width": width, "cell_dim": cell_dim}
        self.num_features = len(POSITIONS) * cell_dim  # read by torchmetrics' FID
        self.body = nn.Sequential(
            _conv(3, width // 4), _conv(width // 4, width // 2, 2), _conv(width // 2, width // 2),
            _conv(width // 2, width, 2), _conv(width, width),
        )  # fmt: skip
        self.embed = nn.Linear(width * 9, cell_dim)
        self.head = nn.Linear(cell_dim, CELL_CLASSES)

    def cell_codes(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1], any H and W -> per-cell codes (B, 9, cell_dim)."""
        if images.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            images = F.interpolate(images, (INPUT_SIZE, INPUT_SIZE), mode="bilinear", antialias=True)
        x = self.body(images)  # (B, C, 9, 9)
        x = x.unflatten(2, (3, 3)).unflatten(4, (3, 3))  # (B, C, row, 3, col, 3)
        x = x.permute(0, 2, 4, 1, 3, 5).flatten(3).flatten(1, 2)  # (B, 9 cells, C * 9)
        return F.relu(self.embed(x))  # (B, 9, cell_dim)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] -> penultimate features (B, num_features)."""
        return self.cell_codes(images).flatten(1)  # (B, 9 * cell_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] -> logits (B, 9, CELL_CLASSES)."""
        return self.head(self.cell_codes(images))

    @classmethod
    def builtin(cls, path: str | Path = ASSET) -> WorldClassifier:
        """The shipped classifier (or one written by ``lindit world features --train``), eval mode."""
        state, record = load_asset(path)
        model = cls(**record["config"])
        model.load_state_dict(state)
        return model.eval().requires_grad_(False)


@dataclasses.dataclass
class TrainSettings:
    """Everything that determines a trained classifier (recorded in its JSON)."""

    seed: int = 0  # model initialisation
    data_seed: int = 100  # ShapesDataset seed of the training stream; step s uses samples s*B .. (s+1)*B - 1
    steps: int = 1200
    batch_size: int = 32
    lr: float = 3e-3
    warmup: int = 100
    max_objects: int = 3
    # One size per step, drawn from these by the step's own generator: robust to any resolution and aspect.
    sizes: tuple = (
        (24, 24), (32, 32), (32, 32), (40, 40), (48, 48), (64, 64), (32, 48), (48, 32), (48, 64), (64, 48),
    )  # fmt: skip
    heldout_seed: int = 200
    heldout_n: int = 1000
    heldout_sizes: tuple = ((32, 32), (64, 48))


def _batch(settings: TrainSettings, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Training batch of a step: images (B, 3, H, W) at the step's size, targets (B, 9)."""
    sizes = settings.sizes
    size = tuple(sizes[np.random.default_rng([settings.data_seed, step]).integers(len(sizes))])
    data = ShapesDataset((step + 1) * settings.batch_size, settings.data_seed, size, settings.max_objects)
    scenes = [data.scene(i) for i in range(step * settings.batch_size, (step + 1) * settings.batch_size)]
    images = torch.stack([render_scene(scene, size) for scene in scenes])
    targets = torch.stack([cell_targets([placed.obj for placed in scene]) for scene in scenes])
    return images, targets


def _learning_rate(settings: TrainSettings, step: int) -> float:
    """Linear warmup then cosine decay to zero."""
    if step < settings.warmup:
        return settings.lr * (step + 1) / settings.warmup
    progress = (step - settings.warmup) / max(1, settings.steps - settings.warmup)
    return settings.lr * 0.5 * (1 + math.cos(math.pi * progress))


def train_classifier(settings: TrainSettings, log_every: int = 0) -> tuple[WorldClassifier, list[float]]:
    """Train a WorldClassifier from scratch; return it (eval mode) and the loss of every step."""
    with torch.random.fork_rng():
        torch.manual_seed(settings.seed)
        model = WorldClassifier()
    optimiser = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=0.0)
    losses = []
    for step in range(settings.steps):
        images, targets = _batch(settings, step)  # (B, 3, H, W), (B, 9)
        for group in optimiser.param_groups:
            group["lr"] = _learning_rate(settings, step)
        loss = F.cross_entropy(model(images).flatten(0, 1), targets.flatten())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
        if log_every and (step + 1) % log_every == 0:
            print(f"step {step + 1}/{settings.steps} loss {np.mean(losses[-log_every:]):.4f}", flush=True)
    return model.eval(), losses


@torch.no_grad()
def evaluate(model: WorldClassifier, data: ShapesDataset, batch_size: int = 250) -> dict[str, float]:
    """Accuracy on ``data``: of cells ("cell_accuracy") and of scenes with all 9 cells right ("scene_accuracy")."""
    correct = []
    for start in range(0, len(data), batch_size):
        indices = range(start, min(start + batch_size, len(data)))
        images = torch.stack([data[i][0] for i in indices])  # (b, 3, H, W)
        targets = torch.stack([cell_targets(data.label(i)) for i in indices])  # (b, 9)
        correct.append(model(images).argmax(-1) == targets)  # (b, 9)
    correct = torch.cat(correct)  # (N, 9)
    return {
        "cell_accuracy": correct.float().mean().item(),
        "scene_accuracy": correct.all(1).float().mean().item(),
    }


def heldout_accuracy(model: WorldClassifier, settings: TrainSettings) -> dict[str, dict[str, float]]:
    """``evaluate`` on the held-out stream of ``settings`` at each of its held-out sizes, keyed "HxW"."""
    results = {}
    for height, width in settings.heldout_sizes:
        data = ShapesDataset(settings.heldout_n, settings.heldout_seed, (height, width), settings.max_objects)
        results[f"{height}x{width}"] = evaluate(model, data)
    return results


def write_assets(path: str | Path, settings: TrainSettings) -> Path:
    """Train, evaluate on held-out data and write the weights to ``path`` and the record beside them."""
    start = time.time()
    model, losses = train_classifier(settings, log_every=100)
    record = {
        "command": COMMAND,
        "settings": dataclasses.asdict(settings),
        "train_samples": settings.steps * settings.batch_size,  # each seen once: samples 0 .. steps * B - 1
        "config": model.config,
        "parameters": sum(p.numel() for p in model.parameters()),
        "final_loss": float(np.mean(losses[-100:])),
        "train_seconds": round(time.time() - start, 1),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "heldout": heldout_accuracy(model, settings),
    }
    print(record["heldout"])
    return save_asset(path, model.state_dict(), record)


def main(argv: list[str] | None = None) -> int:
    """``python -m lindit.world.features ARGS``, kept for old scripts: runs ``lindit world features ARGS``."""
    from ..cli import forward

    return forward(["world", "features"], argv)


if __name__ == "__main__":
    raise SystemExit(main())
