"""Finding a teacher: a diffusers model folder, a pipeline folder, or a hub id (downloaded by diffusers)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from .families import FAMILIES


def load_teacher(path_or_id: str, subfolder: str | None = None, **kwargs) -> nn.Module:
    """Load a supported diffusers transformer with ``from_pretrained``.

    A pipeline folder (one with ``model_index.json``) is read from its ``transformer`` subfolder. A hub id
    is fetched by diffusers through ``lindit.hub.hub_access`` (bounded in time, one-line errors; the cache
    alone with ``HF_HUB_OFFLINE=1``); a local folder works offline.
    """
    from diffusers import AutoModel

    from ...hub import hub_access, is_hub_id

    local = Path(path_or_id)
    if subfolder is None and (local / "model_index.json").is_file():
        subfolder = "transformer"
    if local.exists():
        if not _has_config(local, subfolder):
            raise FileNotFoundError(f"{local} has no diffusers config.json{f' in {subfolder}/' if subfolder else ''}")
        model = _from_folder(AutoModel, path_or_id, subfolder, **kwargs)
    elif is_hub_id(path_or_id):
        with hub_access(path_or_id, "teacher", "config.json", subfolder):
            model = AutoModel.from_pretrained(path_or_id, subfolder=subfolder, **kwargs)
    else:
        raise FileNotFoundError(f"no model folder {path_or_id!r}, and it is not a hub id (owner/name)")
    supported = tuple(f.model_class for f in FAMILIES.values())
    if not isinstance(model, supported):
        names = ", ".join(c.__name__ for c in supported)
        raise ValueError(f"{path_or_id} holds a {type(model).__name__}; lindit converts {names}")
    return model


def _from_folder(cls, folder: str, subfolder: str | None, **kwargs) -> nn.Module:
    """``from_pretrained`` of a local folder (safetensors only: nothing is unpickled); a folder without
    readable weights is one clear error."""
    where = Path(folder) / subfolder if subfolder else Path(folder)
    if not any(where.glob("*.safetensors")):
        raise FileNotFoundError(f"{where} has a config.json but no weights (*.safetensors); lindit reads "
                                "safetensors only (diffusers' save_pretrained writes them by default)")
    try:
        return cls.from_pretrained(folder, subfolder=subfolder, local_files_only=True, use_safetensors=True, **kwargs)
    except (OSError, ValueError, RuntimeError) as err:  # diffusers: missing or truncated weights, bad config
        reason = " ".join(str(err).split())[:300]
        raise ValueError(f"{where} is not a loadable diffusers model: {reason}") from None


def _has_config(folder: Path, subfolder: str | None) -> bool:
    return ((folder / subfolder) if subfolder else folder).joinpath("config.json").is_file()
