"""The inputs a diagnosis runs teacher and students on: noisy latents of real training images at the
objective's own timesteps, each with its prompt (class) and with the null one.

The run's training config says where teacher, encoders, data and noise schedule come from, so a diagnosis
sees what distillation sees. For a built-in teacher the config is the demo's (the shapes world).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..training.components import Components, stage_data
from ..training.loop import model_inputs
from ..training.losses import NoisyBatch, split_output


@dataclass
class Probe:
    """One batch: noisy latents with their timesteps, and two conditionings of the same samples."""

    noisy: NoisyBatch
    cond: dict[str, torch.Tensor]  # the samples' own prompts (classes)
    null: dict[str, torch.Tensor]  # the empty prompt (null class), repeated per sample


def make_probes(comp: Components, n: int, batch_size: int = 16, seed: int = 0) -> list[Probe]:
    """``n`` samples (rounded down to whole batches, at least one) of the run's first stage's data."""
    data, bucket_of, null = stage_data(comp, comp.cfg.stages[0])
    null = null if null is not None else comp.encoders.null_condition()
    same = [i for i in range(len(data)) if bucket_of[i] == bucket_of[0]]  # one bucket: equal shapes
    n = max(batch_size, min(n, len(same)) // batch_size * batch_size)
    gen = torch.Generator().manual_seed(seed)
    probes = []
    for start in range(0, n, batch_size):
        items = [data[i] for i in same[start:start + batch_size]]
        moments, cond = _encode(comp, items)
        latents = moments["mean"] + moments["std"] * torch.randn(moments["mean"].shape, generator=gen)
        b = latents.shape[0]
        probes.append(Probe(comp.objective(latents, gen), cond,
                            {k: v.expand(b, *v.shape[1:]).clone() for k, v in null.items()}))
    return probes


def _encode(comp: Components, items: list[dict]) -> tuple[dict, dict]:
    """Latent moments {"mean", "std"} (B, C, h, w) and conditioning of raw or cached samples."""
    if "image" in items[0]:
        images = torch.stack([it["image"] for it in items])
        return comp.encoders.encode_images(images), comp.encoders.encode_prompts([it["prompt"] for it in items])
    stack = lambda key: torch.stack([it[key] for it in items])  # noqa: E731
    return ({k: stack(k) for k in ("mean", "std")},
            {k[len("cond."):]: stack(k) for k in items[0] if k.startswith("cond.")})


@torch.no_grad()
def run_model(comp: Components, model: nn.Module, probe: Probe, cond: dict) -> torch.Tensor:
    """The model's whole output (B, C_out, h, w) on a probe's noisy latents with conditioning ``cond``."""
    return model(**model_inputs(comp, model, probe.noisy, cond, torch.float32))[0]


def predict(comp: Components, model: nn.Module, probe: Probe, null: bool = False) -> torch.Tensor:
    """The model's prediction channels (B, C, h, w) on a probe (its variance channels left out)."""
    out = run_model(comp, model, probe, probe.null if null else probe.cond)
    return split_output(out.float(), comp.in_channels)[0]


def relative_error(student: torch.Tensor, teacher: torch.Tensor) -> float:
    """||s - t||^2 / ||t||^2 over every element (0: identical; 1: as far off as predicting zero)."""
    return float((student.float() - teacher.float()).pow(2).sum() / teacher.float().pow(2).sum().clamp_min(1e-30))

