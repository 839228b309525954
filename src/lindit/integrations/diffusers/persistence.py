"""``save`` and ``load``: a student folder is a diffusers model folder; nothing is pickled.

``lindit.save(model, dir)`` is ``model.save_pretrained`` written atomically (all files or none): the
diffusers ``config.json`` naming lindit's class (with the conversion in ``lindit_conversion``), the weights
in ``diffusion_pytorch_model.safetensors`` (sharded past ``max_shard_size``) and a model card (README.md).
``lindit.load(path_or_hub_id)`` reads any student folder, local or on the hub, through the class's own
``from_pretrained``, so diffusers' options work (``variant``, ``low_cpu_mem_usage``, ``device_map``, ...).

Two other kinds of folder load too: a quantized student (``lindit.deploy.quantize``; its config records
``lindit_quantized`` and its weights are the integer weights and scales as plain tensors), rebuilt on
the meta device and filled by a strict load; and a folder written by lindit 0.1 (``lindit.json`` +
``lindit_model.safetensors``), whose tensor names are mapped to today's (``legacy.py``).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import huggingface_hub
import torch
from accelerate import init_empty_weights
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ...io import atomic_dir, write_json
from .legacy import LEGACY_PLAN, load_format1
from .model_card import write_model_card
from .students import STUDENTS_BY_NAME, student_class_of

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"


def save(model: nn.Module, directory: str | Path, overwrite: bool = False, **save_pretrained_kwargs) -> Path:
    """Write a student to ``directory`` atomically (all files or none) with ``save_pretrained``; returns the
    path. ``save_pretrained_kwargs`` go to diffusers (``max_shard_size``, ``variant``, ...)."""
    if not getattr(model, "lindit_config", None):
        raise ValueError("save() takes a model returned by lindit.convert or lindit.load")
    directory = Path(directory)
    with atomic_dir(directory, overwrite=overwrite) as tmp:
        if getattr(model, "lindit_quantization", None):
            _save_quantized(model, tmp)
        else:
            model.save_pretrained(tmp, **save_pretrained_kwargs)
        write_model_card(model, tmp, where=str(directory))
    return directory


def _save_quantized(model: nn.Module, folder: Path) -> None:
    from ...deploy.quantize import quantized_state  # integer weights and scales as plain tensors

    config = {**dict(model.config), "_class_name": type(model).__name__,
              "lindit_quantized": model.lindit_quantization}
    write_json(folder / CONFIG_NAME, config)
    save_file(quantized_state(model), str(folder / WEIGHTS_NAME), metadata={"format": "pt"})


def is_lindit_dir(path: str | Path) -> bool:
    """A local folder holding a lindit student (any format)."""
    folder = Path(path)
    if (folder / LEGACY_PLAN).is_file():
        return True
    try:
        return student_class_of(json.loads((folder / CONFIG_NAME).read_text())) is not None
    except (OSError, ValueError):
        return False


def is_hub_student(path: str) -> bool:
    """A hub id (not a local path) whose config (or its pipeline's transformer config) names a student class."""
    from ...hub import is_hub_id

    if not is_hub_id(path):
        return False
    subfolder = _hub_subfolder(path)
    with _hub(path, subfolder):
        return student_class_of(_read_config(path, subfolder, {})) is not None


def load(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
         subfolder: str | None = None, **from_pretrained_kwargs) -> nn.Module:
    """Load a student from a folder or a hub id; returns it in eval mode on ``device`` (and ``dtype``).

    A pipeline folder or repository is read from its ``transformer`` subfolder. ``from_pretrained_kwargs``
    go to diffusers (``variant``, ``revision``, ``cache_dir``, ``local_files_only``, ``low_cpu_mem_usage``, ...);
    diffusers' ``torch_dtype`` is taken as ``dtype``. Loading is strict: a missing or unused tensor is an error,
    so there is no ``output_loading_info`` (the student class's ``from_pretrained`` gives diffusers' report).
    """
    if from_pretrained_kwargs.pop("output_loading_info", False):
        raise ValueError("lindit.load is strict (a missing or unused tensor is an error) and takes no "
                         "output_loading_info; the student class's from_pretrained reports them instead")
    dtype = from_pretrained_kwargs.pop("torch_dtype", dtype)
    local = Path(path)
    if subfolder is None and (local / "model_index.json").is_file():
        subfolder = "transformer"
    folder = local / subfolder if subfolder else local
    if (folder / LEGACY_PLAN).is_file():
        return load_format1(folder, device, dtype)
    if not local.exists() and huggingface_hub.constants.HF_HUB_OFFLINE:  # diffusers 0.42 would still ask the
        from_pretrained_kwargs.setdefault("local_files_only", True)  # hub for the file list of a sharded checkpoint
    if subfolder is None and not local.exists():
        subfolder = _hub_subfolder(str(path))
    with _hub(str(path), subfolder):
        return _load_student(str(path), subfolder, device, dtype, from_pretrained_kwargs)


def _hub_subfolder(repo_id: str) -> str | None:
    """A hub pipeline repository (one with model_index.json) holds its transformer in ``transformer/``."""
    from ...hub import has_file

    return "transformer" if has_file(repo_id, "model_index.json", "lindit model") else None


def _hub(path: str, subfolder: str | None):
    """Bounded, announced Hub access for a hub id (``lindit.hub``); nothing for a local folder."""
    from ...hub import hub_access

    return contextlib.nullcontext() if Path(path).exists() else hub_access(path, "lindit model", CONFIG_NAME, subfolder)


def _load_student(path: str, subfolder: str | None, device, dtype, from_pretrained_kwargs: dict) -> nn.Module:
    config = _read_config(path, subfolder, from_pretrained_kwargs)
    cls = student_class_of(config)
    if cls is None:
        raise ValueError(f"{path} holds a {config.get('_class_name', 'model without _class_name')}, not a lindit "
                         f"student ({', '.join(STUDENTS_BY_NAME)}); convert it with lindit.convert or `lindit convert`")
    if config.get("lindit_quantized"):
        model = _load_quantized(cls, config, _weights_file(str(path), subfolder, from_pretrained_kwargs))
    else:
        try:
            model, info = cls.from_pretrained(str(path), subfolder=subfolder, torch_dtype=dtype,
                                              output_loading_info=True, **from_pretrained_kwargs)
        except OSError as err:  # unreadable or missing weights: the user's files, one line
            raise ValueError(f"cannot load {path}: {str(err).strip().splitlines()[0]}") from None
        _check_loading_info(info, f"{path}" + (f"/{subfolder}" if subfolder else ""))
    model = model.to(device=device) if dtype is None else model.to(device=device, dtype=dtype)
    return model.eval()


def _check_loading_info(info: dict, where: str) -> None:
    """diffusers only warns about missing and unused tensors; a student with either is not the one saved."""
    problems = [f"{kind.replace('_keys', '')} tensors: {', '.join(sorted(info[kind])[:5])}"
                + (" ..." if len(info[kind]) > 5 else "") for kind in ("missing_keys", "unexpected_keys") if info[kind]]
    if problems:
        raise ValueError(f"{where} does not match the model its config describes: " + " | ".join(problems))


def _read_config(path: str, subfolder: str | None, kwargs: dict) -> dict:
    """config.json of a folder or hub id, through diffusers (its cache, offline mode and hub options)."""
    from diffusers.configuration_utils import ConfigMixin

    class _Config(ConfigMixin):
        config_name = CONFIG_NAME

    hub = {k: kwargs[k] for k in ("cache_dir", "revision", "token", "local_files_only", "force_download", "proxies")
           if k in kwargs}
    if Path(path).exists() and not (Path(path) / (subfolder or "") / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"{Path(path) / (subfolder or '')} is not a model folder: {CONFIG_NAME} is missing")
    return dict(_Config.load_config(path, subfolder=subfolder, **hub))


def _weights_file(path: str, subfolder: str | None, kwargs: dict) -> Path:
    local = Path(path) / (subfolder or "") / WEIGHTS_NAME
    if Path(path).exists():
        return local
    from huggingface_hub import hf_hub_download

    hub = {k: kwargs[k] for k in ("cache_dir", "revision", "token", "local_files_only") if k in kwargs}
    return Path(hf_hub_download(path, WEIGHTS_NAME, subfolder=subfolder, **hub))


def _load_quantized(cls: type, config: dict, weights: Path) -> nn.Module:
    from ...deploy.quantize import restore_quantized  # quantized layers on meta, their weights from parts

    meta = config.pop("lindit_quantized")
    with init_empty_weights(include_buffers=False):  # parameters on meta; computed buffers stay real
        model = cls.from_config(config)
    state = restore_quantized(model, meta, read_weights(weights))
    return load_state_strictly(model, state, weights)


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable safetensors file ({err})") from None


def load_state_strictly(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> nn.Module:
    """Assign ``state`` to a model built on meta; a missing, extra or mis-shaped tensor is an error naming it."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    shapes = [f"{k}: stored {tuple(state[k].shape)}, expected {tuple(expected[k].shape)}"
              for k in sorted(set(state) & set(expected)) if state[k].shape != expected[k].shape]
    problems = [f"missing tensors: {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else "")] if missing else []
    problems += [f"unexpected tensors: {', '.join(extra[:5])}" + (" ..." if len(extra) > 5 else "")] if extra else []
    problems += [f"mis-shaped tensors: {'; '.join(shapes[:5])}"] if shapes else []
    if problems:
        raise ValueError(f"{path} does not match the model it describes: " + " | ".join(problems))
    model.load_state_dict(state, strict=True, assign=True)
    leftover = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftover:
        raise ValueError(f"tensors left uninitialised after loading: {', '.join(leftover[:5])}")
    return model
