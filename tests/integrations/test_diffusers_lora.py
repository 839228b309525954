"""PEFT LoRA on teachers and students: diffusers' add_adapter / save_lora_adapter / load_lora_adapter round trip,
peft's inject_adapter_in_model, a teacher's LoRA in a student, and SD3 pipelines' load_lora_weights."""

import warnings

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors.torch import load_file

from diffusers_cases import ATOL, CASES, STUDENT_CASES, Case, cases, converted_names
from tiny_models import tiny_vae

PROJECTIONS = ["to_q", "to_k", "to_v", "to_out.0"]
NO_PEFT_MIXIN = pytest.mark.skip(reason="diffusers 0.42 gives PixArtTransformer2DModel and DiTTransformer2DModel no "
                                 "PeftAdapterMixin (no add_adapter); their lindit students have it")


def _config(targets=PROJECTIONS, **kw) -> LoraConfig:
    # lora_alpha != r: a load that lost the adapter's config would scale it differently
    return LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False, **kw)


def _adapter_outputs(model, names):
    """name -> that layer's output on the forward in progress, recorded by hooks."""
    outputs = {}
    for name in names:
        model.get_submodule(name).register_forward_hook(
            lambda _m, _a, out, name=name: outputs.__setitem__(name, out[0] if isinstance(out, tuple) else out))
    return outputs


@pytest.mark.parametrize("case", cases())
def test_inject_adapter_in_model_wraps_every_projection_and_each_one_acts(case):
    model = case.build()
    inject_adapter_in_model(_config(), model)
    wrapped = {name for name, m in model.named_modules() if isinstance(m, BaseTunerLayer)}
    layers = converted_names(model) if case.is_student else [n.rsplit(".", 1)[0] for n in wrapped if n.endswith("to_q")]
    assert {f"{layer}.{p}" for layer in layers for p in PROJECTIONS} <= wrapped
    outputs = _adapter_outputs(model, layers)
    tuners = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    case.run(model)
    with_lora = dict(outputs)
    for tuner in tuners:
        tuner.enable_adapters(False)
    case.run(model)
    for layer in layers:  # the adapters sit in every converted layer's computation
        assert not torch.allclose(with_lora[layer], outputs[layer]), layer


@pytest.mark.parametrize("case", cases(marks={"pixart-teacher": NO_PEFT_MIXIN, "dit-teacher": NO_PEFT_MIXIN}))
def test_add_adapter_save_and_load_round_trip(tmp_path, case):
    """diffusers' LoRA round trip: the reloaded adapter has the saved config (alpha included) and outputs."""
    model = case.build()
    plain = case.run(model)
    model.add_adapter(_config())
    config = model.peft_config["default"].to_dict()
    with_lora = case.run(model)
    assert not torch.allclose(with_lora, plain, atol=1e-4)
    model.save_lora_adapter(tmp_path)
    saved = load_file(str(tmp_path / "pytorch_lora_weights.safetensors"))
    model.unload_lora()
    assert not any(isinstance(m, BaseTunerLayer) for m in model.modules())
    assert torch.equal(case.run(model), plain)
    model.load_lora_adapter(tmp_path, prefix=None, use_safetensors=True)
    assert model.peft_config["default_0"].to_dict() == config
    retrieved = get_peft_model_state_dict(model, adapter_name="default_0")
    assert set(retrieved) == set(saved) and all(torch.equal(retrieved[k], v) for k, v in saved.items())
    torch.testing.assert_close(case.run(model), with_lora, rtol=0, atol=ATOL)
    with pytest.raises(ValueError, match="Adapter name foo not found"):
        model.save_lora_adapter(tmp_path / "x", adapter_name="foo")


# A teacher LoRA on the attention projections and the feed-forward (diffusers' SD3 LoRA scripts' names).
TEACHER_TARGETS = ["attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn.to_q", "attn.add_q_proj",
                   "attn.add_k_proj", "ff.net.0.proj"]
MISSING = {  # the teacher's target modules a student does not have (replaced by the method)
    "sana": {"transformer_blocks.0.ff.net.0.proj", "transformer_blocks.1.ff.net.0.proj"},
    "mm_edit": {"transformer_blocks.2.attn.add_q_proj"},  # SD3's last block: no prompt queries
}


def _teacher_lora_file(case: Case, folder):
    """A LoRA trained on (added to) the teacher, saved as pipelines save it ("transformer." keys + its config)."""
    teacher = case.build() if not case.is_student else Case(case.family).build()
    inject_adapter_in_model(_config(TEACHER_TARGETS), teacher)
    StableDiffusion3Pipeline.save_lora_weights(folder, transformer_lora_layers=get_peft_model_state_dict(teacher),
                                               transformer_lora_adapter_metadata=_config(TEACHER_TARGETS).to_dict())
    return teacher


@pytest.mark.parametrize("case", cases([c for c in STUDENT_CASES if c.method in ("edit", "sana", "mm_edit", "lit")]))
def test_a_teacher_lora_loads_where_its_targets_exist(tmp_path, case):
    teacher = _teacher_lora_file(case, tmp_path)
    student = case.build(inherit="qkvo")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        student.load_lora_adapter(tmp_path, adapter_name="style")  # prefix "transformer", as pipelines call it
    messages = [str(w.message) for w in record if "LoRA 'style'" in str(w.message)]
    missing = MISSING.get(case.method, set())
    if missing:
        assert len(messages) == 1 and f"{len(missing)} target module(s)" in messages[0]
        assert all(name in messages[0] for name in missing)
    else:
        assert not messages
    teacher_state = get_peft_model_state_dict(teacher)
    loaded = get_peft_model_state_dict(student, adapter_name="style")
    assert set(loaded) == {k for k in teacher_state if k.rsplit(".lora_", 1)[0] not in missing}
    assert all(torch.equal(v, teacher_state[k]) for k, v in loaded.items())
    assert student.peft_config["style"].lora_alpha == 8
    x = torch.randn(3, teacher.transformer_blocks[0].ff.net[0].proj.in_features)
    attention = "attn" if case.family == "sd3" else "attn1"
    for proj in ("to_q", "to_k"):  # inherited projections with the teacher's LoRA: the teacher's maps
        name = f"transformer_blocks.0.{attention}.{proj}"
        with torch.no_grad():
            torch.testing.assert_close(student.get_submodule(name)(x), teacher.get_submodule(name)(x))


def test_a_lora_with_no_target_in_the_student_is_an_error():
    student = Case("pixart", "sana").build()
    state = {"transformer_blocks.0.ff.net.0.proj.lora_A.weight": torch.zeros(4, 16),
             "transformer_blocks.0.ff.net.0.proj.lora_B.weight": torch.zeros(64, 4)}
    with pytest.raises(ValueError, match="none of the LoRA's 1 target modules exist"):
        student.load_lora_adapter(state, prefix=None)


def _sd3_pipeline(transformer):
    return StableDiffusion3Pipeline(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(),
                                    vae=tiny_vae(shift_factor=0.0), text_encoder=None, tokenizer=None,
                                    text_encoder_2=None, tokenizer_2=None, text_encoder_3=None, tokenizer_3=None)


@pytest.mark.parametrize("case", cases([c for c in CASES if c.family == "sd3" and c.method in (None, "mm_edit")]))
def test_sd3_pipeline_load_lora_weights(tmp_path, case):
    """The path of diffusers' SD3 LoRA scripts and users: pipe.load_lora_weights(folder) with its metadata."""
    teacher = _teacher_lora_file(case, tmp_path)
    pipe = _sd3_pipeline(case.build(inherit="qkvo") if case.is_student else case.build())
    pipe.load_lora_weights(tmp_path, adapter_name="style")
    config = pipe.transformer.peft_config["style"]
    assert config.lora_alpha == 8 and config.r == 4
    loaded = get_peft_model_state_dict(pipe.transformer, adapter_name="style")
    teacher_state = get_peft_model_state_dict(teacher)
    assert len(loaded) == len(teacher_state) - (2 if case.is_student else 0)
    assert all(torch.equal(v, teacher_state[k]) for k, v in loaded.items())
    plain = case.run(pipe.transformer)
    pipe.set_adapters("style", adapter_weights=0.0)
    assert not torch.allclose(case.run(pipe.transformer), plain)
