"""Each converted layer against its teacher layer, on the teacher's own activations.

The teacher runs on a probe; every converted student layer is then fed the input its teacher layer got
(``TeacherForcing``), so a layer's error is its own and not the accumulated error of the layers before it.
Errors are relative squared errors, ||s - t||^2 / ||t||^2, of the layer's output after its output
projection (image tokens, and prompt tokens for joint layers), averaged over probe batches and over both
conditionings (prompt and null prompt). Joint hybrid layers also get the block split of ``blocks.py``.
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import ExitStack

import torch
from torch import nn

from ..integrations.diffusers import converted_layers
from ..training.hooks import FeatureCapture, TeacherForcing
from .blocks import block_errors, student_rows, teacher_rows
from .probes import Probe, relative_error, run_model
from .taps import tap_attention

OUTPUTS = ("image", "prompt")  # a layer's outputs, in order: joint layers return (image, prompt or None)


@torch.no_grad()
def layer_errors(comp, teacher: nn.Module, student: nn.Module, probes: list[Probe]) -> dict[str, dict]:
    """Layer name -> {"image": err, "prompt": err (joint layers), "blocks": {"image": {...}, "prompt": {...}}}."""
    layers = converted_layers(student, attention_only=True)
    names = list(layers)
    sums: dict[str, dict] = {n: defaultdict(list) for n in names}
    with ExitStack() as stack:
        t_cap = stack.enter_context(FeatureCapture(teacher, names, inputs=True))
        s_cap = stack.enter_context(FeatureCapture(student, names))
        forcing = stack.enter_context(TeacherForcing(student, names))
        calls = stack.enter_context(tap_attention(layers))
        for probe in probes:
            for cond in (probe.cond, probe.null):
                with t_cap.recording() as t_feats:
                    run_model(comp, teacher, probe, cond)
                forcing.feed(t_cap.inputs)
                for kept in calls.values():
                    kept.clear()
                with s_cap.recording() as s_feats:
                    run_model(comp, student, probe, cond)
                for name in names:
                    _add(sums[name], teacher.get_submodule(name), t_cap.inputs[name], t_feats[name], s_feats[name],
                         calls[name])
    return {name: _mean(values) for name, values in sums.items()}


def _add(acc: dict, t_layer: nn.Module, t_inputs, t_out: tuple, s_out: tuple, calls) -> None:
    for key, s, t in zip(OUTPUTS, s_out, t_out):
        if s is not None and t is not None:
            acc[key].append(relative_error(s, t))
    rows = student_rows(calls)
    if rows is None:
        return
    args, kwargs = t_inputs
    hidden = kwargs.get("hidden_states", args[0] if args else None)
    t_rows = teacher_rows(t_layer, hidden, kwargs["encoder_hidden_states"])
    for key, s_rows in rows.items():
        acc[f"blocks.{key}"].append(block_errors(s_rows, t_rows[key]))


def _mean(values: dict[str, list]) -> dict:
    out: dict = {}
    for key, items in values.items():
        if key.startswith("blocks."):
            out.setdefault("blocks", {})[key[len("blocks."):]] = _mean_dicts(items)
        else:
            out[key] = sum(items) / len(items)
    return out


def _mean_dicts(items: list[dict]) -> dict:
    out = {}
    for key, first in items[0].items():
        if isinstance(first, list):
            out[key] = [round(sum(d[key][i] for d in items) / len(items), 4) for i in range(len(first))]
        else:
            out[key] = sum(d[key] for d in items) / len(items)
    return out
