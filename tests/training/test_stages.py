"""Staged training: stage 1 (``attention``) touches only the layers lindit put in; stage 2 (``all``) the rest."""

import torch
from training_helpers import build_teacher, teacher_spec, tiny_dict

import lindit
from lindit.integrations.diffusers import converted_layers
from lindit.training import distill, parse_config


def _two_stage(second_teacher=None):
    data = tiny_dict("pixart", "edit")
    data["stages"] = [
        {"name": "attention", "steps": 6, "lr": 5e-3, "resolution": 16, "trainable": "attention"},
        {"name": "all", "steps": 6, "lr": 5e-3, "resolution": 16, "trainable": "all"},
    ]
    if second_teacher is not None:
        data["stages"][1]["teacher"] = second_teacher
    return parse_config(data)


def _split(student):
    """(names of parameters inside converted layers, names of every other parameter)."""
    inside = {f"{prefix}.{n}" for prefix, layer in converted_layers(student).items()
              for n, _ in layer.named_parameters()}  # fmt: skip
    others = {n for n, _ in student.named_parameters()} - inside
    return inside, others


def test_stage_one_leaves_frozen_weights_bit_identical_and_stage_two_changes_them(tmp_path):
    cfg = _two_stage()
    teacher = build_teacher("pixart")
    t_state = teacher.state_dict()
    torch.manual_seed(cfg.seed)  # distill draws the fresh attention weights right after seeding
    initial = lindit.convert(teacher, "edit").state_dict()

    after_one = lindit.load(distill(cfg, tmp_path / "run", max_steps=6)).state_dict()
    student = lindit.load(tmp_path / "run")
    inside, others = _split(student)
    assert inside and others
    for name in others:  # copied from the teacher by convert, frozen in stage 1
        assert torch.equal(after_one[name], t_state[name]), name
    changed = [n for n in inside if not torch.equal(after_one[n], initial[n])]
    assert len(changed) == len(inside), f"stage 1 left {set(inside) - set(changed)} untrained"

    after_two = lindit.load(distill(cfg, tmp_path / "run", resume="latest")).state_dict()
    moved = [n for n in others if not torch.equal(after_two[n], after_one[n])]
    assert len(moved) == len(others), f"stage 2 left {set(others) - set(moved)} frozen"


def test_a_stage_with_its_own_teacher_adopts_that_teachers_config(tmp_path):
    """EDiT stage 2: next to the 1024 px teacher the student takes its config (sample size, pos-embed scale)."""
    cfg = _two_stage(teacher_spec("pixart", sample_size=16))
    student = lindit.load(distill(cfg, tmp_path / "run"))
    assert student.config.sample_size == 16
    assert student.lindit_config["method"] == "edit"


def test_layerwise_attention_transfer_fits_the_replaced_layers_alone_and_lowers_their_error(tmp_path):
    data = tiny_dict("pixart", "edit")
    data["stages"] = [{"name": "attention transfer", "steps": 12, "lr": 5e-3, "resolution": 16,
                       "trainable": "attention", "feature_inputs": "teacher",
                       "loss": {"task": 0.0, "kd": 0.0, "feature": 1.0}}]
    teacher = build_teacher("pixart")
    t_state = teacher.state_dict()
    student = lindit.load(distill(parse_config(data), tmp_path / "run"))
    inside, others = _split(student)
    for name in others:  # every weight outside the replaced layers is still the teacher's
        assert torch.equal(student.state_dict()[name], t_state[name]), name
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    header, first, last = rows[0].split(","), rows[1].split(","), rows[-1].split(",")
    for term in ("task", "kd", "variance"):  # the feature term alone was computed
        assert all(row.split(",")[header.index(term)] == "" for row in rows[1:]), term
    col = header.index("feature")
    assert float(last[col]) < 0.5 * float(first[col]), (first[col], last[col])
