"""What one block's conversion does to the whole model's output.

* ``alone``: the teacher with only block i converted, holding the student's layers of block i (a fresh or a
  distilled student's): how much of the student's output error block i causes by itself.
* ``keep_softmax``: the distilled student with block i given back its teacher attention (every other
  weight the student's): how much keeping that block in softmax would recover, before any retraining.

Output errors compare predictions (the variance channels of learned-sigma models left out) with the
teacher's on the same probes: with the prompt, with the null prompt, and the guidance direction
(prompt - null), which classifier-free guidance scales up and which carries most of prompt adherence.
"""

from __future__ import annotations

import re
from collections import defaultdict

import torch
from torch import nn

from ..integrations.diffusers import convert, converted_layers
from ..integrations.diffusers import Plan
from .probes import Probe, predict, relative_error

BLOCK = re.compile(r"^transformer_blocks\.(\d+)\.")


def block_of(name: str) -> int:
    """The diffusers block index of a converted layer's qualified name."""
    match = BLOCK.match(name)
    if match is None:
        raise ValueError(f"converted layer {name!r} is not inside transformer_blocks")
    return int(match.group(1))


def convert_like(teacher: nn.Module, plan: Plan, layers: list[int]) -> nn.Module:
    """``teacher`` converted as ``plan`` says, on ``layers`` only."""
    return convert(teacher, plan.method, layers=layers, inherit=plan.inherit or "none", **plan.options).eval()


@torch.no_grad()
def output_errors(comp, teacher: nn.Module, model: nn.Module, probes: list[Probe]) -> dict[str, float]:
    """Mean over probe batches of the relative error of the prediction with the prompt, with the null
    prompt, and of the guidance direction."""
    acc = defaultdict(list)
    for probe in probes:
        t_c, t_u = predict(comp, teacher, probe), predict(comp, teacher, probe, null=True)
        s_c, s_u = predict(comp, model, probe), predict(comp, model, probe, null=True)
        acc["prompt"].append(relative_error(s_c, t_c))
        acc["null"].append(relative_error(s_u, t_u))
        acc["guidance"].append(relative_error(s_c - s_u, t_c - t_u))
    return {k: sum(v) / len(v) for k, v in acc.items()}


def alone(comp, teacher: nn.Module, plan: Plan, probes: list[Probe], student: nn.Module) -> dict:
    """Block index -> output errors of the teacher with only that block converted, with ``student``'s weights
    for it (a fresh conversion's or a distilled one's: a new conversion would draw other random weights)."""
    out = {}
    for i in plan.layers:
        model = convert_like(teacher, plan, [i])
        for name, layer in converted_layers(model).items():
            layer.load_state_dict(student.get_submodule(name).state_dict())
        out[i] = output_errors(comp, teacher, model, probes)
    return out


def keep_softmax(comp, teacher: nn.Module, student: nn.Module, plan: Plan, probes: list[Probe]) -> dict:
    """Block index -> output errors of the student with that block's attention given back to the teacher's."""
    if len(plan.layers) < 2:
        return {}
    state = student.state_dict()
    out = {}
    for i in plan.layers:
        model = convert_like(teacher, plan, [j for j in plan.layers if j != i])
        replaced = [n for n in converted_layers(student) if block_of(n) == i]
        keep = {k: v for k, v in state.items() if not any(k.startswith(n + ".") for n in replaced)}
        missing, unexpected = model.load_state_dict(keep, strict=False)
        stray = [k for k in missing if not any(k.startswith(n + ".") for n in replaced)]
        if unexpected or stray:
            raise ValueError(f"the student does not match its plan: {(unexpected or stray)[0]}")
        out[i] = output_errors(comp, teacher, model, probes)
    return out
