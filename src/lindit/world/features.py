"""A small CNN that reads shapes-world images, whose penultimate features are the world's FID space.

Inception cannot be downloaded here, and would not know this world anyway. ``WorldClassifier`` predicts,
for each of the 9 layout cells, whether it is empty or which shape of which colour it holds; its 128-d
penultimate layer therefore encodes exactly the attributes a generator must get right, and FID on it
(``lindit.world.fid``) compares distributions of those. Images of any size are resized to 32x32 inside.

The trained weights ship in ``assets/classifier.safetensors`` with ``assets/classifier.json`` recording
the training settings and held-out accuracy; retrain deterministically on the CPU (about 3 minutes) with

    python -m lindit.world.features --train --out src/lindit/world/assets/classifier.safetensors
"""

from __future__ import annotations

import argparse
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

__all__ = ["CELL_CLASSES", "TrainSettings", "WorldClassifier", "cell_targets", "evaluate", "train_classifier"]

INPUT_SIZE = 32
CELL_CLASSES = 1 + len(SHAPES) * len(COLOURS)  # 0: empty cell
ASSET = ASSETS / "classifier.safetensors"
COMMAND = "python -m lindit.world.features --train --out src/lindit/world/assets/classifier.safetensors"


def cell_targets(label: list[WorldObject]) -> torch.Tensor:
    """Class of each of the 9 cells of a scene, row-major: 0 empty, else 1 + shape * colours + colour. (9,)"""
    targets = torch.zeros(len(POSITIONS), dtype=torch.long)
    for obj in label:
        shape, colour = SHAPES.index(obj.shape), list(COLOURS).index(obj.colour)
        targets[POSITIONS.index(obj.position)] = 1 + shape * len(COLOURS) + colour
    return targets


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(8, cout), nn.ReLU())


class WorldClassifier(nn.Module):
    """Images (B, 3, H, W) in [-1, 1] -> per-cell logits (B, 9, CELL_CLASSES); ``features`` -> (B, 128).

    Five 3x3 conv layers (32 -> 16 -> 8 px), average-pooled onto the 3x3 layout so each cell keeps its own
    channels, then a 128-d ReLU layer (the features) and a linear head per cell.
    """

    def __init__(self, width: int = 64, num_features: int = 128):
        super().__init__()
        self.config = {"width": width, "num_features": num_features}
        self.num_features = num_features
        self.body = nn.Sequential(
            _conv(3, width // 2), _conv(width // 2, width, 2), _conv(width, width),
            _conv(width, width, 2), _conv(width, width), nn.AdaptiveAvgPool2d(3), nn.Flatten(),
        )  # fmt: skip
        self.embed = nn.Linear(width * len(POSITIONS), num_features)
        self.head = nn.Linear(num_features, len(POSITIONS) * CELL_CLASSES)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1], any H and W -> penultimate features (B, num_features)."""
        if images.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            images = F.interpolate(images, (INPUT_SIZE, INPUT_SIZE), mode="bilinear", antialias=True)
        return F.relu(self.embed(self.body(images)))  # (B, F)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] -> logits (B, 9, CELL_CLASSES)."""
        return self.head(self.features(images)).unflatten(-1, (len(POSITIONS), CELL_CLASSES))

    @classmethod
    def builtin(cls, path: str | Path = ASSET) -> WorldClassifier:
        """The shipped classifier (or one written by ``python -m lindit.world.features --train``), eval mode."""
        state, record = load_asset(path)
        model = cls(**record["config"])
        model.load_state_dict(state)
        return model.eval().requires_grad_(False)


@dataclasses.dataclass
class TrainSettings:
    """Everything that determines a trained classifier (recorded in its JSON)."""

    seed: int = 0  # model initialisation
    data_seed: int = 100  # ShapesDataset seed of the training stream; step s uses samples s*B .. (s+1)*B - 1
    steps: int = 2000
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 100
    max_objects: int = 3
    # One size per step, drawn from these by the step's own generator: robust to any resolution and aspect.
    sizes: tuple = ((24, 24), (32, 32), (32, 32), (40, 40), (48, 48), (64, 64), (32, 48), (48, 32), (48, 64), (64, 48))
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
    """Held-out accuracy: of cells ("cell_accuracy") and of whole scenes, all 9 cells right ("scene_accuracy")."""
    correct = []
    for start in range(0, len(data), batch_size):
        indices = range(start, min(start + batch_size, len(data)))
        images = torch.stack([data[i][0] for i in indices])  # (b, 3, H, W)
        targets = torch.stack([cell_targets(data.label(i)) for i in indices])  # (b, 9)
        correct.append(model(images).argmax(-1) == targets)  # (b, 9)
    correct = torch.cat(correct)  # (N, 9)
    return {"cell_accuracy": correct.float().mean().item(), "scene_accuracy": correct.all(1).float().mean().item()}


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the shapes world's feature classifier.")
    parser.add_argument("--train", action="store_true", help="train from scratch and write the weights")
    parser.add_argument("--out", default=str(ASSET), help="output .safetensors path")
    parser.add_argument("--steps", type=int, default=TrainSettings.steps)
    args = parser.parse_args(argv)
    if not args.train:
        parser.error("nothing to do: pass --train")
    print(f"wrote {write_assets(args.out, TrainSettings(steps=args.steps))}")


if __name__ == "__main__":
    main()
