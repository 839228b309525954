"""Feature capture for EDiT's feature distillation: the output of named layers, one per layer per forward.

    with FeatureCapture(student, names) as s_cap, FeatureCapture(teacher, names) as t_cap:
        with s_cap.recording() as s_feats:
            student(...)
        ...                      # s_feats[name] is a tuple of the layer's outputs (tensors or None)
    # here every hook is removed again

Hooks record only inside ``recording()``: gradient checkpointing re-runs layers during backward, and those
re-runs must not add a second output. A layer that fires twice within one recording, or not at all, is an
error (the pairing of student and teacher features would be wrong).

Layer-wise attention transfer (a stage's ``feature_inputs: teacher``) runs each student layer on the input the
teacher's layer got, so a layer learns to reproduce its teacher's layer without inheriting the errors of the
student layers before it:

    with FeatureCapture(teacher, names, inputs=True) as t_cap, TeacherForcing(student, names) as forcing:
        with t_cap.recording() as t_feats:
            teacher(...)             # t_cap.inputs[name] = (args, kwargs) of the teacher's layer
        forcing.feed(t_cap.inputs)   # until the next feed: the student's layers get the teacher's inputs
        student(...)
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn


def as_tuple(output) -> tuple[torch.Tensor | None, ...]:
    """A layer's output as a tuple: joint attention returns (image tokens, prompt tokens or None)."""
    return tuple(output) if isinstance(output, (tuple, list)) else (output,)


class _Hooks:
    """Hooks on ``model``'s submodules ``names``, registered by ``__enter__``, all removed on exit."""

    def __init__(self, model: nn.Module, names: list[str]):
        modules = dict(model.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            raise ValueError(f"{type(model).__name__} has no layer {missing[0]!r} to capture features from")
        self.modules = {n: modules[n] for n in names}
        self.handles: list = []

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        self._forget()

    def _forget(self) -> None:
        pass


class FeatureCapture(_Hooks):
    """Forward hooks on ``model``'s submodules ``names``; a context manager that removes them on exit."""

    def __init__(self, model: nn.Module, names: list[str], inputs: bool = False):
        super().__init__(model, names)
        self.features: dict[str, tuple] | None = None
        self.record_inputs = inputs
        self.inputs: dict[str, tuple[tuple, dict]] = {}  # the last recording's layer inputs (inputs=True)

    def __enter__(self) -> FeatureCapture:
        for name, module in self.modules.items():
            self.handles.append(module.register_forward_hook(self._hook(name)))
            if self.record_inputs:
                self.handles.append(module.register_forward_pre_hook(self._input_hook(name), with_kwargs=True))
        return self

    def _forget(self) -> None:
        self.features = None
        self.inputs = {}

    def _input_hook(self, name: str):
        def hook(module, args, kwargs):
            if self.features is not None:
                self.inputs[name] = (args, kwargs)

        return hook

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
        self.inputs = {}
        try:
            yield features
        finally:
            self.features = None
        missing = [n for n in self.modules if n not in features]
        if missing:
            raise RuntimeError(f"layer {missing[0]} did not run during the recorded forward")


class TeacherForcing(_Hooks):
    """Forward pre-hooks that hand ``model``'s layers ``names`` the inputs fed to them (see the module doc).

    The fed inputs stay until the next ``feed``, so gradient checkpointing's re-runs during backward see the
    same inputs as the forward. A layer that runs with nothing fed is an error, not a silent own-input run.
    """

    def __init__(self, model: nn.Module, names: list[str]):
        super().__init__(model, names)
        self.fed: dict[str, tuple[tuple, dict]] = {}

    def __enter__(self) -> TeacherForcing:
        for name, module in self.modules.items():
            self.handles.append(module.register_forward_pre_hook(self._hook(name), with_kwargs=True))
        return self

    def _forget(self) -> None:
        self.fed = {}

    def feed(self, inputs: dict[str, tuple[tuple, dict]]) -> None:
        missing = [n for n in self.modules if n not in inputs]
        if missing:
            raise ValueError(f"teacher forcing: no teacher input recorded for layer {missing[0]}")
        self.fed = dict(inputs)

    def _hook(self, name: str):
        def hook(module, args, kwargs):
            if name not in self.fed:
                raise RuntimeError(f"teacher forcing: layer {name} ran before any teacher input was fed")
            return self.fed[name]

        return hook
