import json

import numpy as np
import pytest
import torch

from lindit.world.features import (
    ASSET,
    CELL_CLASSES,
    COMMAND,
    TrainSettings,
    WorldClassifier,
    cell_targets,
    evaluate,
    train_classifier,
)
from lindit.world.grammar import WorldObject
from lindit.world.shapes import ShapesDataset


def test_cell_targets_encode_shape_and_colour_per_cell():
    label = [WorldObject("circle", "red", "top left"), WorldObject("triangle", "cyan", "bottom right")]
    targets = cell_targets(label)
    assert targets.tolist() == [1, 0, 0, 0, 0, 0, 0, 0, CELL_CLASSES - 1]
    assert CELL_CLASSES == 19


@pytest.mark.parametrize("size", [(16, 16), (32, 32), (48, 64), (128, 128)])
def test_classifier_reads_any_size(size):
    model = WorldClassifier()
    images = torch.rand(2, 3, *size) * 2 - 1
    assert model(images).shape == (2, 9, CELL_CLASSES)
    assert model.features(images).shape == (2, model.num_features) == (2, 144)


def test_a_few_training_steps_reduce_the_loss():
    settings = TrainSettings(steps=30, batch_size=16, warmup=3, sizes=((32, 32),))
    _, losses = train_classifier(settings)
    assert len(losses) == 30 and np.mean(losses[-6:]) < 0.6 * np.mean(losses[:4])


def test_training_is_deterministic():
    settings = TrainSettings(steps=2, batch_size=4, sizes=((24, 24), (32, 48)))
    (first, first_losses), (second, second_losses) = train_classifier(settings), train_classifier(settings)
    assert first_losses == second_losses
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))


@pytest.fixture(scope="module")
def record():
    return json.loads(ASSET.with_suffix(".json").read_text())


def test_shipped_asset_is_small_and_records_how_it_was_made(record):
    assert ASSET.stat().st_size < 2_000_000
    assert record["command"] == COMMAND
    assert {"seed", "data_seed", "steps", "batch_size", "lr", "heldout_seed", "heldout_n"} <= set(record["settings"])
    assert record["settings"]["heldout_seed"] != record["settings"]["data_seed"]
    assert record["train_samples"] == record["settings"]["steps"] * record["settings"]["batch_size"]


def test_shipped_weights_reproduce_the_recorded_heldout_accuracy(record):
    model, settings = WorldClassifier.builtin(), record["settings"]
    for name, recorded in record["heldout"].items():
        height, width = map(int, name.split("x"))
        data = ShapesDataset(settings["heldout_n"], settings["heldout_seed"], (height, width), settings["max_objects"])
        measured = evaluate(model, data)
        assert measured["cell_accuracy"] == pytest.approx(recorded["cell_accuracy"], abs=2e-3)
        assert measured["scene_accuracy"] == pytest.approx(recorded["scene_accuracy"], abs=5e-3)
        assert measured["cell_accuracy"] > 0.95
