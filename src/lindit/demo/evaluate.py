"""Quality and latency of one model of the built-in world, measured the same way for teacher and students.

Images come from the stock pipeline (``lindit.world.teachers.builtin_pipeline``) with the held-out prompts
(or class labels) and one seed, so teacher and students start from the same noise and their images can be
compared pixel by pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..eval.measure import time_call
from ..generate import Request, run
from ..integrations.diffusers.families import FAMILIES
from ..eval.quality import class_adherence
from ..world.detect import adherence
from ..world.fid import frechet_distance
from ..world.shapes import ShapesClassDataset, ShapesDataset
from ..world.teachers import builtin_pipeline, settings_of


@dataclass
class EvalSet:
    """Held-out conditions (captions or class ids), their labels, and real reference images for FID."""

    conditions: list  # captions (str) or class ids (int)
    labels: list  # list[WorldObject] per caption, or class ids
    reference: torch.Tensor  # (N, 3, S, S) in [-1, 1]

    @property
    def class_conditional(self) -> bool:
        return isinstance(self.conditions[0], int)


def eval_set(teacher: str, n: int, prompt_seed: int, reference_seed: int) -> EvalSet:
    """Prompts from one held-out stream of the world, FID reference images from another."""
    s = settings_of(teacher)
    if s.conditioning == "labels":
        classes = [ShapesClassDataset(n, seed=prompt_seed).scene(i)[1] for i in range(n)]
        ref = ShapesClassDataset(n, seed=reference_seed, size=s.size)
        return EvalSet(classes, classes, torch.stack([ref[i][0] for i in range(n)]))
    data = ShapesDataset(n, seed=prompt_seed, size=s.size, max_objects=s.max_objects)
    ref = ShapesDataset(n, seed=reference_seed, size=s.size, max_objects=s.max_objects)
    return EvalSet([data.caption(i) for i in range(n)], [data.label(i) for i in range(n)],
                   torch.stack([ref[i][0] for i in range(n)]))


def sample(teacher: str, model: nn.Module, evals: EvalSet, steps: int, guidance: float, seed: int,
           chunk: int = 250) -> torch.Tensor:
    """Images (N, 3, S, S) in [-1, 1] of ``model`` for every held-out condition. Chunk c uses seed + c, so
    the noise of an image depends only on its index, whatever the model."""
    pipe = builtin_pipeline(teacher, transformer=model)
    pipe.set_progress_bar_config(disable=True)
    size = settings_of(teacher).size
    out = []
    for c, start in enumerate(range(0, len(evals.conditions), chunk)):
        part = evals.conditions[start:start + chunk]
        req = Request(prompts=[] if evals.class_conditional else part, height=size, width=size, steps=steps,
                      guidance=guidance, seed=seed + c, class_labels=part if evals.class_conditional else None)
        images = run(pipe, req, getattr(pipe, "lindit_encode_prompts", None), output_type="pt")
        if not torch.is_tensor(images):  # DiTPipeline returns numpy (n, S, S, 3) for any non-PIL type
            images = torch.from_numpy(images).permute(0, 3, 1, 2)
        out.append(images.float() * 2 - 1)  # (n, 3, S, S): the pipelines return [0, 1]
    return torch.cat(out)


def quality(images: torch.Tensor, evals: EvalSet, teacher_images: torch.Tensor | None) -> dict[str, float]:
    """Classifier FID against the reference set, adherence in [0, 1], and agreement with the teacher."""
    return {**scores(images, evals), **agreement(images, teacher_images)}


def scores(images: torch.Tensor, evals: EvalSet) -> dict[str, float]:
    """Classifier FID against the reference set and adherence in [0, 1]."""
    fid = frechet_distance(evals.reference, images)
    score = class_adherence(images, evals.labels) if evals.class_conditional else adherence(images, evals.labels)
    return {"fid": round(fid, 3), "adherence": round(score, 4)}


def agreement(images: torch.Tensor, teacher_images: torch.Tensor | None) -> dict[str, float | None]:
    """MSE and PSNR on [0, 1] pixels against the teacher's images from the same noise."""
    if teacher_images is None:  # the teacher itself: agreement is trivially perfect. The chance level of
        # agreement is the MSE between its images of different prompts and noise (shifted by one).
        unpaired = ((images - images.roll(1, 0)) / 2).pow(2).mean().item()
        return {"mse_to_teacher": 0.0, "psnr_to_teacher": None, "mse_unpaired": round(unpaired, 6)}
    mse = ((images - teacher_images) / 2).pow(2).mean().item()
    return {"mse_to_teacher": round(mse, 6), "psnr_to_teacher": round(10 * math.log10(1 / max(mse, 1e-12)), 3)}


def forward_inputs(teacher: str, model: nn.Module, size: int) -> dict:
    """One-image transformer inputs at ``size`` px (latents of size / 4 px with the world's autoencoder)
    with a real prompt (or class)."""
    s = settings_of(teacher)
    fam = FAMILIES[s.family]
    side = size * s.latent_size // s.size  # (B, C, side, side)
    if fam.class_conditional:
        conditions = {"class_labels": torch.tensor([0])}
    else:
        from ..world.text import TextEncoder

        conditions = fam.text_conditions(*TextEncoder.builtin().encode(["a red circle at the center"]))
    inputs = fam.example_inputs(s.config, (side, side), timestep=500, conditions=conditions,
                                generator=torch.Generator().manual_seed(0))
    return {**inputs, **fam.static_kwargs, "return_dict": False}


@torch.no_grad()
def latency(teacher: str, model: nn.Module, sizes: tuple[int, ...]) -> dict[int, float]:
    """Median seconds of one transformer forward (batch 1) at each size in px."""
    times = {}
    for size in sizes:
        inputs = forward_inputs(teacher, model, size)
        times[size] = time_call(lambda: model(**inputs), torch.device("cpu"), warmup=2, repeats=15,
                                budget_s=3.0).median_s
    return times
