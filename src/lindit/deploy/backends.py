"""The libraries that quantize: torchao (tensor subclasses) and torch.ao (int8 dynamic kernels).

Each backend can quantize named ``nn.Linear`` layers of a model, rebuild the same structure on the
meta device (``skeleton``, used by ``lindit.load`` before its strict load), and move between its
in-memory form and plain tensors (``to_plain`` / ``from_plain``): safetensors stores only plain tensors,
so a torchao weight ``x.weight`` is written as its parts ``x.weight.qdata``, ``x.weight.scale``, ...
(int4 values packed two per byte) and reassembled at load with the metadata of the skeleton's weight,
so no Python object is ever pickled.
"""

from __future__ import annotations

import torch
from torch import nn

from .ao_linear import DynamicInt8Linear
from .extras import available, require
from .schemes import Scheme


def _torchao_config(scheme: Scheme, group_size: int):
    tq = require("torchao", f"{scheme.name} quantization")
    from torchao.quantization.granularity import PerGroup

    configs = {
        "int8-dynamic": lambda: tq.Int8DynamicActivationInt8WeightConfig(),
        "int8-weight": lambda: tq.Int8WeightOnlyConfig(),
        # IntxWeightOnlyConfig runs on any device (Int4WeightOnlyConfig needs CUDA-only kernels here)
        "int4-weight": lambda: tq.IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(group_size)),
    }
    return configs[scheme.name]()


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """int8 (..., 2k) holding values in [-8, 7] -> uint8 (..., k): two values per byte, low nibble first."""
    low, high = q[..., 0::2].to(torch.uint8) & 0xF, q[..., 1::2].to(torch.uint8) & 0xF
    return low | (high << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """uint8 (..., k) -> int8 (..., 2k), the inverse of ``pack_int4``."""
    nibbles = torch.stack([packed & 0xF, packed >> 4], dim=-1).to(torch.int8)  # (..., k, 2) in [0, 15]
    signed = torch.where(nibbles >= 8, nibbles - 16, nibbles)
    return signed.flatten(-2)


class TorchAO:
    name = "torchao"

    def available(self) -> bool:
        return available("torchao")

    def quantize(self, model: nn.Module, names: list[str], scheme: Scheme, group_size: int) -> None:
        wanted = set(names)
        require("torchao", "quantization").quantize_(model, _torchao_config(scheme, group_size),
                                                     filter_fn=lambda module, fqn: fqn in wanted)

    skeleton = quantize  # torchao quantizes meta weights to meta tensor subclasses with the same metadata

    def to_plain(self, state: dict, names: list[str], scheme: Scheme) -> dict:
        state = dict(state)
        for name in names:
            weight = state.pop(f"{name}.weight")
            inner, _ = weight.__tensor_flatten__()
            for part in inner:
                tensor = getattr(weight, part)
                state[f"{name}.weight.{part}"] = pack_int4(tensor) if _packs(scheme, part) else tensor
        return state

    def from_plain(self, model: nn.Module, state: dict, names: list[str], scheme: Scheme) -> dict:
        state = dict(state)
        for name in names:
            skeleton = model.get_submodule(name).weight
            inner, ctx = skeleton.__tensor_flatten__()
            missing = [f"{name}.weight.{p}" for p in inner if f"{name}.weight.{p}" not in state]
            if missing:
                raise ValueError(f"quantized weight parts missing from the file: {', '.join(missing[:3])}")
            parts = {p: state.pop(f"{name}.weight.{p}") for p in inner}
            parts = {p: unpack_int4(t) if _packs(scheme, p) else t for p, t in parts.items()}
            state[f"{name}.weight"] = type(skeleton).__tensor_unflatten__(parts, ctx, skeleton.shape, skeleton.stride())
        return state


def _packs(scheme: Scheme, part: str) -> bool:
    return scheme.bits == 4 and part == "qdata"


class TorchAODynamic:
    """torch.ao int8 dynamic quantization; its modules already hold plain tensors."""

    name = "torch.ao"

    def available(self) -> bool:
        return hasattr(torch.ops.quantized, "linear_dynamic")

    def quantize(self, model: nn.Module, names: list[str], scheme: Scheme, group_size: int) -> None:
        for name in names:
            _replace(model, name, DynamicInt8Linear.from_linear(model.get_submodule(name)))

    def skeleton(self, model: nn.Module, names: list[str], scheme: Scheme, group_size: int) -> None:
        for name in names:
            old = model.get_submodule(name)
            new = DynamicInt8Linear(old.in_features, old.out_features, old.bias is not None,
                                    device=old.weight.device, dtype=old.weight.dtype)
            _replace(model, name, new)

    def to_plain(self, state: dict, names: list[str], scheme: Scheme) -> dict:
        return dict(state)

    def from_plain(self, model: nn.Module, state: dict, names: list[str], scheme: Scheme) -> dict:
        return dict(state)


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


BACKENDS = {b.name: b for b in (TorchAO(), TorchAODynamic())}
