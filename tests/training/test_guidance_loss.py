"""The guidance-direction loss: every sample also runs with the null prompt, and the student's
prediction(prompt) - prediction(null) is distilled from the teacher's."""

import math

import pytest
import torch
from training_helpers import tiny_config

from lindit.training import distill
from lindit.training.losses import NoisyBatch, loss_terms, with_null_pairs


def test_null_pairs_repeat_the_noisy_samples_with_the_null_conditioning():
    g = torch.Generator().manual_seed(0)
    batch = NoisyBatch(torch.randn(3, 4, 2, 2, generator=g), torch.tensor([5, 6, 7]), torch.randn(3, 4, 2, 2, generator=g))
    cond = {"encoder_hidden_states": torch.randn(3, 5, 8, generator=g), "pooled_projections": torch.randn(3, 8, generator=g)}
    null = {"encoder_hidden_states": torch.zeros(1, 5, 8), "pooled_projections": torch.ones(1, 8)}
    paired, both = with_null_pairs(batch, cond, null)
    assert torch.equal(paired.noisy[:3], batch.noisy) and torch.equal(paired.noisy[3:], batch.noisy)
    assert paired.timesteps.tolist() == [5, 6, 7, 5, 6, 7] and paired.weighting is None
    assert torch.equal(both["encoder_hidden_states"][:3], cond["encoder_hidden_states"])
    assert torch.equal(both["encoder_hidden_states"][3:], torch.zeros(3, 5, 8))
    assert torch.equal(both["pooled_projections"][3:], torch.ones(3, 8))


def test_guidance_term_compares_prompt_minus_null_of_student_and_teacher():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(6, 8, 2, 2, generator=g), torch.randn(6, 8, 2, 2, generator=g)  # learned sigma: 4 + 4
    batch = NoisyBatch(torch.zeros(6, 4, 2, 2), torch.zeros(6), torch.zeros(6, 4, 2, 2))
    weights = {"task": 0.0, "kd": 0.0, "feature": 0.0, "variance": 0.0, "guidance": 1.0}
    terms = loss_terms(weights, batch, s, 4, t)
    expected = ((s[:3, :4] - s[3:, :4]) - (t[:3, :4] - t[3:, :4])).pow(2).mean()
    assert set(terms) == {"guidance"} and torch.allclose(terms["guidance"], expected)
    shifted = s.clone()
    shifted[:, :4] += 0.7  # the same error with and without the prompt leaves the direction intact
    assert loss_terms(weights, batch, shifted, 4, t)["guidance"] == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.parametrize("family, recipe", [("sd3", "mm_edit"), ("dit", "lit")])
def test_a_stage_with_the_guidance_term_trains_it(family, recipe, tmp_path, read_metrics):
    cfg = tiny_config(family, recipe, steps=12, overrides=["stages[0].loss={task: 0.0, kd: 1.0, guidance: 4.0}"])
    rows = read_metrics(distill(cfg, tmp_path / "run"))
    values = [float(r["guidance"]) for r in rows]
    assert all(math.isfinite(v) and v > 0 for v in values)
    assert sum(values[-4:]) < sum(values[:4]), values
