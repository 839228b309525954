"""Record the attention calls that converted layers make into ``lindit.functional``.

Layers compute their attention with the pure functions of ``lindit.functional`` (the ops / modules split of
the design), so the queries, keys and values a student layer attends with are the arguments of those calls,
whatever the layer's own attribute names are. ``tap_attention`` wraps the functions wherever a lindit module
imported them by name, for the duration of a ``with`` block, and files each call under the converted layer
that made it.
"""

from __future__ import annotations

import inspect
import sys
from contextlib import contextmanager
from dataclasses import dataclass

from torch import nn

from .. import functional

TAPPED = ("hybrid_attention", "softmax_attention", "linear_attention", "joint_prompt_attention")


@dataclass
class Call:
    """One call: the function's name, its arguments by parameter name (defaults filled in), its result."""

    name: str
    args: dict
    result: object


@contextmanager
def tap_attention(layers: dict[str, nn.Module]):
    """Yields ``calls``: layer name -> [Call, ...] made while that layer ran (calls outside layers are not kept)."""
    calls: dict[str, list[Call]] = {name: [] for name in layers}
    current: list[str] = []
    handles = []
    for name, layer in layers.items():  # the hooks return None: they change neither inputs nor outputs
        handles.append(layer.register_forward_pre_hook(lambda m, a, n=name: current.append(n) and None))
        handles.append(layer.register_forward_hook(lambda m, a, o: current.pop() and None))
    patched = _patch(lambda call: calls[current[-1]].append(call) if current else None)
    try:
        yield calls
    finally:
        for module, attr, original in patched:
            setattr(module, attr, original)
        for handle in handles:
            handle.remove()


def _patch(sink) -> list[tuple]:
    originals = {name: getattr(functional, name) for name in TAPPED}
    patched = []
    for module_name, module in list(sys.modules.items()):
        if module is None or module is functional or not module_name.startswith("lindit."):
            continue
        for attr, fn in originals.items():
            if getattr(module, attr, None) is fn:
                setattr(module, attr, _recording(attr, fn, sink))
                patched.append((module, attr, fn))
    return patched


def _recording(name: str, fn, sink):
    signature = inspect.signature(fn)

    def wrapper(*args, **kwargs):
        result = fn(*args, **kwargs)
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        sink(Call(name, dict(bound.arguments), result))
        return result

    return wrapper
