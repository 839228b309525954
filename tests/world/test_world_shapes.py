import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from lindit.world.draw import PlacedObject, placement
from lindit.world.grammar import BACKGROUND, COLOURS, WorldObject, cell_of, parse_caption
from lindit.world.shapes import (
    ShapesClassDataset,
    ShapesDataset,
    collate,
    evaluation_prompts,
    image_size,
    render_scene,
    save_grid,
)


def test_samples_are_pure_functions_of_seed_and_index():
    a, b = ShapesDataset(50, seed=7), ShapesDataset(50, seed=7)
    for i in (31, 0, 49, 5):  # random access, in any order, from a fresh dataset
        image_a, caption_a, label_a = a[i]
        image_b, caption_b, label_b = b[i]
        assert torch.equal(image_a, image_b) and caption_a == caption_b and label_a == label_b
    other = ShapesDataset(50, seed=8)
    assert [a.caption(i) for i in range(50)] != [other.caption(i) for i in range(50)]


def test_images_are_float_in_range_at_any_size():
    for size, shape in ((32, (3, 32, 32)), ((48, 64), (3, 48, 64)), (16, (3, 16, 16)), (128, (3, 128, 128))):
        image, _, _ = ShapesDataset(3, seed=0, size=size)[1]
        assert image.shape == shape and image.dtype == torch.float32
        assert image.min() >= -1 and image.max() <= 1
        assert image.min() < -0.8 and image.max() > 0.7  # dark background, saturated objects


def test_scene_does_not_depend_on_size():
    small, wide = ShapesDataset(40, seed=2, size=32), ShapesDataset(40, seed=2, size=(64, 48))
    assert all(small.label(i) == wide.label(i) for i in range(40))


def test_objects_in_distinct_cells_and_object_count_covers_range():
    data = ShapesDataset(300, seed=0, max_objects=3)
    counts = {len(data.label(i)) for i in range(300)}
    assert counts == {1, 2, 3}
    assert all(len({obj.position for obj in data.label(i)}) == len(data.label(i)) for i in range(300))
    assert {len(ShapesDataset(50, max_objects=1).label(i)) for i in range(50)} == {1}


def test_each_object_is_drawn_inside_its_cell_with_its_colour():
    height, width = 48, 64
    for colour, position in (("red", "top left"), ("cyan", "bottom right"), ("yellow", "center")):
        scene = [PlacedObject(WorldObject("square", colour, position), 0.8, 1.0, -1.0)]  # largest, most jitter
        image = (render_scene(scene, (height, width)) + 1) / 2  # (3, H, W)
        drawn = (image - torch.tensor(BACKGROUND)[:, None, None]).abs().sum(0) > 1e-6  # (H, W)
        rows, cols = drawn.nonzero().T
        row, col = cell_of(position)
        assert rows.min() >= row * height / 3 and rows.max() < (row + 1) * height / 3
        assert cols.min() >= col * width / 3 and cols.max() < (col + 1) * width / 3
        inner = image[:, rows.float().mean().round().long(), cols.float().mean().round().long()]
        assert torch.allclose(inner, torch.tensor(COLOURS[colour]), atol=1e-6)


def test_edges_are_anti_aliased():
    image, _, _ = ShapesDataset(1, seed=0, size=32)[0]
    levels = torch.unique((image.flatten(1) * 1000).round(), dim=1)
    assert levels.shape[1] > 5  # background, object colours and blends between them


def test_jitter_varies_size_and_position():
    data = ShapesDataset(200, seed=0, max_objects=1)
    placed = [data.scene(i)[0] for i in range(200)]
    centre = np.array([placement(p, 48, 64) for p in placed if p.obj.position == "center"])  # (n, 3): cx, cy, h
    assert len(centre) > 5
    spread = centre.max(0) - centre.min(0)  # of cx, cy and h, pixels
    assert (spread > 1.0).all() and spread[0] > spread[1]  # wider cells leave more room to move sideways


def test_collate_batches_with_a_dataloader():
    loader = DataLoader(ShapesDataset(10, size=(32, 48)), batch_size=4, collate_fn=collate)
    images, captions, labels = next(iter(loader))
    assert images.shape == (4, 3, 32, 48) and len(captions) == 4 and len(labels) == 4
    assert [parse_caption(c) for c in captions] == labels


def test_class_dataset_has_one_object_of_its_class():
    data = ShapesClassDataset(100, seed=0, size=32)
    assert data.num_classes == 18 and len(data.class_names) == 18 and data.class_names[0] == "red circle"
    seen = set()
    for i in range(100):
        scene, class_id = data.scene(i)
        image, item_class = data[i]
        obj = scene[0].obj
        assert len(scene) == 1 and item_class == class_id and image.shape == (3, 32, 32)
        assert data.class_names[class_id] == f"{obj.colour} {obj.shape}"
        assert data.class_object(class_id, obj.position) == obj
        seen.add(class_id)
    assert len(seen) > 12
    images, classes = next(iter(DataLoader(data, batch_size=8)))  # default collate works
    assert images.shape == (8, 3, 32, 32) and classes.shape == (8,)


def test_evaluation_prompts_are_distinct_prefix_stable_and_not_training_samples():
    prompts = evaluation_prompts(40)
    assert len({text for text, _ in prompts}) == 40
    assert evaluation_prompts(10) == prompts[:10]
    assert all(parse_caption(text) == label for text, label in prompts)
    train = ShapesDataset(40, seed=0)
    assert [text for text, _ in prompts] != [train.caption(i) for i in range(40)]
    assert evaluation_prompts(10, seed=1) != evaluation_prompts(10, seed=0)


def test_invalid_sizes_and_indices_raise():
    assert image_size(40) == (40, 40) and image_size((20, 30)) == (20, 30)
    with pytest.raises(ValueError):
        image_size(8)
    with pytest.raises(ValueError):
        ShapesDataset(4, max_objects=10)
    with pytest.raises(IndexError):
        ShapesDataset(4)[4]


def test_grid_png(tmp_path):
    captions = save_grid(str(tmp_path / "grid.png"), n=6, size=16, zoom=2, columns=4)
    assert len(captions) == 6 and captions[0] == ShapesDataset(6).caption(0)
    assert Image.open(tmp_path / "grid.png").size == (4 * 34, 2 * 34)
