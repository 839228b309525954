"""``quantize``: int8 / int4 weights for the Linear layers of a (converted or teacher) transformer.

    from lindit.deploy import quantize
    small = quantize(lindit.load("edit-student"), "int8-dynamic")
    lindit.save(small, "edit-int8")          # safetensors: int8 weights and scales as plain tensors
    small = lindit.load("edit-int8")         # quantized modules rebuilt, then a strict load

A quantized model records what was done in ``model.lindit_quantization`` (scheme, backend, the exact
layers); ``lindit.save`` writes it into the config (``lindit_quantized``) and ``lindit.load`` rebuilds from it.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .backends import BACKENDS
from .schemes import SCHEMES, choose_backend, get_scheme

FORMAT_VERSION = 1
DEFAULT_GROUP_SIZE = 32  # int4 group along the input features (EDiT quantizes weights to 4 bits on device)
# (backend, scheme, model dtype) combinations that give wrong results, and what to do instead
UNSAFE = {
    ("torchao", "int8-dynamic", torch.float16):
        "torchao's int8-dynamic kernel rescales its int32 products in float16, which overflows to inf; quantize "
        "a bfloat16 or float32 model, or use backend='torch.ao' (its kernel returns float32)",
}


def quantize(model: nn.Module, scheme: str, *, device: str | torch.device | None = None,
             backend: str | None = None, group_size: int = DEFAULT_GROUP_SIZE, inplace: bool = False) -> nn.Module:
    """Return ``model`` with its ``nn.Linear`` weights quantized by ``scheme`` (a copy unless ``inplace``).

    scheme: ``int8-dynamic``, ``int8-weight`` or ``int4-weight`` (see ``lindit.deploy.SCHEMES``).
    device: where the quantized model runs (default: where its parameters are); the backend is torchao
    where it supports the scheme there (and the model's dtype), else torch.ao; ``backend`` forces one.
    group_size: int4 groups along the input features; a Linear whose input width it does not divide
    stays float.
    Norms, convolutions, embeddings and the float32 linear-attention sums are not touched.
    """
    sch = get_scheme(scheme)
    if getattr(model, "lindit_quantization", None):
        raise ValueError(f"model is already quantized ({model.lindit_quantization['scheme']}); "
                         "quantize the float model")
    from ..eval.measure import parse_device, resolve_device

    target = parse_device(device) if device is not None else _device_of(model)
    dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
    chosen = choose_backend(sch, target, backend,
                            lambda b: BACKENDS[b].available() and (b, sch.name, dtype) not in UNSAFE)
    if sch.bits == 4 and (group_size < 2 or group_size % 2):
        raise ValueError(f"group_size must be an even number >= 2, got {group_size}")
    if (chosen, sch.name, dtype) in UNSAFE:  # asked for by name
        raise ValueError(UNSAFE[chosen, sch.name, dtype])
    resolve_device(str(target))  # the model moves there: it must be present
    model = model if inplace else copy.deepcopy(model)
    model = model.to(target)
    names = quantizable_linears(model, sch.bits, group_size)
    if not names:
        raise ValueError(f"no nn.Linear layer of this model can be quantized with {scheme}")
    BACKENDS[chosen].quantize(model, names, sch, group_size)
    model.lindit_quantization = {"scheme": sch.name, "backend": chosen, "group_size": group_size,
                                 "dtype": str(dtype).removeprefix("torch."), "layers": names,
                                 "format_version": FORMAT_VERSION}
    return model


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def quantizable_linears(model: nn.Module, bits: int, group_size: int) -> list[str]:
    """Names of the float ``nn.Linear`` layers a scheme with ``bits`` weight bits can quantize."""
    plain = (torch.Tensor, nn.Parameter)  # not already a torchao tensor subclass
    return [name for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and m.weight.is_floating_point() and type(m.weight) in plain
            and (bits == 8 or m.in_features % group_size == 0)]


def quantized_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of a quantized model as plain tensors (what ``lindit.save`` writes)."""
    meta = model.lindit_quantization
    backend, scheme = BACKENDS[meta["backend"]], SCHEMES[meta["scheme"]]
    state = backend.to_plain(model.state_dict(), meta["layers"], scheme)
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def restore_quantized(model: nn.Module, meta: dict, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Make ``model`` (parameters on meta, built from the plan) quantized like the saved one; return the
    state to load into it strictly. Called by ``lindit.load`` for folders whose config records
    ``lindit_quantized``."""
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"unsupported quantization format {meta.get('format_version')}; "
                         f"this lindit reads {FORMAT_VERSION}")
    scheme = get_scheme(meta["scheme"])
    if meta["backend"] not in BACKENDS:
        raise ValueError(f"unknown quantization backend {meta['backend']!r}; known: {', '.join(BACKENDS)}")
    backend = BACKENDS[meta["backend"]]
    if not backend.available():
        raise ImportError(f"this model was quantized with {backend.name}; install the deploy extra: "
                          "pip install 'lindit[deploy]'")
    dtype = getattr(torch, meta["dtype"])
    linears = {name for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    unknown = [name for name in meta["layers"] if name not in linears]
    if unknown:
        raise ValueError(f"the saved quantization lists layers the model has no Linear for: {', '.join(unknown[:3])}")
    for name in meta["layers"]:
        model.get_submodule(name).to(dtype)
    backend.skeleton(model, meta["layers"], scheme, meta["group_size"])
    model.lindit_quantization = dict(meta)
    return backend.from_plain(model, state, meta["layers"], scheme)
