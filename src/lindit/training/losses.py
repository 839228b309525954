"""Noise objectives (the base model's own) and the loss terms of the recipes.

* ``DDPMObjective``: PixArt-Sigma and DiT, epsilon (or v) prediction on the DDPM schedule of the base model.
* ``FlowObjective``: SD3 rectified flow, as diffusers' SD3 training example: timesteps drawn from a
  logit-normal density over the scheduler's (shifted) schedule, x_t = (1 - sigma) x_0 + sigma noise,
  target noise - x_0.

Loss terms (all MSE in float32, averaged over every element):
  task      student prediction vs the objective's target (EDiT's noise loss, LiT's L_simple)
  kd        student prediction vs teacher prediction (EDiT's knowledge distillation, LiT's L_noise)
  variance  student vs teacher learned-variance channels (LiT's L_var; learned-sigma models only)
  feature   each replaced attention layer's output, student vs teacher, averaged over layers (EDiT)
  guidance  the guidance direction, prediction(prompt) - prediction(null prompt), student vs teacher: the
            part of the prediction that classifier-free guidance scales up, a few percent of the
            prediction's energy, so kd alone leaves it far off (docs/DIAGNOSIS.md). Each sample of the
            batch then also runs with the null prompt (``with_null_pairs``): twice the forwards per step.
For learned-sigma models (PixArt, DiT: out_channels = 2 * in_channels) the first half of the output channels
is the prediction and the second half the variance.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import DDPMScheduler, FlowMatchEulerDiscreteScheduler
from diffusers.training_utils import compute_density_for_timestep_sampling, compute_loss_weighting_for_sd3

from .config import NoiseConfig

TERMS = ("task", "kd", "feature", "variance", "guidance")


@dataclass
class NoisyBatch:
    noisy: torch.Tensor  # (B, C, H, W) model input
    timesteps: torch.Tensor  # (B,) what the model's timestep embedding expects
    target: torch.Tensor  # (B, C, H, W)
    weighting: torch.Tensor | None = None  # (B, 1, 1, 1) per-sample loss weights, or None


class DDPMObjective:
    """Epsilon or v prediction with uniformly drawn timesteps of a DDPM schedule."""

    def __init__(self, scheduler: DDPMScheduler, prediction_type: str = "epsilon"):
        if prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"DDPM objective: unsupported prediction type {prediction_type!r}")
        self.scheduler = scheduler
        self.prediction_type = prediction_type

    def __call__(self, latents: torch.Tensor, generator: torch.Generator) -> NoisyBatch:
        """latents (B, C, H, W) -> noisy latents, timesteps in [0, T), target."""
        b = latents.shape[0]
        noise = torch.randn(latents.shape, generator=generator).to(latents)  # (B, C, H, W)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (b,), generator=generator).to(latents.device)
        noisy = self.scheduler.add_noise(latents, noise, t)  # (B, C, H, W)
        target = noise if self.prediction_type == "epsilon" else self.scheduler.get_velocity(latents, noise, t)
        return NoisyBatch(noisy, t, target)


class FlowObjective:
    """Rectified flow with SD3's timestep density (diffusers' ``train_dreambooth_sd3.py``)."""

    def __init__(self, scheduler: FlowMatchEulerDiscreteScheduler, noise: NoiseConfig):
        self.scheduler = scheduler
        self.noise = noise

    def __call__(self, latents: torch.Tensor, generator: torch.Generator) -> NoisyBatch:
        b, n = latents.shape[0], latents.ndim
        noise = torch.randn(latents.shape, generator=generator).to(latents)  # (B, C, H, W)
        u = compute_density_for_timestep_sampling(
            self.noise.weighting_scheme, b, self.noise.logit_mean, self.noise.logit_std, self.noise.mode_scale,
            generator=generator)  # (B,) in [0, 1]
        idx = (u * self.scheduler.config.num_train_timesteps).long().clamp(max=len(self.scheduler.timesteps) - 1)
        timesteps = self.scheduler.timesteps[idx].to(latents.device)  # (B,) shifted schedule, in [0, 1000]
        sigmas = self.scheduler.sigmas[idx].to(latents).view(b, *([1] * (n - 1)))  # (B, 1, 1, 1)
        noisy = (1.0 - sigmas) * latents + sigmas * noise  # (B, C, H, W)
        weighting = compute_loss_weighting_for_sd3(self.noise.weighting_scheme, sigmas)
        return NoisyBatch(noisy, timesteps, noise - latents, weighting)


def make_objective(kind: str, scheduler_config: dict, noise: NoiseConfig):
    """The objective ``kind`` (epsilon, v_prediction, flow) on a scheduler built from ``scheduler_config``."""
    if kind == "flow":
        return FlowObjective(FlowMatchEulerDiscreteScheduler.from_config(scheduler_config), noise)
    return DDPMObjective(DDPMScheduler.from_config(scheduler_config), kind)


def with_null_pairs(batch: NoisyBatch, cond: dict, null: dict) -> tuple[NoisyBatch, dict]:
    """The batch twice: its samples as they are, then the same noisy samples with the null conditioning,
    so that predictions [:B] - [B:] are the guidance direction. cond: key -> (B, ...); null: key -> (1, ...)."""
    twice = lambda t: None if t is None else torch.cat([t, t])  # noqa: E731
    paired = NoisyBatch(twice(batch.noisy), twice(batch.timesteps), twice(batch.target), twice(batch.weighting))
    both = {k: torch.cat([v, null[k].to(v.device, v.dtype).expand_as(v)]) for k, v in cond.items()}
    return paired, both


def split_output(output: torch.Tensor, in_channels: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Model output (B, C_out, H, W) -> prediction (B, C_in, H, W), variance channels or None."""
    if output.shape[1] == 2 * in_channels:  # learned sigma: PixArt, DiT
        return output[:, :in_channels], output[:, in_channels:]
    return output, None


def mse(a: torch.Tensor, b: torch.Tensor, weighting: torch.Tensor | None = None) -> torch.Tensor:
    err = (a.float() - b.float()) ** 2
    return (err if weighting is None else weighting.float() * err).mean()


def feature_loss(student: dict, teacher: dict) -> torch.Tensor:
    """Mean over layers of the MSE between same-named layer outputs (tuples: every element both produce)."""
    losses = []
    for name, s_out in student.items():
        pairs = [(s, t) for s, t in zip(s_out, teacher[name]) if s is not None and t is not None]
        if not pairs:
            raise ValueError(f"feature distillation: layer {name} produced no comparable output")
        losses.append(sum(mse(s, t) for s, t in pairs) / len(pairs))
    return torch.stack(losses).mean()


def loss_terms(weights: dict[str, float], batch: NoisyBatch, s_out: torch.Tensor, in_channels: int,
               t_out: torch.Tensor | None = None, s_feats: dict | None = None,
               t_feats: dict | None = None) -> dict[str, torch.Tensor]:  # fmt: skip
    """The loss terms with a non-zero weight (unweighted), from model outputs (B, C_out, H, W)."""
    s_pred, s_var = split_output(s_out, in_channels)
    terms = {}
    if weights["task"] > 0:
        terms["task"] = mse(s_pred, batch.target, batch.weighting)
    if weights["kd"] > 0 or weights["variance"] > 0:
        t_pred, t_var = split_output(t_out, in_channels)
        if weights["kd"] > 0:
            terms["kd"] = mse(s_pred, t_pred)
        if weights["variance"] > 0:
            if s_var is None or t_var is None:
                raise ValueError("loss.variance > 0 needs learned-sigma models (out_channels = 2 * in_channels)")
            terms["variance"] = mse(s_var, t_var)
    if weights["feature"] > 0:
        terms["feature"] = feature_loss(s_feats, t_feats)
    if weights.get("guidance", 0) > 0:  # batches from with_null_pairs: prompt half, then null half
        t_pred = split_output(t_out, in_channels)[0]
        b = s_pred.shape[0] // 2
        terms["guidance"] = mse(s_pred[:b] - s_pred[b:], t_pred[:b] - t_pred[b:])
    return terms


def total_loss(weights: dict[str, float], terms: dict[str, torch.Tensor]) -> torch.Tensor:
    return sum(weights[name] * value for name, value in terms.items())


def learned_range_vlb(scheduler: DDPMScheduler, x0: torch.Tensor, noisy: torch.Tensor, t: torch.Tensor,
                      eps: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    """iDDPM's L_vlb term for a learned-range variance head (as DiT trains its sigma channels), in bits.

    KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) per element, averaged, where p's log variance interpolates
    log beta_t and the clipped log posterior variance by (variance + 1) / 2 (diffusers' ``learned_range``)
    and p's mean comes from the detached epsilon, so this term trains only the variance channels. At t = 0
    it uses the same Gaussian KL instead of iDDPM's discretised decoder likelihood (pixels here are not
    8-bit bins). x0, noisy, eps, variance: (B, C, H, W); t: (B,) integer timesteps.
    """
    ac = scheduler.alphas_cumprod.to(x0.device, torch.float32)  # (T,)
    ac_prev = torch.cat([ac.new_ones(1), ac[:-1]])  # (T,)
    betas = scheduler.betas.to(x0.device, torch.float32)  # (T,)
    post_var = betas * (1 - ac_prev) / (1 - ac)  # (T,)
    post_log_var = torch.log(torch.cat([post_var[1:2], post_var[1:]]))  # (T,) clipped at t = 0
    view = lambda a: a[t].view(-1, *([1] * (x0.ndim - 1)))  # noqa: E731  (T,) -> (B, 1, 1, 1)
    coef_x0 = view(betas * ac_prev.sqrt() / (1 - ac))
    coef_xt = view((1 - ac_prev) * (1 - betas).sqrt() / (1 - ac))
    x0, noisy, eps = x0.float(), noisy.float(), eps.detach().float()
    x0_pred = (noisy - view((1 - ac).sqrt()) * eps) / view(ac.sqrt())
    true_mean, model_mean = coef_x0 * x0 + coef_xt * noisy, coef_x0 * x0_pred + coef_xt * noisy
    frac = (variance.float() + 1) / 2
    model_log_var = frac * view(betas.log()) + (1 - frac) * view(post_log_var)
    true_log_var = view(post_log_var)
    kl = 0.5 * (-1.0 + model_log_var - true_log_var + torch.exp(true_log_var - model_log_var)
                + (true_mean - model_mean) ** 2 * torch.exp(-model_log_var))
    return kl.mean() / torch.log(torch.tensor(2.0))
