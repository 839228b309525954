"""Every family describes itself fully, and its example inputs run a forward of a tiny model of it."""

import dataclasses

import pytest
import torch

from lindit.integrations.diffusers.families import FAMILIES, PROMPT_ENCODINGS, family_named
from tiny_models import BUILDERS, CAPTION_CHANNELS, PROMPT_TOKENS

FIELDS = {f.name for f in dataclasses.fields(next(iter(FAMILIES.values())))}


def test_every_family_has_a_tiny_model_and_every_description_field():
    assert set(BUILDERS) == set(FAMILIES)
    for name, fam in FAMILIES.items():
        assert fam.name == name
        assert {f.name for f in dataclasses.fields(fam)} == FIELDS
        assert fam.prompt_encoding in PROMPT_ENCODINGS and fam.timesteps in ("discrete", "continuous")
        assert fam.kind in ("self", "joint") and fam.vae_factor > 0 and fam.size_multiple > 0
        assert fam.pipeline_class().__name__ == fam.pipeline
        assert (fam.prompt_tokens == 0) == fam.class_conditional


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_example_inputs_run_a_forward_of_a_tiny_model(name):
    fam, model = FAMILIES[name], BUILDERS[name]()
    tokens = 0 if fam.class_conditional else PROMPT_TOKENS
    hw = (8, 8) if fam.square_only else (6, 10)
    inputs = fam.example_inputs(model.config, hw, batch=2, prompt_tokens=tokens,
                                generator=torch.Generator().manual_seed(3), dtype=torch.float32)
    assert inputs["hidden_states"].shape == (2, 4, *hw) and inputs["timestep"].shape == (2,)
    with torch.no_grad():
        out = model(**inputs, **fam.static_kwargs, return_dict=False)[0]
    assert out.shape[-2:] == hw and torch.isfinite(out).all()
    again = fam.example_inputs(model.config, hw, batch=2, prompt_tokens=tokens,
                               generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(inputs[k], again[k]) for k in inputs), "same generator seed, same inputs"


def test_example_inputs_fixed_values_conditions_and_dtype():
    fam, model = FAMILIES["sd3"], BUILDERS["sd3"]()
    fixed = fam.example_inputs(model.config, (4, 4), prompt_tokens=PROMPT_TOKENS, timestep=500,
                               dtype=torch.bfloat16)
    assert fixed["timestep"].tolist() == [500] and fixed["hidden_states"].dtype == torch.bfloat16
    assert fixed["encoder_hidden_states"].shape == (1, PROMPT_TOKENS, CAPTION_CHANNELS)
    assert fam.example_inputs(model.config, (4, 4))["encoder_hidden_states"].shape[1] == fam.prompt_tokens
    embeds, pooled = torch.zeros(1, 3, CAPTION_CHANNELS), torch.zeros(1, 10)
    given = fam.example_inputs(model.config, (4, 4), conditions=fam.text_conditions(embeds, None, pooled))
    assert torch.equal(given["encoder_hidden_states"], embeds) and torch.equal(given["pooled_projections"], pooled)
    dit = FAMILIES["dit"]
    assert dit.example_inputs(BUILDERS["dit"]().config, (4, 4), class_label=7)["class_labels"].tolist() == [7]
    with pytest.raises(ValueError, match="class-conditional"):
        dit.text_conditions(embeds, None, pooled)


def test_trained_size_and_names():
    assert FAMILIES["pixart"].trained_size({"sample_size": 128}) == 1024
    assert FAMILIES["dit"].trained_size({"sample_size": 8}, vae_factor=4) == 32
    with pytest.warns(DeprecationWarning, match="'mmdit' is now called 'sd3'"):
        assert family_named("mmdit") is FAMILIES["sd3"]
    with pytest.raises(ValueError, match="unknown family 'x'; choose from pixart, sd3, dit"):
        family_named("x")
