"""Finding a teacher: a diffusers model folder, a pipeline folder, or a hub id (downloaded by diffusers)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from .families import FAMILIES


def load_teacher(path_or_id: str, subfolder: str | None = None, **kwargs) -> nn.Module:
    """Load a supported diffusers transformer with ``from_pretrained``.

    A pipeline folder (one with ``model_index.json``) is read from its ``transformer`` subfolder. A hub id
    is fetched by diffusers (needs network or its cache); a local folder works offline.
    """
    from diffusers import AutoModel

    local = Path(path_or_id)
    if subfolder is None and (local / "model_index.json").is_file():
        subfolder = "transformer"
    if local.exists() and not _has_config(local, subfolder):
        raise FileNotFoundError(f"{local} has no diffusers config.json{f' in {subfolder}/' if subfolder else ''}")
    model = AutoModel.from_pretrained(path_or_id, subfolder=subfolder, **kwargs)
    supported = tuple(f.model_class for f in FAMILIES.values())
    if not isinstance(model, supported):
        names = ", ".join(c.__name__ for c in supported)
        raise ValueError(f"{path_or_id} holds a {type(model).__name__}; lindit converts {names}")
    return model


def _has_config(folder: Path, subfolder: str | None) -> bool:
    return ((folder / subfolder) if subfolder else folder).joinpath("config.json").is_file()
