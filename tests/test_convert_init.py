"""Converter options of issue 22: keep_softmax (blocks left as the teacher's) and LiT's value conv starting at
zero when the values are inherited."""

import pytest
import torch

from lindit.integrations.diffusers import convert
from tests.tiny_models import forward, tiny_dit, tiny_sd3


def test_keep_softmax_leaves_the_named_blocks_as_the_teachers_counting_from_the_end():
    teacher = tiny_sd3(layers=3)
    student = convert(teacher, "mm_edit", keep_softmax=[-1])
    assert student.lindit_config["layers"] == [0, 1]
    assert "keep_softmax" not in student.lindit_config["options"]  # the plan records the blocks converted
    t_state, s_state = teacher.state_dict(), student.state_dict()
    last = [k for k in t_state if k.startswith("transformer_blocks.2.attn.")]
    assert last and all(torch.equal(s_state[k], t_state[k]) for k in last)  # still the teacher's attention
    assert convert(teacher, "mm_edit", layers=[0, 1], keep_softmax=[0]).lindit_config["layers"] == [1]
    with pytest.raises(ValueError, match=r"keep_softmax \[3\] out of range; the model has blocks 0-2 \(or -3 to -1\)"):
        convert(teacher, "mm_edit", keep_softmax=[3])
    with pytest.raises(ValueError, match="leaves no block to convert"):
        convert(teacher, "mm_edit", keep_softmax=[0, 1, -1])


def test_lit_value_conv_starts_at_zero_when_values_are_inherited():
    teacher = tiny_dit()
    with_conv = convert(teacher, "lit", heads=2, inherit="qkvo")
    without = convert(teacher, "lit", heads=2, inherit="qkvo", value_conv=None)
    torch.testing.assert_close(forward(with_conv, "dit", 8, 8), forward(without, "dit", 8, 8))
    torch.manual_seed(0)
    fresh_values = convert(teacher, "lit", heads=2, inherit="qk")  # values not inherited: the conv keeps its init
    torch.manual_seed(0)
    plain = convert(teacher, "lit", heads=2, inherit="qk", value_conv=None)
    assert not torch.allclose(forward(fresh_values, "dit", 8, 8), forward(plain, "dit", 8, 8), atol=1e-4)
