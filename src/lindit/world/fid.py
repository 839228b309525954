"""FID of the shapes world: torchmetrics' Frechet distance on the features of the shipped WorldClassifier.

torchmetrics' ``FrechetInceptionDistance`` accepts any ``nn.Module`` as its feature extractor: it reads the
feature count from a ``num_features`` attribute and, with ``normalize=True``, passes float images in [0, 1]
to the module unchanged. ``WorldFeatures`` adapts the classifier to that contract.

    lindit world fid --n 1000   # FID of real images against real, noisy, blurred, recoloured sets
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance

from ..eval.quality import fid_metric_on, frechet_distance_of_batches
from .detect import to_unit
from .features import WorldClassifier
from .shapes import ShapesDataset, render_scene

__all__ = ["WorldFeatures", "fid_metric", "frechet_distance", "gaussian_blur", "sanity"]


class WorldFeatures(nn.Module):
    """Feature extractor for torchmetrics: images (B, 3, H, W) float in [0, 1] -> (B, num_features)."""

    def __init__(self, classifier: WorldClassifier | None = None):
        super().__init__()
        self.classifier = WorldClassifier.builtin() if classifier is None else classifier
        self.num_features = self.classifier.num_features

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(images.float() * 2 - 1)  # the classifier reads [-1, 1]


def fid_metric(classifier: WorldClassifier | None = None, **kwargs) -> FrechetInceptionDistance:
    """A streaming FID metric on world features: ``update(images (B, 3, H, W) in [0, 1], real=...)``, then
    ``compute()``. ``kwargs`` go to torchmetrics, e.g. ``reset_real_features=False`` to keep the real
    statistics across ``reset()`` and score several fake sets against them."""
    return fid_metric_on(WorldFeatures(classifier), **kwargs)


def _to_unit_batch(images: torch.Tensor) -> torch.Tensor:
    return torch.stack([to_unit(image) for image in images])  # (B, 3, H, W) in [0, 1]


def frechet_distance(
    real: torch.Tensor, fake: torch.Tensor, classifier: WorldClassifier | None = None, batch_size: int = 256
) -> float:
    """FID between two image sets (N, 3, H, W) and (M, 3, H', W'), float in [-1, 1] or uint8.

    The sets may differ in size and resolution (the classifier resizes). Like every FID it is biased
    upwards by about c / N for finite sets (two real sets of 32x32 images: c ~ 1.2e5, i.e. ~120 at N=1000,
    ~60 at N=2000), so compare models only at equal N.
    """
    def batches(images):
        return (_to_unit_batch(images[start : start + batch_size]) for start in range(0, len(images), batch_size))

    return frechet_distance_of_batches(batches(real), batches(fake), WorldFeatures(classifier))


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur images (B, 3, H, W) with a 5x5 Gaussian of std ``sigma`` pixels, replicating the border."""
    x = torch.arange(-2, 3, dtype=torch.float32)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = (kernel[:, None] * kernel[None, :]) / kernel.sum() ** 2  # (5, 5)
    padded = F.pad(images, (2, 2, 2, 2), mode="replicate")  # (B, 3, H + 4, W + 4)
    return F.conv2d(padded, kernel.expand(3, 1, 5, 5).contiguous(), groups=3)  # (B, 3, H, W)


def recoloured(data: ShapesDataset, colour: str) -> torch.Tensor:
    """Images (N, 3, H, W) of the scenes of ``data`` with every object in ``colour``: wrong colours only."""
    scenes = [data.scene(i) for i in range(len(data))]
    scenes = [[p._replace(obj=p.obj._replace(colour=colour)) for p in scene] for scene in scenes]
    return torch.stack([render_scene(scene, data.size) for scene in scenes])


def _images(data: ShapesDataset) -> torch.Tensor:
    return torch.stack([data[i][0] for i in range(len(data))])  # (N, 3, H, W)


def _noise(data: ShapesDataset) -> torch.Tensor:
    return torch.rand(len(data), 3, *data.size, generator=torch.Generator().manual_seed(0)) * 2 - 1


# Sanity check of the metric: name -> images (N, 3, H, W) in [-1, 1] made from a real set of the same size.
SANITY_SETS = {
    "real, other seed": _images,
    "uniform noise": _noise,
    "blur sigma=0.6": lambda data: gaussian_blur(_images(data), 0.6),
    "blur sigma=1.0": lambda data: gaussian_blur(_images(data), 1.0),
    "all objects red": lambda data: recoloured(data, "red"),
    "greyscale": lambda data: _images(data).mean(1, keepdim=True).expand(-1, 3, -1, -1),
}


def sanity(n: int = 1000, size: int | tuple[int, int] = 32) -> dict[str, float]:
    """FID of ``n`` real images (seed 0) against each of SANITY_SETS built from ``n`` others (seed 1)."""
    metric = fid_metric(reset_real_features=False)
    metric.update((_images(ShapesDataset(n, 0, size)) + 1) / 2, real=True)
    results = {}
    for name, make in SANITY_SETS.items():
        metric.reset()
        metric.update((make(ShapesDataset(n, 1, size)) + 1) / 2, real=False)
        results[name] = float(metric.compute())
    return results


def main(argv: list[str] | None = None) -> int:
    """``python -m lindit.world.fid ARGS``, kept for old scripts: runs ``lindit world fid ARGS``."""
    from ..cli import forward

    return forward(["world", "fid"], argv)


if __name__ == "__main__":
    raise SystemExit(main())
