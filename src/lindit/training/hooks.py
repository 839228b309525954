"""Feature capture for EDiT's feature distillation: the output of named layers, one per layer per forward.

    with FeatureCapture(student, names) as s_cap, FeatureCapture(teacher, names) as t_cap:
        with s_cap.recording() as s_feats:
            student(...)
        ...                      # s_feats[name] is a tuple of the layer's outputs (tensors or None)
    # here every hook is removed again

Hooks record only inside ``recording()``: gradient checkpointing re-runs layers during backward, and those
re-runs must not add a second output. A layer that fires twice within one recording, or not at all, is an
error (the pairing of student and teacher features would be wrong).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn


def as_tuple(output) -> tuple[torch.Tensor | None, ...]:
    """A layer's output as a tuple: joint attention returns (image tokens, prompt tokens or None)."""
    return tuple(output) if isinstance(output, (tuple, list)) else (output,)


class FeatureCapture:
    """Forward hooks on ``model``'s submodules ``names``; a context manager that removes them on exit."""

    def __init__(self, model: nn.Module, names: list[str]):
        modules = dict(model.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            raise ValueError(f"{type(model).__name__} has no layer {missing[0]!r} to capture features from")
        self.modules = {n: modules[n] for n in names}
        self.handles: list = []
        self.features: dict[str, tuple] | None = None

    def __enter__(self) -> FeatureCapture:
        for name, module in self.modules.items():
            self.handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        self.features = None

    def _hook(self, name: str):
        def hook(module, args, output):
            if self.features is None:
                return  # not recording (e.g. a gradient-checkpointing re-run during backward)
            if name in self.features:
                raise RuntimeError(f"layer {name} ran twice in one forward; feature pairing would be ambiguous")
            self.features[name] = as_tuple(output)

        return hook

    @contextmanager
    def recording(self):
        """Record one forward; yields the dict name -> outputs, complete when the block exits."""
        if not self.handles:
            raise RuntimeError("FeatureCapture.recording() outside its `with FeatureCapture(...)` block")
        self.features = features = {}
        try:
            yield features
        finally:
            self.features = None
        missing = [n for n in self.modules if n not in features]
        if missing:
            raise RuntimeError(f"layer {missing[0]} did not run during the recorded forward")
