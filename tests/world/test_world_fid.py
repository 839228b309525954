import pytest
import torch

from lindit.world.detect import detect
from lindit.world.fid import WorldFeatures, fid_metric, frechet_distance, gaussian_blur, recoloured
from lindit.world.shapes import ShapesDataset

# FID's finite-sample bias falls as 1/N (real vs real: ~300 at N=400, ~120 at N=1000), so the gap to
# corrupted sets is only clear with about a thousand images.
N = 1000


def _images(seed, n=N, size=32):
    data = ShapesDataset(n, seed=seed, size=size)
    return torch.stack([data[i][0] for i in range(n)])


@pytest.fixture(scope="module")
def distance_to_real():
    """FID of a set (N, 3, H, W) in [-1, 1] against N real images, sharing the real statistics."""
    metric = fid_metric(reset_real_features=False)
    metric.update((_images(seed=21) + 1) / 2, real=True)

    def distance(fake):
        metric.reset()
        metric.update((fake + 1) / 2, real=False)
        return float(metric.compute())

    return distance


def test_world_features_follow_the_torchmetrics_contract():
    features = WorldFeatures()
    out = features(torch.rand(3, 3, 40, 40))  # floats in [0, 1], any size
    assert out.shape == (3, features.num_features) and features.num_features == 144
    assert isinstance(fid_metric().inception, WorldFeatures)


def test_fid_is_small_between_real_sets_and_large_for_corrupted_ones(distance_to_real):
    real = _images(seed=22)
    same = distance_to_real(real)
    corrupted = {
        "noise": distance_to_real(torch.rand(N, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1),
        "blur": distance_to_real(gaussian_blur(real, 1.0)),
        "recoloured": distance_to_real(recoloured(ShapesDataset(N, seed=22), "red")),
        "grey": distance_to_real(real.mean(1, keepdim=True).expand(-1, 3, -1, -1)),
    }
    assert 0 <= same < 200
    for name, value in corrupted.items():
        assert value > 4 * same, (name, value, same)
    assert same < distance_to_real(gaussian_blur(real, 0.6)) < corrupted["blur"]  # stronger blur, larger distance


def test_function_uint8_input_and_streaming_metric_agree():
    first, second = _images(seed=31, n=100), _images(seed=32, n=100, size=(48, 40))
    as_uint8 = ((second + 1) * 127.5).round().byte()
    value = frechet_distance(first, second, batch_size=64)
    assert value == pytest.approx(frechet_distance(first, as_uint8), rel=0.02)
    metric = fid_metric()
    metric.update((first + 1) / 2, real=True)
    metric.update((second + 1) / 2, real=False)
    assert float(metric.compute()) == pytest.approx(value, rel=1e-4)
    assert frechet_distance(first, first) == pytest.approx(0, abs=1e-3)


def test_recoloured_and_blurred_sets_are_what_they_claim():
    data = ShapesDataset(5, seed=3)
    for i, image in enumerate(recoloured(data, "red")):
        assert sorted(detect(image)) == sorted(obj._replace(colour="red") for obj in data.label(i))
    images = torch.stack([data[i][0] for i in range(5)])
    assert gaussian_blur(images, 1.0).shape == images.shape
    assert gaussian_blur(images, 1.0).std() < images.std()
    assert torch.allclose(gaussian_blur(images, 1.0).mean(), images.mean(), atol=2e-2)
