"""``save`` and ``load``: safetensors weights + the diffusers config + the lindit plan; nothing pickled.

A saved folder holds ``config.json`` (the teacher class's diffusers config), ``lindit.json`` (the
conversion plan) and ``lindit_model.safetensors`` (every tensor of the converted model). The weights file
deliberately does not use diffusers' name: a plain ``from_pretrained`` of the folder fails loudly instead
of silently building the teacher's architecture without the lindit layers.

``load`` rebuilds the exact module tree with its parameters on the meta device (no wasted initialisation
of a large model),
then assigns the stored tensors strictly: a missing, extra or mis-shaped tensor is an error that names it.

A quantized model (``lindit.deploy.quantize``) adds a ``quantization`` entry to ``lindit.json`` and stores
its integer weights and scales as plain tensors; ``load`` rebuilds the quantized layers (on meta) from
that entry before the same strict load.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from accelerate import init_empty_weights
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ...io import atomic_dir, write_json
from .convert import Plan, build_structure
from .families import FAMILIES, family_by_class_name

WEIGHTS_NAME = "lindit_model.safetensors"
PLAN_NAME = "lindit.json"
CONFIG_NAME = "config.json"


def save(model: nn.Module, directory: str | Path, overwrite: bool = False) -> Path:
    """Write a converted model to ``directory`` atomically (all files or none). Returns the path."""
    plan = getattr(model, "lindit_config", None)
    if not plan:
        raise ValueError("save() takes a model returned by lindit.convert or lindit.load")
    directory = Path(directory)
    with atomic_dir(directory, overwrite=overwrite) as tmp:
        model.save_config(tmp)
        quantization = getattr(model, "lindit_quantization", None)
        write_json(tmp / PLAN_NAME, {**plan, "quantization": quantization} if quantization else plan)
        if quantization:
            from ...deploy.quantize import quantized_state  # integer weights and scales as plain tensors

            state = quantized_state(model)
        else:
            state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt", "lindit_method": plan["method"]})
    return directory


def is_lindit_dir(path: str | Path) -> bool:
    return (Path(path) / PLAN_NAME).is_file()


def load(directory: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> nn.Module:
    """Load a model written by ``save``; returns it in eval mode on ``device`` (and ``dtype`` if given)."""
    directory = Path(directory)
    for name in (CONFIG_NAME, PLAN_NAME, WEIGHTS_NAME):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory} is not a lindit model folder: {name} is missing (write one with lindit.save)")
    stored = json.loads((directory / PLAN_NAME).read_text())
    quantization = stored.pop("quantization", None)
    plan = Plan(**stored)
    config = json.loads((directory / CONFIG_NAME).read_text())
    fam = family_by_class_name(config.get("_class_name", "?"))
    if fam.name != plan.family or plan.family not in FAMILIES:
        raise ValueError(f"{directory}: config class {config.get('_class_name')} does not match plan family {plan.family}")
    with init_empty_weights(include_buffers=False):  # parameters on meta; computed buffers stay real
        model = fam.model_class.from_config(config)
        build_structure(model, plan)
    state = _read_weights(directory / WEIGHTS_NAME)
    if quantization:
        from ...deploy.quantize import restore_quantized  # quantized layers on meta, their weights from parts

        state = restore_quantized(model, quantization, state)
    _check_state(model, state, directory / WEIGHTS_NAME)
    model.load_state_dict(state, strict=True, assign=True)
    leftover = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftover:
        raise ValueError(f"tensors left uninitialised after loading: {', '.join(leftover[:5])}")
    model = model.to(device=device) if dtype is None else model.to(device=device, dtype=dtype)
    return model.eval()


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable safetensors file ({err})") from None


def _check_state(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
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

