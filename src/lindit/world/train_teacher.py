"""Train a built-in tiny teacher from scratch on the shapes world (the command is ``lindit train-teacher``).

The teacher learns the base model's own objective: DDPM noise prediction (v) plus iDDPM's L_vlb on the learned
variance channels (PixArt, DiT), or rectified flow with SD3's logit-normal timesteps (MM-DiT). Weights
are the EMA of the training weights. The folder gets diffusers' ``config.json`` and
``diffusion_pytorch_model.safetensors`` and ``train_settings.json`` with every setting, the command, the
final losses and the time taken.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from diffusers import DDPMScheduler, FlowMatchEulerDiscreteScheduler
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from ..integrations.diffusers.families import FAMILIES
from ..io import atomic_dir, write_json
from ..training.config import NoiseConfig
from ..training.losses import DDPMObjective, FlowObjective, learned_range_vlb, mse, split_output
from .teachers import SETTINGS_NAME, TeacherSettings, build_teacher, settings_of, teacher_dir


def world_data(settings: TeacherSettings, n: int | None = None) -> tuple[torch.Tensor, list]:
    """(images (N, 3, S, S) in [-1, 1], conditions: captions or class ids) of the teacher's training set."""
    from .shapes import ShapesClassDataset, ShapesDataset

    n = settings.dataset_size if n is None else n
    if settings.conditioning == "labels":
        data = ShapesClassDataset(n, seed=settings.seed, size=settings.size)
        items = [data[i] for i in tqdm(range(n), desc="rendering the shapes world", leave=False)]
    else:
        data = ShapesDataset(n, seed=settings.seed, size=settings.size, max_objects=settings.max_objects)
        items = [data[i][:2] for i in tqdm(range(n), desc="rendering the shapes world", leave=False)]
    images, conds = zip(*items)
    return torch.stack(images), list(conds)


@torch.no_grad()
def world_latents(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior (mean, std) of each image's scaled latents (N, 4, S/4, S/4), encoded as the trainer does."""
    from ..training.encoders import VAEImages
    from .autoencoder import load_world_autoencoder

    encode = VAEImages(load_world_autoencoder(), torch.device("cpu"))
    parts = [encode(x) for x in images.split(512)]
    return torch.cat([p["mean"] for p in parts]), torch.cat([p["std"] for p in parts])


class Conditioner:
    """Conditions of a batch, with dropout to the null condition ("" or the null class) for guidance."""

    def __init__(self, settings: TeacherSettings):
        self.settings = settings
        if settings.conditioning == "builtin":
            from .text import TextEncoder

            self.encoder = TextEncoder.builtin()

    def __call__(self, conds: list, generator: torch.Generator) -> dict[str, torch.Tensor]:
        drop = torch.rand(len(conds), generator=generator) < self.settings.caption_dropout  # (B,)
        if self.settings.conditioning == "labels":
            null = self.settings.config["num_embeds_ada_norm"]
            return {"class_labels": torch.tensor([null if d else c for c, d in zip(conds, drop.tolist())])}
        texts = ["" if d else c for c, d in zip(conds, drop.tolist())]
        embeds, mask, pooled = self.encoder.encode(texts)  # (B, L, D), (B, L), (B, P)
        fam = FAMILIES[self.settings.family]
        return {**fam.text_conditions(embeds, mask, pooled), **fam.static_kwargs}


def objective_of(settings: TeacherSettings):
    spec = {k: v for k, v in settings.scheduler.items() if k != "class"}
    if settings.objective == "flow":
        return FlowObjective(FlowMatchEulerDiscreteScheduler(**spec), NoiseConfig())
    ddpm = {k: v for k, v in spec.items() if k in _DDPM_KEYS}
    return DDPMObjective(DDPMScheduler(**ddpm), ddpm.get("prediction_type", "epsilon"))


_DDPM_KEYS = ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "prediction_type")


def teacher_loss(model, objective, settings: TeacherSettings, x0, cond, generator) -> dict[str, torch.Tensor]:
    """The base model's loss on one batch: {"task": ..., "vlb": ... (learned-sigma models)}."""
    noisy = objective(x0, generator)
    out = model(hidden_states=noisy.noisy, timestep=noisy.timesteps, return_dict=False, **cond)[0]
    pred, variance = split_output(out, x0.shape[1])
    terms = {"task": mse(pred, noisy.target, noisy.weighting)}
    if variance is not None and settings.vlb_weight > 0:
        eps = _epsilon(objective, noisy, pred)
        terms["vlb"] = learned_range_vlb(objective.scheduler, x0, noisy.noisy, noisy.timesteps, eps, variance)
    return terms


def _epsilon(objective, noisy, pred: torch.Tensor) -> torch.Tensor:
    """The model's epsilon estimate: its prediction, or for v-prediction sqrt(ac) v + sqrt(1 - ac) x_t."""
    if objective.prediction_type == "epsilon":
        return pred
    ac = objective.scheduler.alphas_cumprod.to(pred.device)[noisy.timesteps].view(-1, 1, 1, 1)  # (B, 1, 1, 1)
    return ac.sqrt() * pred + (1 - ac).sqrt() * noisy.noisy


def train_teacher(name: str, out: str | Path | None = None, steps: int | None = None, overwrite: bool = False,
                  command: str | None = None) -> Path:
    """Train built-in teacher ``name`` and write it to ``out`` (default: the package's assets)."""
    settings = settings_of(name)
    if steps is not None:
        if steps <= 0:
            raise ValueError(f"steps must be positive, got {steps}")
        settings.steps = steps
    out = Path(out) if out is not None else teacher_dir(name)
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    model = build_teacher(settings).train()
    if FAMILIES[settings.family].class_conditional:
        from ..training.student import disable_label_dropout

        disable_label_dropout(model)  # labels are dropped here, seeded, to the null class
    images, conds = world_data(settings)
    means, stds = world_latents(images)  # (N, C, h, w) each
    conditioner, objective = Conditioner(settings), objective_of(settings)
    ema = EMAModel(model.parameters(), decay=settings.ema_decay, use_ema_warmup=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=0.0)
    schedule = get_scheduler("cosine", optimizer, num_warmup_steps=settings.warmup_steps,
                             num_training_steps=settings.steps)
    start, recent = time.perf_counter(), {}
    bar = tqdm(range(settings.steps), desc=f"train-teacher {name}")
    for step in bar:
        idx = torch.randint(len(images), (settings.batch_size,), generator=generator)
        cond = conditioner([conds[i] for i in idx.tolist()], generator)
        x0 = means[idx] + stds[idx] * torch.randn(means[idx].shape, generator=generator)  # (B, C, h, w)
        terms = teacher_loss(model, objective, settings, x0, cond, generator)
        loss = terms["task"] + settings.vlb_weight * terms.get("vlb", 0.0)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"train-teacher {name}: loss became {loss.item()} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        ema.step(model.parameters())
        recent = {k: 0.98 * recent.get(k, v.item()) + 0.02 * v.item() for k, v in terms.items()}
        bar.set_postfix({k: f"{v:.4f}" for k, v in recent.items()}, refresh=False)
    ema.copy_to(model.parameters())
    record = {**settings.as_dict(), "command": command or f"lindit train-teacher {name}",
              "final_losses_smoothed": {k: round(v, 5) for k, v in recent.items()},
              "train_seconds": round(time.perf_counter() - start, 1), "torch": torch.__version__,
              "parameters": sum(p.numel() for p in model.parameters())}
    with atomic_dir(out, overwrite=overwrite or out == teacher_dir(name)) as tmp:
        model.eval().to(getattr(torch, settings.weights_dtype)).save_pretrained(tmp, safe_serialization=True)
        write_json(Path(tmp) / SETTINGS_NAME, record)
    size = (out / "diffusion_pytorch_model.safetensors").stat().st_size
    print(f"wrote {out} ({record['parameters']:,} parameters, {size / 2**20:.2f} MB, "
          f"{record['train_seconds']:.0f} s)")
    return out
