"""Quantization schemes, and which backend runs each on which device.

A scheme says what is stored in low precision; a backend is the PyTorch library that does it. torchao is
preferred wherever it supports the scheme on the device; ``torch.ao`` dynamic quantization (fbgemm /
oneDNN kernels, part of torch itself) is the fallback for int8-dynamic on CPU, and can be asked for by
name (on x86 its int8 kernel is faster than torchao's CPU path; see docs/DEPLOYMENT.md).

What is never quantized: the linear-attention sums and normalisers (computed in float32 by
``lindit.functional``, they are what overflows), norms, convolutions and embeddings. Only ``nn.Linear``
weights are quantized, and only int8-dynamic quantizes activations (per token, at run time).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Scheme:
    name: str
    summary: str
    bits: int  # weight bits
    backends: dict  # device type -> backends that run it there, preferred first


SCHEMES: dict[str, Scheme] = {
    s.name: s
    for s in [
        Scheme("int8-dynamic", "int8 weights per output channel, int8 activations per token (dynamic)", 8,
               {"cpu": ("torchao", "torch.ao"), "cuda": ("torchao",)}),
        Scheme("int8-weight", "int8 weights per output channel, float activations", 8,
               {"cpu": ("torchao",), "cuda": ("torchao",)}),
        Scheme("int4-weight", "int4 weights in groups along the input (default 32), float activations", 4,
               {"cpu": ("torchao",), "cuda": ("torchao",)}),
    ]
}


def supported() -> str:
    """'scheme (device: backends; ...)' for every scheme, for error messages and --help."""
    return "; ".join(f"{s.name} on " + ", ".join(f"{d} ({'/'.join(b)})" for d, b in s.backends.items())
                     for s in SCHEMES.values())


def get_scheme(name: str) -> Scheme:
    if name not in SCHEMES:
        raise ValueError(f"unknown quantization scheme {name!r}; supported: {supported()}")
    return SCHEMES[name]


def choose_backend(scheme: Scheme, device: torch.device, backend: str | None, available) -> str:
    """The backend for ``scheme`` on ``device``: ``backend`` if given and valid, else the first available.

    ``available(name) -> bool`` says whether a backend can be used (its package imports, and it handles the
    model). Errors name what is supported.
    """
    options = scheme.backends.get(device.type)
    if options is None:
        raise ValueError(f"{scheme.name} is not supported on device {device.type!r}; supported: {supported()}")
    if backend is not None:
        if backend not in options:
            raise ValueError(f"backend {backend!r} does not run {scheme.name} on {device.type}; "
                             f"choose from {', '.join(options)}")
        return backend
    usable = [b for b in options if available(b)]
    if not usable:
        raise ImportError(f"{scheme.name} on {device.type} runs with {' or '.join(options)}, and none is usable "
                          "here; install the deploy extra for torchao: pip install 'lindit[deploy]'")
    return usable[0]
