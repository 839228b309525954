"""diffusers' attention-processor API on teachers and students: it lists and sets the diffusers Attention
layers a student has left, and refuses to pretend for the layers lindit replaced."""

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0, JointAttnProcessor2_0

from diffusers_cases import ATOL, CASES, attention_names, cases, converted_names

WITH_PROCESSORS = [c for c in CASES if c.family != "dit"]  # DiTTransformer2DModel has no processor API (0.42)
PROCESSOR = {"pixart": AttnProcessor2_0, "sd3": JointAttnProcessor2_0}


@pytest.mark.parametrize("case", cases(WITH_PROCESSORS))
def test_attn_processors_lists_the_diffusers_attention_layers_left(case):
    model = case.build()
    names = {f"{name}.processor" for name in attention_names(model)}
    assert set(model.attn_processors) == names
    assert not {f"{name}.processor" for name in converted_names(model)} & names
    # PixArt students keep the cross-attention (attn2); SD3 students convert every joint attention and
    # SD3.5's image self-attention, so nothing is left
    assert bool(names) == (case.family == "pixart" or not case.is_student)
    assert {type(p) for p in model.attn_processors.values()} <= {AttnProcessor2_0, JointAttnProcessor2_0}
    model.set_attn_processor({name: PROCESSOR[case.family]() for name in names})  # a dict naming exactly those


@pytest.mark.parametrize("case", cases([c for c in WITH_PROCESSORS if c.is_student]))
def test_a_processor_for_a_converted_layer_is_an_error(case):
    model = case.build()
    converted = f"{converted_names(model)[-1]}.processor"
    processors = {name: PROCESSOR[case.family]() for name in model.attn_processors}
    with pytest.raises(ValueError, match=rf"{converted} is a lindit {case.method} layer, not a diffusers Attention"):
        model.set_attn_processor({**processors, converted: PROCESSOR[case.family]()})
    if not processors:  # nothing left: one processor for all layers would be set on none
        with pytest.raises(ValueError, match="no diffusers Attention left"):
            model.set_attn_processor(PROCESSOR[case.family]())


@pytest.mark.parametrize("case", cases([c for c in CASES if c.family == "pixart"]))
def test_set_default_attn_processor_acts_on_what_is_left(case):
    """As diffusers' own check: the default (AttnProcessor) and SDPA (AttnProcessor2_0) give the same outputs."""
    model = case.build()
    expected = case.run(model)
    converted = {name: model.get_submodule(name) for name in converted_names(model)}
    model.set_default_attn_processor()
    assert {type(p) for p in model.attn_processors.values()} == {AttnProcessor}
    torch.testing.assert_close(case.run(model), expected, rtol=0, atol=ATOL)
    model.set_attn_processor(AttnProcessor2_0())
    assert {type(p) for p in model.attn_processors.values()} == {AttnProcessor2_0}
    torch.testing.assert_close(case.run(model), expected, rtol=0, atol=ATOL)
    assert all(model.get_submodule(name) is layer for name, layer in converted.items())  # untouched
