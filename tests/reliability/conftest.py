"""Fixtures of the reliability tests (docs/RELIABILITY.md): a tiny saved student, recipes, a run folder."""

import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/tiny_models.py
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "training"))  # training_helpers.py

from training_helpers import tiny_dict  # noqa: E402


@pytest.fixture(scope="session")
def student(tmp_path_factory):
    """A converted (EDiT) student of the built-in PixArt-style teacher, saved with lindit.save."""
    import lindit
    from lindit.models import load_model

    folder = tmp_path_factory.mktemp("student") / "pixart-edit"
    lindit.save(lindit.convert(load_model("builtin:pixart"), "edit"), folder)
    return folder


def write_recipe(path: Path, **changes) -> Path:
    """A tiny pixart distillation recipe (tests/training) as YAML, with top-level sections replaced."""
    data = tiny_dict("pixart", "edit", steps=4)
    data.update(changes)
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def recipe(tmp_path):
    return write_recipe(tmp_path / "recipe.yaml")
