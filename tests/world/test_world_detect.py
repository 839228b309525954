import random

import pytest
import torch

from lindit.world.detect import adherence, classify_pixels, detect, matches
from lindit.world.draw import PlacedObject
from lindit.world.grammar import BACKGROUND, POSITIONS, WorldObject, caption
from lindit.world.shapes import ShapesDataset, render_scene


def _real(n, size, seed=11):
    data = ShapesDataset(n, seed=seed, size=size)
    return torch.stack([data[i][0] for i in range(n)]), [data.label(i) for i in range(n)]


@pytest.fixture(scope="module")
def real32():
    return _real(300, 32)


@pytest.mark.parametrize("size", [32, (64, 48)])
def test_real_images_score_near_one(size, real32):
    images, labels = real32 if size == 32 else _real(200, size)
    assert adherence(images, labels) >= 0.98


def test_shuffled_labels_score_low(real32):
    images, labels = real32
    shuffled = labels[1:] + labels[:1]
    assert adherence(images, shuffled) <= 0.05


def test_blank_and_noise_images_score_zero(real32):
    _, labels = real32
    blank = torch.tensor(BACKGROUND)[:, None, None].expand(3, 32, 32) * 2 - 1
    assert detect(blank) == [] and (classify_pixels(blank) == -1).all()
    assert adherence(blank.expand(20, 3, 32, 32), labels[:20]) == 0
    noise = torch.rand(20, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert adherence(noise, labels[:20]) == 0


def test_uint8_images_and_caption_strings_are_accepted(real32):
    images, labels = real32
    as_uint8 = ((images[:50] + 1) * 127.5).round().byte()
    assert adherence(as_uint8, [caption(label) for label in labels[:50]]) >= 0.98


def _scene(*objects, scale=0.7):
    return [PlacedObject(obj, scale, 0.3, -0.4) for obj in objects]


@pytest.mark.parametrize("size", [32, (48, 64)])
def test_every_attribute_is_read_from_pixels(size):
    rng = random.Random(0)
    for shape in ("circle", "square", "triangle"):
        for colour in ("red", "green", "blue", "yellow", "magenta", "cyan"):
            obj = WorldObject(shape, colour, rng.choice(POSITIONS))
            assert detect(render_scene(_scene(obj), size)) == [obj]


def test_wrong_attribute_or_extra_object_does_not_match():
    obj = WorldObject("triangle", "red", "top right")
    image = render_scene(_scene(obj, WorldObject("circle", "blue", "bottom left")), 32)
    assert matches(image, [obj, WorldObject("circle", "blue", "bottom left")])
    assert not matches(image, [obj])  # extra object in the image
    assert not matches(image, [obj, WorldObject("square", "blue", "bottom left")])
    assert not matches(image, [obj, WorldObject("circle", "green", "bottom left")])
    assert not matches(image, [obj, WorldObject("circle", "blue", "bottom")])
    assert not matches(image, [obj, WorldObject("circle", "blue", "bottom left"), WorldObject("square", "red", "left")])


def test_full_layout_of_nine_objects_is_recovered():
    data = ShapesDataset(20, seed=4, size=64, max_objects=9)
    nine = [i for i in range(20) if len(data.label(i)) >= 7]
    assert nine and all(matches(data[i][0], data.label(i)) for i in nine)


def test_mild_noise_does_not_change_the_reading(real32):
    images, labels = real32
    noisy = (images[:100] + 0.1 * torch.randn(100, 3, 32, 32, generator=torch.Generator().manual_seed(1))).clamp(-1, 1)
    assert adherence(noisy, labels[:100]) >= 0.97


def test_a_blob_is_not_a_shape():
    image = torch.tensor(BACKGROUND)[:, None, None].repeat(1, 32, 32) * 2 - 1
    image[:, 12:14, 4:28] = torch.tensor([0.92, 0.12, 0.12])[:, None, None] * 2 - 1  # a thin red bar
    assert [obj.shape for obj in detect(image)] == ["unknown"]
