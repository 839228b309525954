"""``diagnose``: where a converted student's error comes from, layer by layer, before and after distillation.

    report = diagnose(config, {"method": "mm_edit", "inherit": "qkvo"})                # fresh conversion
    report = diagnose(config, student_dir="demo-output/students/sd3/mm_edit")        # + its distilled self

The fresh student is the teacher converted as the plan says (a distilled student's own plan when one is
given), so "fresh" and "distilled" differ by distillation alone.
"""

from __future__ import annotations

import copy
from dataclasses import asdict

import torch
from torch import nn

from ..integrations.diffusers import load
from ..integrations.diffusers import Plan
from ..training.components import build_components
from ..training.config import RunConfig, parse_config
from ..training.student import disable_label_dropout
from .layers import layer_errors
from .probes import make_probes
from .swap import alone, keep_softmax, output_errors


def builtin_config(teacher: str, seed: int = 0) -> dict:
    """The demo's training config for a built-in teacher (the shapes world, its encoders and noise)."""
    from ..demo.plan import FAMILIES, DemoSettings, run_config

    family = next((f for f, p in FAMILIES.items() if p.teacher == teacher), None)
    if family is None:
        names = ", ".join(f"builtin:{p.teacher}" for p in FAMILIES.values())
        raise ValueError(f"unknown built-in teacher {teacher!r}; choose from {names}")
    return run_config(family, FAMILIES[family].methods[0], DemoSettings(families=(family,), seed=seed, steps=2))


def with_plan(config: dict, plan: dict) -> RunConfig:
    """The run config whose model.method / model.convert convert the teacher as ``plan`` says."""
    data = copy.deepcopy(config)
    data["model"]["method"] = plan["method"]
    options = {k: v for k, v in plan.items() if k != "method"}
    data["model"]["convert"] = options
    return parse_config(data)


def student_plan(student: nn.Module) -> dict:
    """A lindit model's conversion as lindit.convert arguments: method, layers, inherit, options."""
    plan = Plan(**student.lindit_config)
    return {"method": plan.method, "layers": plan.layers, "inherit": plan.inherit or "none", **plan.options}


def diagnose(config: dict, plan: dict | None = None, student_dir: str | None = None, n: int = 64,
             batch_size: int = 16, seed: int = 0, device: str = "cpu") -> dict:
    """The diagnosis as a dict (``report.py`` renders it). ``config``: a training config (dict) naming the
    teacher, data and encoders; ``plan``: lindit.convert's method and options (default: the student's)."""
    student = _load_student(student_dir) if student_dir else None
    if plan is None:
        if student is None:
            raise ValueError("diagnose needs a method (plan) or a distilled student folder")
        plan = student_plan(student)
    cfg = with_plan(config, plan)
    comp = build_components(cfg, torch.device(device))
    teacher, fresh = comp.teachers.load(-1), comp.student.eval()
    probes = make_probes(comp, n, batch_size, seed)
    used = Plan(**fresh.lindit_config)
    report = {"plan": asdict(used), "probes": sum(p.noisy.noisy.shape[0] for p in probes),
              "fresh": _side(comp, teacher, fresh, used, probes)}
    if student is not None:
        if _conversion(Plan(**student.lindit_config)) != _conversion(used):
            raise ValueError(f"--student {student_dir} was converted as {student.lindit_config}, not as {asdict(used)}")
        report["student"] = str(student_dir)
        report["distilled"] = _side(comp, teacher, student.to(device), used, probes)
        report["distilled"]["keep_softmax"] = keep_softmax(comp, teacher, student, used, probes)
    return report


def _conversion(plan: Plan) -> dict:
    """What makes two plans the same conversion (not where the teacher was loaded from)."""
    return {k: v for k, v in asdict(plan).items() if k != "teacher"}


def _side(comp, teacher, model, plan: Plan, probes) -> dict:
    return {"model": output_errors(comp, teacher, model, probes),
            "layers": layer_errors(comp, teacher, model, probes),
            "alone": alone(comp, teacher, plan, probes, model)}


def _load_student(folder: str) -> nn.Module:
    model = load(folder).float().eval()
    disable_label_dropout(model)
    return model
