"""Feature hooks: one output per replaced layer per forward, for student and teacher; removed afterwards."""

import pytest
import torch
from tiny_models import BUILDERS, inputs

import lindit
from lindit.integrations.diffusers import converted_layers
from lindit.training.hooks import FeatureCapture, TeacherForcing, as_tuple

METHODS = {"pixart": "edit", "sd3": "mm_edit", "dit": "lit"}


def _hook_count(model, names):
    modules = dict(model.named_modules())
    return sum(len(modules[n]._forward_hooks) for n in names)


@pytest.mark.parametrize("family", list(METHODS))
def test_one_output_per_replaced_layer_for_student_and_teacher(family):
    teacher = BUILDERS[family]()
    student = lindit.convert(teacher, METHODS[family])
    names = list(converted_layers(student, attention_only=True))
    assert names and all(n in dict(teacher.named_modules()) for n in names)
    kwargs = inputs(family, 8, 8)
    with FeatureCapture(student, names) as s_cap, FeatureCapture(teacher, names) as t_cap:
        assert _hook_count(student, names) == len(names) and _hook_count(teacher, names) == len(names)
        with s_cap.recording() as s_feats:
            student(**kwargs)
        with torch.no_grad(), t_cap.recording() as t_feats:
            teacher(**kwargs)
        student(**kwargs)  # outside a recording nothing is kept
    assert list(s_feats) == names and list(t_feats) == names
    for name in names:
        s_out, t_out = s_feats[name], t_feats[name]
        assert s_out[0].shape == t_out[0].shape  # image tokens (B, N, C)
        assert s_out[0].requires_grad and not t_out[0].requires_grad
    assert _hook_count(student, names) == 0 and _hook_count(teacher, names) == 0


def test_sd3_joint_layers_yield_image_and_prompt_outputs_and_dual_attention_is_captured():
    teacher = BUILDERS["sd3"]()
    student = lindit.convert(teacher, "mm_edit")
    names = list(converted_layers(student, attention_only=True))
    assert "transformer_blocks.0.attn2" in names  # SD3.5's image-only self-attention (dual block)
    with FeatureCapture(student, names) as cap, cap.recording() as feats:
        student(**inputs("sd3", 8, 8))
    assert len(feats["transformer_blocks.0.attn"]) == 2 and feats["transformer_blocks.0.attn"][1] is not None
    assert feats["transformer_blocks.2.attn"][1] is None  # last block: context_pre_only, no prompt output


def test_gradient_checkpointing_reruns_do_not_add_outputs():
    student = lindit.convert(BUILDERS["pixart"](), "edit").train()
    student.enable_gradient_checkpointing()
    names = list(converted_layers(student, attention_only=True))
    seen = []
    with FeatureCapture(student, names) as cap:
        with cap.recording() as feats:
            out = student(**inputs("pixart", 8, 8))[0]
        out.mean().backward()  # re-runs every block; the hooks fire again but record nothing
        seen.append(len(feats))
    assert seen == [len(names)]


def test_a_layer_running_twice_in_one_forward_is_an_error():
    student = lindit.convert(BUILDERS["pixart"](), "edit")
    with FeatureCapture(student, list(converted_layers(student))) as cap:
        with pytest.raises(RuntimeError, match="ran twice"), cap.recording():
            student(**inputs("pixart", 8, 8))
            student(**inputs("pixart", 8, 8))


def test_hooks_are_removed_when_training_fails(tmp_path):
    student = lindit.convert(BUILDERS["pixart"](), "edit")
    names = list(converted_layers(student))
    with pytest.raises(ZeroDivisionError), FeatureCapture(student, names):
        raise ZeroDivisionError
    assert _hook_count(student, names) == 0


def test_distill_removes_its_feature_hooks_when_a_stage_ends(tmp_path, monkeypatch):
    from training_helpers import tiny_config

    import lindit.training.loop as loop

    made = []

    class Spy(FeatureCapture):
        def __init__(self, model, names, **kw):
            super().__init__(model, names, **kw)
            made.append(self)

    monkeypatch.setattr(loop, "FeatureCapture", Spy)
    loop.distill(tiny_config("pixart", "edit", steps=2), tmp_path / "run")
    assert len(made) == 2  # student and teacher
    for cap in made:
        assert cap.handles == [] and all(len(m._forward_hooks) == 0 for m in cap.modules.values())


@pytest.mark.parametrize("family", list(METHODS))
def test_teacher_forcing_runs_every_student_layer_on_its_teacher_layers_input(family):
    teacher = BUILDERS[family]()
    student = lindit.convert(teacher, METHODS[family])  # fresh attention weights: its hidden states drift
    names = list(converted_layers(student))
    kwargs = inputs(family, 8, 8)
    with FeatureCapture(teacher, names, inputs=True) as t_cap, FeatureCapture(student, names) as s_cap, \
            TeacherForcing(student, names) as forcing:  # fmt: skip
        with torch.no_grad(), t_cap.recording():
            teacher(**kwargs)
        recorded = t_cap.inputs
        forcing.feed(recorded)
        with torch.no_grad(), s_cap.recording() as forced:
            student(**kwargs)
    assert list(recorded) == names
    layers = dict(student.named_modules())
    with torch.no_grad():
        for name in names:  # the forward's layer outputs are the layers' outputs on the teacher's inputs
            args, kw = recorded[name]
            torch.testing.assert_close(forced[name][0], as_tuple(layers[name](*args, **kw))[0])
        with FeatureCapture(student, names) as cap, cap.recording() as own:  # hooks gone: own inputs again
            student(**kwargs)
    drifted = [n for n in names if not torch.allclose(own[n][0], forced[n][0])]
    assert drifted and names[0] not in drifted  # the first layer's input is the same in both models


def test_teacher_forcing_refuses_to_run_a_layer_nothing_was_fed_to():
    student = lindit.convert(BUILDERS["pixart"](), "edit")
    names = list(converted_layers(student))
    with TeacherForcing(student, names) as forcing:
        with pytest.raises(RuntimeError, match="ran before any teacher input was fed"):
            student(**inputs("pixart", 8, 8))
        with pytest.raises(ValueError, match=f"no teacher input recorded for layer {names[0]}"):
            forcing.feed({})
