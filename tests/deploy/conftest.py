"""Deployment tests: tiny real diffusers models (tests/tiny_models.py), offline."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/tiny_models.py, tiny_pipelines.py

pytest.importorskip("torchao", reason="the deploy extra is not installed")
pytest.importorskip("onnxruntime", reason="the deploy extra is not installed")


def leftovers(folder: Path) -> list[str]:
    """Temporary files or folders an atomic write would leave behind on failure (".name.xxxx")."""
    return sorted(p.name for p in Path(folder).iterdir() if p.name.startswith("."))
