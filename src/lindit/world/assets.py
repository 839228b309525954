"""Files shipped with the shapes world: safetensors weights with a JSON of the settings that made them.

Every asset ``NAME.safetensors`` has a ``NAME.json`` beside it holding the model config, the settings and
the command that regenerate it; loaders read the config from the JSON, so the two always travel together.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

__all__ = ["ASSETS", "load_asset", "save_asset"]

ASSETS = Path(__file__).parent / "assets"


def save_asset(path: str | Path, state: dict[str, torch.Tensor], record: dict) -> Path:
    """Write ``state`` to ``path`` (.safetensors) and ``record`` to the .json beside it; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({name: tensor.detach().contiguous() for name, tensor in state.items()}, str(path))
    path.chmod(0o644)  # safetensors writes owner-only files; assets are meant to be shared
    path.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    return path


def load_asset(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The tensors of a .safetensors asset and the record in the .json beside it."""
    path = Path(path)
    return load_file(str(path)), json.loads(path.with_suffix(".json").read_text())
