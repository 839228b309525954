"""LoRA training of a student (model.lora + trainable: lora): adapters and new branches train, nothing else."""

import pytest
import torch
from safetensors.torch import load_file
from training_helpers import build_teacher, tiny_dict

import lindit
from lindit.integrations.diffusers import converted_layers
from lindit.training import distill, parse_config


def _lora_run(tmp_path):
    data = tiny_dict("pixart", "edit", steps=6)
    data["model"]["convert"] = {"inherit": "qkvo"}
    data["model"]["lora"] = {"rank": 4}
    data["stages"][0].update(trainable="lora", lr=5e-3)
    return lindit.load(distill(parse_config(data), tmp_path / "run")), tmp_path / "run"


def test_lora_training_saves_the_adapter_and_a_student_with_it_merged(tmp_path):
    student, run = _lora_run(tmp_path)
    teacher = build_teacher("pixart").state_dict()
    state = student.state_dict()
    assert not any("lora" in k or "base_layer" in k for k in state)  # a plain student
    adapter = load_file(str(run / "lora" / "pytorch_lora_weights.safetensors"))
    targets = {k.split(".lora_")[0] for k in adapter}
    layers = converted_layers(student, attention_only=True)
    assert targets == {f"{n}.{p}" for n in layers for p in ("to_q", "to_k", "to_v", "to_out.0")}
    for target in targets:  # merged: the frozen teacher projection plus B @ A (alpha = rank: scale 1)
        delta = adapter[f"{target}.lora_B.weight"] @ adapter[f"{target}.lora_A.weight"]
        assert delta.abs().max() > 0, target
        torch.testing.assert_close(state[f"{target}.weight"], teacher[f"{target}.weight"] + delta)
        assert torch.equal(state[f"{target}.bias"], teacher[f"{target}.bias"]), target
    inside = {f"{n}.{k}" for n, layer in layers.items() for k in layer.state_dict()}
    for name, value in state.items():
        if name not in inside:  # everything outside the converted layers is the teacher's
            assert torch.equal(value, teacher[name]), name
    branch = state["transformer_blocks.0.attn1.conv_fusion_q.conv1x1.weight"]
    assert branch.abs().max() > 0  # zeroed at conversion (inherit q), trained with the adapters


def test_trainable_lora_needs_model_lora():
    data = tiny_dict("pixart", "edit")
    data["stages"][0]["trainable"] = "lora"
    with pytest.raises(ValueError, match=r"stages\[0\].trainable: lora needs model.lora"):
        parse_config(data)
