"""PEFT LoRA on students: a LoRA trained on the teacher loads wherever its target modules still exist.

Converted layers keep plain ``nn.Linear`` projections at diffusers' names (``to_q``, ``to_k``, ``to_v``,
``to_out.0``, ``add_q_proj``, ...), so a teacher LoRA's keys mostly name modules the student has. Some do not
(SANA's Mix-FFN replaces ``ff``; SD3's last block has no prompt queries in a student): diffusers and peft
would fail on those or load nothing without a word, so ``filter_lora_state`` keeps what fits, and
``LinditModelMixin.load_lora_adapter`` loads it with a warning that lists what was left out.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"  # diffusers' save_lora_adapter / save_lora_weights


def read_lora_state(source, weight_name: str | None = None, **hub_kwargs
                    ) -> tuple[dict[str, torch.Tensor], dict | None]:
    """(a LoRA state dict, its adapter metadata) from a dict, a .safetensors file, a folder or a hub id
    (``weight_name`` inside it). The metadata is the ``LoraConfig`` that diffusers' ``save_lora_adapter`` /
    ``save_lora_weights`` store in the file (rank, ``lora_alpha``, ...); None when the source has none."""
    if isinstance(source, dict):
        return dict(source), None
    path = Path(source)
    if path.is_file():
        return _read_file(path)
    name = weight_name or LORA_WEIGHT_NAME
    if path.is_dir():
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path} has no {name} (pass weight_name= to name the LoRA file)")
        return _read_file(path / name)
    from huggingface_hub import hf_hub_download

    return _read_file(Path(hf_hub_download(str(source), name, **hub_kwargs)))


def _read_file(path: Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    from diffusers.loaders.lora_base import LORA_ADAPTER_METADATA_KEY

    with safe_open(str(path), framework="pt") as f:
        raw = (f.metadata() or {}).get(LORA_ADAPTER_METADATA_KEY)
    return load_file(str(path)), json.loads(raw) if raw else None


def unprefixed(mapping: dict | None, prefix: str | None) -> dict | None:
    """``mapping`` with ``prefix.`` stripped from its keys and other keys left out, where its keys carry the
    prefix (a pipeline's LoRA file: "transformer.", "text_encoder."); unchanged otherwise."""
    if not mapping or not prefix or not any(k.startswith(f"{prefix}.") for k in mapping):
        return mapping
    return {k[len(prefix) + 1:]: v for k, v in mapping.items() if k.startswith(f"{prefix}.")}


def _target(key: str) -> str | None:
    """``transformer_blocks.0.attn1.to_q.lora_A.weight`` -> ``transformer_blocks.0.attn1.to_q``."""
    return key.split(".lora_")[0] if ".lora_" in key else None


def filter_lora_state(model: nn.Module, state: dict[str, torch.Tensor], prefix: str | None
                      ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(the entries whose target module exists in ``model`` as a Linear of the LoRA's shape, the sorted
    target modules that do not). ``prefix`` (e.g. "transformer") is stripped where keys carry it."""
    state = unprefixed(state, prefix)
    modules = dict(model.named_modules())
    kept, dropped = {}, set()
    for key, tensor in state.items():
        target = _target(key)
        if target is not None and _fits(modules.get(target), key, tensor):
            kept[key] = tensor
        else:
            dropped.add(target or key)
    return kept, sorted(dropped)


def _fits(module: nn.Module | None, key: str, tensor: torch.Tensor) -> bool:
    base = getattr(module, "base_layer", module)  # already wrapped by peft for another adapter
    if not isinstance(base, nn.Linear):
        return False
    if ".lora_A" in key:
        return tensor.shape[-1] == base.in_features
    if ".lora_B" in key:
        return tensor.shape[0] == base.out_features
    return True


def warn_dropped(dropped: list[str], adapter_name: str) -> None:
    if dropped:
        shown = ", ".join(dropped[:8]) + (f" and {len(dropped) - 8} more" if len(dropped) > 8 else "")
        warnings.warn(f"LoRA {adapter_name!r}: {len(dropped)} target module(s) do not exist in this student "
                      f"(replaced by lindit, or of another shape) and were left out: {shown}", stacklevel=3)
