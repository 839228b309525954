"""The recipes' loss terms against hand computations on tiny tensors: EDiT's task + KD + feature KD, LiT's
L_simple + lambda1 L_noise + lambda2 L_var (learned sigma), SD3's rectified flow for MM-EDiT. Every tensor
differs from every other, so a term that reads the wrong one gets a different number."""

import math
from pathlib import Path

import pytest
import torch
from diffusers import DDPMScheduler, FlowMatchEulerDiscreteScheduler
from tiny_models import BUILDERS, inputs
from training_helpers import tiny_config

import lindit
import lindit.training.loop as loop
from lindit.integrations.diffusers import converted_layers
from lindit.training import distill
from lindit.training.hooks import FeatureCapture
from lindit.training.config import RECIPES, NoiseConfig, load_config
from lindit.training.losses import (
    DDPMObjective, FlowObjective, NoisyBatch, feature_loss, loss_terms, mse, split_output, total_loss,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
ALL = {"task": 1.0, "kd": 1.0, "feature": 1.0, "variance": 1.0}


def _grid(values, shape):
    return torch.tensor(values, dtype=torch.float32).view(shape)


def _mean_sq(a, b, w=None):
    """sum over elements of w (a - b)^2 / count, element by element in Python floats."""
    a, b = a.flatten().tolist(), b.flatten().tolist()
    w = [1.0] * len(a) if w is None else w
    return sum(wi * (x - y) ** 2 for x, y, wi in zip(a, b, w)) / len(a)


# B = 1, in_channels 2, learned sigma: 4 output channels on a 1 x 2 latent
S_OUT = _grid([1, 2, 3, 4, 5, 6, 7, 8], (1, 4, 1, 2))  # prediction [1 2 3 4], variance [5 6 7 8]
T_OUT = _grid([0, 2, 5, 4, 9, 6, 7, 1], (1, 4, 1, 2))  # prediction [0 2 5 4], variance [9 6 7 1]
TARGET = _grid([1, 0, 0, 1], (1, 2, 1, 2))


def test_split_output_gives_prediction_then_variance_channels():
    pred, var = split_output(S_OUT, 2)
    assert pred.flatten().tolist() == [1, 2, 3, 4] and var.flatten().tolist() == [5, 6, 7, 8]
    pred, var = split_output(TARGET, 2)  # out_channels = in_channels: no learned sigma
    assert pred is TARGET and var is None


def test_mse_is_the_mean_over_every_element_with_optional_weights():
    assert mse(S_OUT[:, :2], TARGET).item() == pytest.approx((0 + 4 + 9 + 9) / 4)
    weights = _grid([2.0], (1, 1, 1, 1))  # per-sample weighting (B, 1, 1, 1), as SD3's
    assert mse(S_OUT[:, :2], TARGET, weights).item() == pytest.approx(2 * 22 / 4)


def test_lit_terms_equal_the_hand_computation():
    """LiT Eq. 7: L_simple (prediction vs the noise), L_noise (vs the teacher's prediction), L_var (variance
    channels vs the teacher's), each averaged over B C H W (alpha = 1 / BCHW)."""
    terms = loss_terms(ALL | {"feature": 0.0}, NoisyBatch(None, None, TARGET), S_OUT, 2, T_OUT)
    assert set(terms) == {"task", "kd", "variance"}
    assert terms["task"].item() == pytest.approx((0 + 4 + 9 + 9) / 4)  # [1 2 3 4] - [1 0 0 1]
    assert terms["kd"].item() == pytest.approx((1 + 0 + 4 + 0) / 4)  # [1 2 3 4] - [0 2 5 4]
    assert terms["variance"].item() == pytest.approx((16 + 0 + 0 + 49) / 4)  # [5 6 7 8] - [9 6 7 1]
    weights = dict(RECIPES["lit"].__dict__)
    assert total_loss(weights, terms).item() == pytest.approx(22 / 4 + 0.5 * 5 / 4 + 0.05 * 65 / 4)


def test_task_term_uses_the_objectives_weighting():
    """SD3 rectified flow: the task term is the weighted MSE (per-sample weights from the timestep density)."""
    pred, target = _grid([1, 2, 3, 4, 5, 6, 7, 8], (2, 2, 1, 2)), _grid([0, 0, 1, 1, 2, 2, 3, 3], (2, 2, 1, 2))
    weighting = _grid([0.5, 3.0], (2, 1, 1, 1))
    terms = loss_terms({"task": 1.0, "kd": 0.0, "feature": 0.0, "variance": 0.0},
                       NoisyBatch(None, None, target, weighting), pred, 2)
    assert set(terms) == {"task"}
    expected = _mean_sq(pred, target, [0.5] * 4 + [3.0] * 4)  # sample 0: 0.5, sample 1: 3
    assert terms["task"].item() == pytest.approx(expected)


def test_terms_with_zero_weight_are_not_computed_and_variance_needs_learned_sigma():
    terms = loss_terms({"task": 0.0, "kd": 1.0, "feature": 0.0, "variance": 0.0}, NoisyBatch(None, None, TARGET),
                       S_OUT, 2, T_OUT)
    assert set(terms) == {"kd"}
    with pytest.raises(ValueError, match="learned-sigma"):
        loss_terms(ALL | {"feature": 0.0}, NoisyBatch(None, None, TARGET), TARGET, 2, TARGET)


def test_feature_term_averages_layers_and_each_layers_outputs():
    """EDiT's feature distillation: per layer the MSE of each output both models produce (joint layers:
    image and prompt tokens; SD3's last block has no prompt output), then the mean over layers."""
    s = {"a": (_grid([1, 2], (1, 2, 1)), _grid([0, 0], (1, 2, 1))), "b": (_grid([3, 3], (1, 2, 1)), None)}
    t = {"a": (_grid([0, 2], (1, 2, 1)), _grid([2, 0], (1, 2, 1))), "b": (_grid([1, 3], (1, 2, 1)), None)}
    layer_a = ((1 + 0) / 2 + (4 + 0) / 2) / 2  # image and prompt outputs
    layer_b = (4 + 0) / 2
    assert feature_loss(s, t).item() == pytest.approx((layer_a + layer_b) / 2)
    terms = loss_terms({"task": 0.0, "kd": 0.0, "feature": 1.0, "variance": 0.0}, NoisyBatch(None, None, TARGET),
                       S_OUT, 2, None, s, t)
    assert terms["feature"].item() == pytest.approx((layer_a + layer_b) / 2)
    with pytest.raises(ValueError, match="layer b produced no comparable output"):
        feature_loss({"b": (None,)}, {"b": (None,)})


def test_rectified_flow_noises_linearly_and_targets_noise_minus_data():
    """SD3 (MM-EDiT's task loss): x_t = (1 - sigma) x_0 + sigma eps and target eps - x_0, sigma the shifted
    schedule's value at the drawn timestep; weights from the density (sigma_sqrt: sigma^-2)."""
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    objective = FlowObjective(scheduler, NoiseConfig(weighting_scheme="sigma_sqrt"))
    x0 = torch.randn(3, 2, 2, 3, generator=torch.Generator().manual_seed(1))
    batch = objective(x0, torch.Generator().manual_seed(2))
    noise = batch.target + x0  # target = eps - x_0
    for i in range(3):
        step = int((scheduler.timesteps == batch.timesteps[i]).nonzero()[0, 0])
        sigma = float(scheduler.sigmas[step])
        torch.testing.assert_close(batch.noisy[i], (1 - sigma) * x0[i] + sigma * noise[i])
        assert batch.weighting[i].item() == pytest.approx(sigma**-2, rel=1e-5)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_ddpm_noising_and_targets(prediction):
    """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps; target eps (DDPM's L_simple) or
    v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0."""
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    x0 = torch.randn(3, 2, 2, 3, generator=torch.Generator().manual_seed(1))
    batch = DDPMObjective(scheduler, prediction)(x0, torch.Generator().manual_seed(2))
    for i in range(3):
        abar = float(scheduler.alphas_cumprod[batch.timesteps[i]])
        eps = (batch.noisy[i] - math.sqrt(abar) * x0[i]) / math.sqrt(1 - abar)
        expected = eps if prediction == "epsilon" else math.sqrt(abar) * eps - math.sqrt(1 - abar) * x0[i]
        torch.testing.assert_close(batch.target[i], expected, rtol=1e-4, atol=1e-4)
    assert batch.weighting is None


def test_recipe_weights_follow_the_papers():
    """LiT Eq. 7 with lambda1 = 0.5, lambda2 = 0.05 (ImageNet 256, Sec. 4.1) and 1.0 / 0.05 for PixArt-Sigma
    (Sec. 4.3); EDiT and MM-EDiT: task + KD + feature KD (LinFusion's 0.5 / 0.5)."""
    assert RECIPES["lit"].__dict__ == {"task": 1.0, "kd": 0.5, "feature": 0.0, "variance": 0.05,
                                        "guidance": 0.0}
    assert RECIPES["edit"].__dict__ == RECIPES["mm_edit"].__dict__ == {"task": 1.0, "kd": 0.5, "feature": 0.5,
                                                                        "variance": 0.0, "guidance": 0.0}
    pixart = load_config(CONFIGS / "lit-pixart-sigma.yaml")
    assert all(s.loss.__dict__ == {"task": 1.0, "kd": 1.0, "feature": 0.0, "variance": 0.05,
                                           "guidance": 0.0} for s in pixart.stages)
    dit = load_config(CONFIGS / "lit-dit-xl-2-256.yaml")
    assert all(s.loss.__dict__ == RECIPES["lit"].__dict__ for s in dit.stages)


def test_the_loop_hands_student_and_teacher_tensors_to_their_places(tmp_path, monkeypatch):
    """In a real step, loss_terms gets the student's output (with gradients) as the student's, the frozen
    teacher's output as the teacher's, and feature dicts of the same layers from each."""
    seen = []

    def spy(weights, batch, s_out, in_channels, t_out=None, s_feats=None, t_feats=None):
        seen.append((batch, s_out, t_out, s_feats, t_feats))
        return loss_terms(weights, batch, s_out, in_channels, t_out, s_feats, t_feats)

    monkeypatch.setattr(loop, "loss_terms", spy)
    distill(tiny_config("pixart", "edit", steps=1), tmp_path / "run")
    batch, s_out, t_out, s_feats, t_feats = seen[0]
    assert s_out.requires_grad and not t_out.requires_grad and s_out.shape == t_out.shape
    assert s_out.shape[1] == 2 * batch.target.shape[1]  # learned sigma: prediction + variance channels
    assert not torch.allclose(s_out, t_out) and not torch.allclose(split_output(t_out, 3)[0], batch.target)
    assert s_feats.keys() == t_feats.keys() and len(s_feats) == 2
    assert all(f[0].requires_grad for f in s_feats.values()) and not any(f[0].requires_grad for f in t_feats.values())


def test_feature_capture_records_each_layers_output():
    """The feature term compares what each replaced layer returns (not, e.g., what it was given)."""
    student = lindit.convert(BUILDERS["sd3"](), "mm_edit")
    names = list(converted_layers(student, attention_only=True))
    modules, returned = dict(student.named_modules()), {}
    handles = [modules[n].register_forward_hook(lambda m, a, out, n=n: returned.__setitem__(n, out)) for n in names]
    with FeatureCapture(student, names) as cap, cap.recording() as feats:
        student(**inputs("sd3", 8, 8))
    for handle in handles:
        handle.remove()
    for name in names:
        out = returned[name] if isinstance(returned[name], tuple) else (returned[name],)
        assert len(feats[name]) == len(out) and all(f is o for f, o in zip(feats[name], out)), name
