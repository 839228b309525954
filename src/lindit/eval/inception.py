"""The FID Inception-v3 network, loaded from a local weights file: the feature extractor of real FID.

This is the network of torch-fidelity's ``FeatureExtractorInceptionV3`` (the default of torchmetrics'
``FrechetInceptionDistance``; Apache-2.0), with the same parameter names, so its published weights file
(``weights-inception-2015-12-05-6726825d.pth``) loads unchanged. lindit carries its own copy because
torch-fidelity imports torchvision at import time, and PyPI's torchvision does not load against the CPU build
of torch; with torch-fidelity installed but no working torchvision, ``import torchmetrics`` itself fails.

Inputs follow torchmetrics' defaults: images quantised to uint8, resized to 299x299 by bilinear
interpolation with antialiasing, then scaled to [-1, 1]. Features are the 2048 pooled activations.

    fid = FrechetInceptionDistance(feature=InceptionFeatures.from_file("inception.safetensors"), normalize=True)
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

INPUT_SIZE = 299
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt")

# TensorFlow's average pool ignores the zero padding; Mixed_7c's pool branch is a max pool in the TF graph.
_POOLS = {
    "avg": lambda x: F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False),
    "max": lambda x: F.max_pool2d(x, kernel_size=3, stride=1, padding=1),
    "max/2": lambda x: F.max_pool2d(x, kernel_size=3, stride=2),
}


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 1e-3, TF's) -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel, stride: int = 1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class Mixed(nn.Module):
    """One Inception block: parallel branches concatenated on channels.

    convs: name -> BasicConv2d arguments (the names are the weights file's). branches: each a list of steps,
    a step being a conv name, a pool name from ``_POOLS``, or a tuple of conv names applied in parallel to
    the same input and concatenated (the split 1x3 / 3x1 convs of the E blocks).
    """

    def __init__(self, convs: dict[str, tuple], branches: list[list]):
        super().__init__()
        for name, conv_args in convs.items():
            self.add_module(name, BasicConv2d(*conv_args))
        self.branches = branches

    def _step(self, x: torch.Tensor, step) -> torch.Tensor:
        if isinstance(step, tuple):
            return torch.cat([getattr(self, name)(x) for name in step], 1)
        return _POOLS[step](x) if step in _POOLS else getattr(self, step)(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = []
        for branch in self.branches:
            y = x
            for step in branch:
                y = self._step(y, step)
            outputs.append(y)
        return torch.cat(outputs, 1)


def _mixed_a(cin: int, pool_features: int) -> Mixed:
    return Mixed({"branch1x1": (cin, 64, 1), "branch5x5_1": (cin, 48, 1), "branch5x5_2": (48, 64, 5, 1, 2),
                  "branch3x3dbl_1": (cin, 64, 1), "branch3x3dbl_2": (64, 96, 3, 1, 1),
                  "branch3x3dbl_3": (96, 96, 3, 1, 1), "branch_pool": (cin, pool_features, 1)},
                 [["branch1x1"], ["branch5x5_1", "branch5x5_2"],
                  ["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"], ["avg", "branch_pool"]])


def _mixed_b(cin: int) -> Mixed:
    return Mixed({"branch3x3": (cin, 384, 3, 2), "branch3x3dbl_1": (cin, 64, 1),
                  "branch3x3dbl_2": (64, 96, 3, 1, 1), "branch3x3dbl_3": (96, 96, 3, 2)},
                 [["branch3x3"], ["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"], ["max/2"]])


def _mixed_c(cin: int, c7: int) -> Mixed:
    row, col = ((1, 7), 1, (0, 3)), ((7, 1), 1, (3, 0))
    return Mixed({"branch1x1": (cin, 192, 1), "branch7x7_1": (cin, c7, 1), "branch7x7_2": (c7, c7, *row),
                  "branch7x7_3": (c7, 192, *col), "branch7x7dbl_1": (cin, c7, 1), "branch7x7dbl_2": (c7, c7, *col),
                  "branch7x7dbl_3": (c7, c7, *row), "branch7x7dbl_4": (c7, c7, *col),
                  "branch7x7dbl_5": (c7, 192, *row), "branch_pool": (cin, 192, 1)},
                 [["branch1x1"], ["branch7x7_1", "branch7x7_2", "branch7x7_3"],
                  [f"branch7x7dbl_{i}" for i in range(1, 6)], ["avg", "branch_pool"]])


def _mixed_d(cin: int) -> Mixed:
    return Mixed({"branch3x3_1": (cin, 192, 1), "branch3x3_2": (192, 320, 3, 2), "branch7x7x3_1": (cin, 192, 1),
                  "branch7x7x3_2": (192, 192, (1, 7), 1, (0, 3)), "branch7x7x3_3": (192, 192, (7, 1), 1, (3, 0)),
                  "branch7x7x3_4": (192, 192, 3, 2)},
                 [["branch3x3_1", "branch3x3_2"], [f"branch7x7x3_{i}" for i in range(1, 5)], ["max/2"]])


def _mixed_e(cin: int, pool: str) -> Mixed:
    row, col = ((1, 3), 1, (0, 1)), ((3, 1), 1, (1, 0))
    return Mixed({"branch1x1": (cin, 320, 1), "branch3x3_1": (cin, 384, 1), "branch3x3_2a": (384, 384, *row),
                  "branch3x3_2b": (384, 384, *col), "branch3x3dbl_1": (cin, 448, 1),
                  "branch3x3dbl_2": (448, 384, 3, 1, 1), "branch3x3dbl_3a": (384, 384, *row),
                  "branch3x3dbl_3b": (384, 384, *col), "branch_pool": (cin, 192, 1)},
                 [["branch1x1"], ["branch3x3_1", ("branch3x3_2a", "branch3x3_2b")],
                  ["branch3x3dbl_1", "branch3x3dbl_2", ("branch3x3dbl_3a", "branch3x3dbl_3b")], [pool, "branch_pool"]])


class InceptionFeatures(nn.Module):
    """FID Inception-v3 for torchmetrics: images (B, 3, H, W) float in [0, 1] -> features (B, 2048).

    Always in eval mode and frozen. Build it with ``from_file``; the constructor alone gives random weights.
    """

    num_features = 2048

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = _mixed_a(192, 32), _mixed_a(256, 64), _mixed_a(288, 64)
        self.Mixed_6a = _mixed_b(288)
        self.Mixed_6b, self.Mixed_6c = _mixed_c(768, 128), _mixed_c(768, 160)
        self.Mixed_6d, self.Mixed_6e = _mixed_c(768, 160), _mixed_c(768, 192)
        self.Mixed_7a, self.Mixed_7b, self.Mixed_7c = _mixed_d(768), _mixed_e(1280, "avg"), _mixed_e(2048, "max")
        self.fc = nn.Linear(2048, 1008)  # the classifier head: unused by FID, but part of the weights file
        self.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> InceptionFeatures:
        return super().train(False)  # BatchNorm must keep its running statistics

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # (B, 3, H, W) on the uint8 grid, as torchmetrics does; rounded, so images that came from uint8 files
        # keep their exact values (truncation would turn some k / 255 * 255 into k - 1)
        x = (images.float() * 255).round().clamp(0, 255)
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=True)
        x = (x - 128) / 128  # (B, 3, 299, 299) in [-1, 1]
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # (B, 64, 147, 147)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(_POOLS["max/2"](x)))  # (B, 192, 71, 71)
        x = _POOLS["max/2"](x)  # (B, 192, 35, 35)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)  # (B, 2048, 8, 8) after 7c
        return x.mean((2, 3))  # (B, 2048)

    @classmethod
    def from_file(cls, path: str | Path) -> InceptionFeatures:
        """The network with the weights at ``path`` (.safetensors, or torch-fidelity's .pth read as plain
        tensors with ``weights_only=True``, which runs no code from the file)."""
        model, state = cls(), read_weights(path)
        expected = model.state_dict()
        # num_batches_tracked is a training counter, not a weight: files may leave it out
        missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
        unexpected = [k for k in state if k not in expected]
        misshapen = [f"{k} {tuple(v.shape)}" for k, v in state.items()
                     if k in expected and v.shape != expected[k].shape]
        if missing or unexpected or misshapen:
            raise ValueError(f"{path} is not an FID Inception-v3 weights file: missing {_few(missing)}, "
                             f"unexpected {_few(unexpected)}, wrong shape {_few(misshapen)}")
        model.load_state_dict(state, strict=False)
        return model.eval()


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a local .safetensors or .pth/.pt file; clear errors for a missing or unknown file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Inception weights file {path} does not exist (it cannot be downloaded here; "
                                "see docs/EVAL.md)")
    if path.suffix not in WEIGHT_SUFFIXES:
        raise ValueError(f"Inception weights {path}: unknown file type {path.suffix!r}; "
                         f"valid: {', '.join(WEIGHT_SUFFIXES)}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict of tensors")
    return state


def _few(keys: list[str], n: int = 3) -> str:
    return "none" if not keys else ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")
