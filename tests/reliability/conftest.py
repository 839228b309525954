"""Fixtures of the reliability tests (docs/RELIABILITY.md): a tiny saved student, recipes, a run folder."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/tiny_models.py
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "training"))  # training_helpers.py
sys.path.insert(0, str(Path(__file__).resolve().parent))  # reliability_helpers.py

from reliability_helpers import write_recipe  # noqa: E402


@pytest.fixture(scope="session")
def student(tmp_path_factory):
    """A converted (EDiT) student of the built-in PixArt-style teacher, saved with lindit.save."""
    import lindit
    from lindit.models import load_model

    folder = tmp_path_factory.mktemp("student") / "pixart-edit"
    lindit.save(lindit.convert(load_model("builtin:pixart"), "edit"), folder)
    return folder


@pytest.fixture
def recipe(tmp_path):
    return write_recipe(tmp_path / "recipe.yaml")
