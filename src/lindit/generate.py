"""Stock diffusers pipelines around lindit transformers, and image generation with them.

``pipeline(model, base=...)`` returns the family's own pipeline (PixArtSigmaPipeline,
StableDiffusion3Pipeline, DiTPipeline) with the transformer swapped in; nothing about sampling is
re-implemented here.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .integrations.diffusers.families import FAMILIES, family_by_class_name, family_of, vae_factor_of
from .errors import NonFiniteOutput
from .models import BUILTIN_PREFIX, load_model

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
    if base is None and (spec is None or not spec.startswith(BUILTIN_PREFIX)):
        raise ValueError(
            f"{spec or 'this model'} holds only the transformer; pass base= (--base) naming a pipeline folder "
            "with the VAE, scheduler and text encoders"
        )
    transformer = load_model(spec, device=device, dtype=dtype) if spec is not None else model
    family = family_of(transformer)
    if isinstance(base, str) and base.startswith(BUILTIN_PREFIX):  # e.g. a student of a built-in teacher
        from .world.teachers import builtin_pipeline, settings_of

        base_family = settings_of(base[len(BUILTIN_PREFIX):]).family
        _check_base_family(base, base_family, transformer)
        return builtin_pipeline(base[len(BUILTIN_PREFIX):], transformer=transformer, device=device, dtype=dtype)
    cls = family.pipeline_class()
    kwargs = {"dtype": dtype} if dtype is not None else {}
    if Path(base).exists():
        _check_base_folder(Path(base), transformer)
        pipe = cls.from_pretrained(str(base), transformer=transformer, **kwargs)
    else:
        from .hub import hub_access, is_hub_id

        if not is_hub_id(str(base)):
            raise FileNotFoundError(f"--base {base}: no such pipeline folder, and it is not a hub id (owner/name)")
        with hub_access(str(base), "base pipeline", "model_index.json"):
            pipe = cls.from_pretrained(str(base), transformer=transformer, **kwargs)
    return pipe.to(device)


def _check_base_folder(base: Path, transformer: nn.Module) -> None:
    import json

    index = base / "model_index.json"
    if not index.is_file():
        raise FileNotFoundError(f"--base {base} is not a diffusers pipeline folder (no model_index.json)")
    try:
        entry = json.loads(index.read_text()).get("transformer") or [None, None]
        base_family = family_by_class_name(str(entry[1])).name
    except (ValueError, AttributeError, IndexError, TypeError):
        raise ValueError(f"--base {base}: model_index.json names no transformer lindit knows "
                         f"({', '.join(f.pipeline for f in FAMILIES.values())} pipelines work)") from None
    _check_base_family(str(base), base_family, transformer)


def _check_base_family(base: str, base_family: str, transformer: nn.Module) -> None:
    family = family_of(transformer).name
    if base_family != family:
        raise ValueError(f"--base {base} is a {base_family} pipeline, but the model is a {family} transformer "
                         f"({type(transformer).__name__}); give the base pipeline of its own teacher")


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
    return vae_factor_of(pipe.vae.config) * int(pipe.transformer.config.patch_size)


def trained_size(pipe) -> int:
    """The pixel size the transformer was trained at: its latent sample size times the VAE factor."""
    return family_of(pipe.transformer).trained_size(pipe.transformer.config, vae_factor_of(pipe.vae.config))


def check_request(pipe, req: Request) -> None:
    m, why, fam = size_multiple(pipe), "VAE factor x patch size", family_of(pipe.transformer)
    if m % fam.size_multiple:  # e.g. PixArtSigmaPipeline.check_inputs asks for 8
        m, why = math.lcm(m, fam.size_multiple), f"{why} {m}, and {fam.pipeline}'s {fam.size_multiple}"
    for name, value in (("height", req.height), ("width", req.width)):
        if value <= 0 or value % m:
            lo, hi = max(m, value // m * m), (value // m + 1) * m
            raise ValueError(f"{name} {value} is not a positive multiple of {m} ({why}); try {lo} or {hi}")
    if req.steps <= 0:
        raise ValueError(f"steps must be positive, got {req.steps}")
    if req.batch <= 0:
        raise ValueError(f"batch must be positive, got {req.batch}")
    if not math.isfinite(req.guidance):
        raise ValueError(f"guidance must be a finite number, got {req.guidance}")
    if fam.square_only and req.height != req.width:
        raise ValueError(f"{fam.pipeline} samples square images only; got {req.height}x{req.width}")
    if fam.class_conditional:
        _check_class_request(pipe, req)
    elif not req.prompts:
        raise ValueError("pass --prompt")
    _check_memory(req)


def check_conditioning(family: str, req: Request) -> None:
    """Refuse what the pipeline would silently ignore: class labels for a text-to-image model, prompts for a
    class-conditional one (``run`` itself takes a Request holding both and uses the model's kind)."""
    labels = FAMILIES[family].class_conditional
    if labels and req.prompts:
        raise ValueError("DiT models are class-conditional: pass --class-label instead of --prompt")
    if not labels and req.class_labels:
        raise ValueError(f"a {family} model is text-to-image: --class-label applies to class-conditional (DiT) "
                         "models; pass --prompt")


def _check_class_request(pipe, req: Request) -> None:
    if not req.class_labels:
        raise ValueError("DiT models are class-conditional: pass --class-label")
    classes = int(pipe.transformer.config.num_embeds_ada_norm)
    if getattr(pipe, "lindit_builtin", None) is not None:  # the shapes world names fewer classes
        from .world.shapes import ShapesClassDataset

        classes = min(classes, ShapesClassDataset.num_classes)
    bad = [label for label in req.class_labels if not 0 <= label < classes]
    if bad:
        raise ValueError(f"class label {bad[0]} is out of range; valid: 0-{classes - 1}")


def _check_memory(req: Request) -> None:
    """Refuse a size whose decoded images alone (float32, then 8-bit) cannot fit in this machine's memory,
    before the pipeline allocates anything."""
    images = req.batch * max(1, len(req.prompts or req.class_labels or []))
    need = images * req.height * req.width * 3 * 5
    available = available_memory_bytes()
    if available is not None and need > available:
        raise ValueError(f"{req.height}x{req.width} px needs at least {need / 2**30:.1f} GiB for the decoded "
                         f"image{'s' * (images > 1)} alone, more than the {available / 2**30:.1f} GiB of memory "
                         "available; choose a smaller --height/--width")


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_finite(images, what: str = "images") -> None:
    """Refuse NaN or infinite pipeline output (a broken model would otherwise give black PNGs)."""
    if not hasattr(images, "dtype"):  # PIL images: already 8-bit
        return
    data = torch.as_tensor(images)
    if data.is_floating_point() and not torch.isfinite(data).all():
        bad = (~torch.isfinite(data.flatten(1))).any(1).sum().item() if data.dim() > 1 else 1
        raise NonFiniteOutput(f"the model produced NaN or infinite values in {bad} of {len(data)} {what}; nothing "
                              "was written. Its weights may be broken (a diverged training run?), or a float16 "
                              "run overflowed (try --dtype float32)")


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
    fam = family_of(pipe.transformer)
    pil = "output_type" not in pipe_kwargs  # made from numpy here, after the finiteness check
    pipe_kwargs = {"output_type": "np", **pipe_kwargs}
    if fam.class_conditional:
        labels = [label for label in req.class_labels for _ in range(req.batch)]
        with _dit_sample_size(pipe, req.height):
            images = pipe(class_labels=labels, guidance_scale=req.guidance, generator=generator,
                          num_inference_steps=req.steps, **pipe_kwargs).images
        check_finite(images, "latents" if pipe_kwargs["output_type"] == "latent" else "images")
        return pipe.numpy_to_pil(images) if pil else images
    kwargs = dict(height=req.height, width=req.width, num_inference_steps=req.steps, guidance_scale=req.guidance,
                  generator=generator, num_images_per_prompt=req.batch)
    if encode_prompts is not None:
        kwargs.update(encode_prompts(req.prompts, req.negative_prompt, req.batch))
    else:
        kwargs["prompt"] = req.prompts
        if req.negative_prompt is not None:
            kwargs["negative_prompt"] = req.negative_prompt
    kwargs.update(fam.pipeline_kwargs)  # PixArt: the user's size, not the nearest training bucket
    images = pipe(**kwargs, **pipe_kwargs).images
    check_finite(images, "latents" if pipe_kwargs["output_type"] == "latent" else "images")
    return pipe.numpy_to_pil(images) if pil else images
