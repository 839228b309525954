"""Shared helpers of the trainer tests: tiny real diffusers teachers in pixel space and the shapes world."""

import csv
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/tiny_models.py
sys.path.insert(0, str(Path(__file__).resolve().parent))  # training_helpers.py


@pytest.fixture
def read_metrics():
    def read(out_dir):
        with open(Path(out_dir) / "metrics.csv", newline="") as f:
            return list(csv.DictReader(f))

    return read
