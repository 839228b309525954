"""Stock diffusers pipelines around lindit transformers, and image generation with them.

``pipeline(model, base=...)`` returns the family's own pipeline (PixArtSigmaPipeline,
StableDiffusion3Pipeline, DiTPipeline) with the transformer swapped in; nothing about sampling is
re-implemented here.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .integrations.diffusers.families import family_of
from .models import BUILTIN_PREFIX, load_model

PIPELINES = {"pixart": "PixArtSigmaPipeline", "sd3": "StableDiffusion3Pipeline", "dit": "DiTPipeline"}


def _pipeline_class(family: str):
    import diffusers

    return getattr(diffusers, PIPELINES[family])


def pipeline(model: str | nn.Module, base: str | Path | None = None, dtype: torch.dtype | None = None,
             device: str | torch.device = "cpu"):
    """The stock diffusers pipeline of ``model``'s family with ``model`` as its transformer.

    model: a transformer or a model spec (``lindit.models.load_model``). base: a pipeline folder (or hub
    id) providing the VAE, scheduler and text encoders; not needed for ``builtin:`` models, which come
    with their own components; ``builtin:NAME`` gives the built-in world's components to another
    transformer (a student of that teacher).
    """
    spec = model if isinstance(model, str) else None
    if spec is not None and spec.startswith(BUILTIN_PREFIX) and base is None:
        from .world.teachers import builtin_pipeline

        return builtin_pipeline(spec[len(BUILTIN_PREFIX):], transformer=None, device=device, dtype=dtype)
    transformer = load_model(spec, device=device, dtype=dtype) if spec is not None else model
    if isinstance(base, str) and base.startswith(BUILTIN_PREFIX):  # e.g. a student of a built-in teacher
        from .world.teachers import builtin_pipeline

        return builtin_pipeline(base[len(BUILTIN_PREFIX):], transformer=transformer, device=device, dtype=dtype)
    if base is None:
        raise ValueError(
            f"{spec or 'this model'} holds only the transformer; pass base= (--base) naming a pipeline folder "
            "with the VAE, scheduler and text encoders"
        )
    if Path(base).exists() and not (Path(base) / "model_index.json").is_file():
        raise FileNotFoundError(f"--base {base} is not a diffusers pipeline folder (no model_index.json)")
    cls = _pipeline_class(family_of(transformer).name)
    kwargs = {"dtype": dtype} if dtype is not None else {}
    pipe = cls.from_pretrained(str(base), transformer=transformer, **kwargs)
    return pipe.to(device)


@dataclass
class Request:
    """One generation request (validated by ``check_request``)."""

    prompts: list[str]
    negative_prompt: str | None = None
    height: int = 1024
    width: int = 1024
    steps: int = 20
    guidance: float = 4.5
    seed: int = 0
    batch: int = 1
    class_labels: list[int] | None = None


def size_multiple(pipe) -> int:
    """Height and width must be multiples of the VAE factor times the patch size."""
    vae_factor = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    return vae_factor * int(pipe.transformer.config.patch_size)


def check_request(pipe, req: Request) -> None:
    m = size_multiple(pipe)
    for name, value in (("height", req.height), ("width", req.width)):
        if value <= 0 or value % m:
            lo, hi = max(m, value // m * m), (value // m + 1) * m
            raise ValueError(f"{name} {value} is not a positive multiple of {m} (VAE factor x patch size); "
                             f"try {lo} or {hi}")
    if req.steps <= 0:
        raise ValueError(f"steps must be positive, got {req.steps}")
    if req.batch <= 0:
        raise ValueError(f"batch must be positive, got {req.batch}")
    family = family_of(pipe.transformer).name
    if family == "dit" and req.height != req.width:
        raise ValueError(f"DiTPipeline samples square images only; got {req.height}x{req.width}")
    if family == "dit" and not req.class_labels:
        raise ValueError("DiT models are class-conditional: pass --class-label")
    if family != "dit" and not req.prompts:
        raise ValueError("pass --prompt")


@contextlib.contextmanager
def _dit_sample_size(pipe, height: int):
    """DiTPipeline reads the latent size from the transformer config: set it for this call only."""
    cfg = pipe.transformer.config
    old = cfg.sample_size
    pipe.transformer.register_to_config(sample_size=height // (size_multiple(pipe) // cfg.patch_size))
    try:
        yield
    finally:
        pipe.transformer.register_to_config(sample_size=old)


def run(pipe, req: Request, encode_prompts=None, tiled_vae: bool | None = None, **pipe_kwargs):
    """Generate PIL images for ``req``. ``encode_prompts(prompts, negative_prompt, batch) -> dict`` supplies
    the pipeline's embedding arguments
    for pipelines without text encoders (the built-in world). ``pipe_kwargs`` go to the pipeline call as
    they are (``output_type="latent"`` for a decode done later, as ``--low-memory`` does)."""
    check_request(pipe, req)
    if tiled_vae if tiled_vae is not None else max(req.height, req.width) > 2048:
        pipe.vae.enable_tiling()  # 4K / 8K decodes stay within memory
    generator = torch.Generator("cpu").manual_seed(req.seed)
    family = family_of(pipe.transformer).name
    if family == "dit":
        labels = [label for label in req.class_labels for _ in range(req.batch)]
        with _dit_sample_size(pipe, req.height):
            return pipe(class_labels=labels, guidance_scale=req.guidance, generator=generator,
                        num_inference_steps=req.steps, **pipe_kwargs).images
    kwargs = dict(height=req.height, width=req.width, num_inference_steps=req.steps, guidance_scale=req.guidance,
                  generator=generator, num_images_per_prompt=req.batch)
    if encode_prompts is not None:
        kwargs.update(encode_prompts(req.prompts, req.negative_prompt, req.batch))
    else:
        kwargs["prompt"] = req.prompts
        if req.negative_prompt is not None:
            kwargs["negative_prompt"] = req.negative_prompt
    if family == "pixart":
        kwargs["use_resolution_binning"] = False  # the user's size, not the nearest training bucket
    return pipe(**kwargs, **pipe_kwargs).images
