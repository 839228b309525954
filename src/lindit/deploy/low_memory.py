"""``lindit generate --low-memory``: one large component in memory at a time, and a tiled VAE decode.

diffusers' ``enable_sequential_cpu_offload`` / ``enable_model_cpu_offload`` move weights between CPU and
an accelerator; without one (this machine) they refuse to run ("requires accelerator"), and on a CPU
every weight is already in RAM, so offloading to RAM saves nothing. What lowers the peak here is never
holding two large components at once:

1. prompts: load the pipeline without transformer and VAE, encode the prompts, free the text encoders;
2. denoise: load the transformer (and the VAE, small next to it) and run the sampler to latents;
3. decode: free the transformer, decode the latents with the VAE in overlapping tiles.

The peak is then max(text encoders, transformer + activations, VAE + tiled decode) instead of their sum,
and the decode no longer holds full-resolution feature maps. With an accelerator the pipeline is
loaded normally and diffusers' sequential offload is used instead. DiT has no text encoder and samples
at 256-512 px, so it only gets the tiled decode.
"""

from __future__ import annotations

import ctypes
import gc
import json
from pathlib import Path

import torch

from ..integrations.diffusers.families import FAMILIES, family_by_class_name, vae_factor_of

TEXT_PREFIXES = ("text_encoder", "tokenizer")


def release_memory() -> None:
    """Collect garbage and hand freed heap memory back to the OS (glibc), so the resident set drops."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: memory is still reusable by this process, just not returned


def _pixart_prompts(pipe, req) -> dict:
    embeds, mask, neg, neg_mask = pipe.encode_prompt(
        req.prompts, do_classifier_free_guidance=req.guidance > 1.0, negative_prompt=req.negative_prompt or "",
        num_images_per_prompt=1, device=pipe.device)
    return {"prompt_embeds": embeds, "prompt_attention_mask": mask, "negative_prompt_embeds": neg,
            "negative_prompt_attention_mask": neg_mask, "negative_prompt": None}


def _sd3_prompts(pipe, req) -> dict:
    # StableDiffusion3Pipeline does not repeat given embeddings per image: repeat them while encoding
    embeds, neg, pooled, neg_pooled = pipe.encode_prompt(
        req.prompts, None, None, device=pipe.device, num_images_per_prompt=req.batch,
        do_classifier_free_guidance=req.guidance > 1.0, negative_prompt=req.negative_prompt)
    return {"prompt_embeds": embeds, "negative_prompt_embeds": neg, "pooled_prompt_embeds": pooled,
            "negative_pooled_prompt_embeds": neg_pooled, "num_images_per_prompt": 1}


# Family.prompt_encoding -> the pipeline's encoding (DiT: class labels, nothing to encode)
PROMPT_ENCODERS = {"t5": _pixart_prompts, "clip_t5": _sd3_prompts}


class StagedGeneration:
    """Generates like ``lindit.generate.run`` with a pipeline folder ``base``, loading stage by stage."""

    def __init__(self, model: str, base: str | None, dtype: torch.dtype, device: torch.device,
                 text_int8: bool = False):
        if base is None or not (Path(base) / "model_index.json").is_file():
            raise ValueError("--low-memory loads the pipeline component by component: pass --base naming a "
                             "diffusers pipeline folder (with model_index.json)")

        self.model, self.base, self.dtype, self.device = model, str(base), dtype, device
        self.text_int8 = text_int8
        index = json.loads((Path(base) / "model_index.json").read_text())
        self.index = index
        self.pipeline_class = index["_class_name"]
        fam = family_by_class_name(index["transformer"][1])
        self.family, self.encoding = fam.name, fam.prompt_encoding
        self.text_components = [k for k, v in index.items() if k.startswith(TEXT_PREFIXES) and v[0]]
        if self.encoding in PROMPT_ENCODERS and not self.text_components:
            raise ValueError(f"{base} has no text encoder; --low-memory encodes the prompts with it")
        self.method = "teacher"

    def _cls(self):
        import diffusers

        return getattr(diffusers, self.pipeline_class)

    def default_size(self) -> int:
        """The model's trained size in px, read from the configs without loading weights."""
        own = Path(self.model) / "config.json"  # a lindit or diffusers model folder; else the base's teacher
        config = own if own.is_file() else Path(self.base) / "transformer" / "config.json"
        vae = json.loads((Path(self.base) / "vae" / "config.json").read_text())
        return FAMILIES[self.family].trained_size(json.loads(config.read_text()), vae_factor_of(vae))

    def __call__(self, req) -> list:
        """PIL images for ``req`` (a ``lindit.generate.Request``)."""
        if self.device.type != "cpu":
            return self._offloaded(req)
        prompts = self._encode(req)
        release_memory()
        latents, pipe = self._denoise(req, prompts)
        release_memory()
        return decode(pipe, latents)

    def _encode(self, req) -> dict | None:
        if self.encoding not in PROMPT_ENCODERS:
            return None
        encoders = self._int8_text_encoders() if self.text_int8 else {}
        pipe = self._cls().from_pretrained(self.base, transformer=None, vae=None, dtype=self.dtype, **encoders)
        with torch.no_grad():
            return PROMPT_ENCODERS[self.encoding](pipe, req)

    def _int8_text_encoders(self) -> dict:
        """The pipeline's transformers text encoders with int8 weights (LiT's 8-bit text encoder)."""
        import transformers

        from .text_encoders import load_int8_encoder

        encoders = {}
        for name in self.text_components:
            library, class_name = self.index[name]
            if name.startswith("text_encoder") and library == "transformers":
                encoders[name] = load_int8_encoder(getattr(transformers, class_name), Path(self.base) / name,
                                                   self.dtype)
        return encoders

    def _denoise(self, req, prompts: dict | None):
        from ..generate import run
        from ..models import load_model

        transformer = load_model(self.model, dtype=self.dtype)
        self.method = (getattr(transformer, "lindit_config", None) or {}).get("method", "teacher")
        without_text = {name: None for name in self.text_components} if prompts is not None else {}
        pipe = self._cls().from_pretrained(self.base, transformer=transformer, dtype=self.dtype, **without_text)
        del transformer
        encode = None if prompts is None else (lambda _prompts, _negative, _batch: prompts)  # run()'s signature
        latents_only = {} if prompts is None else {"output_type": "latent"}  # DiTPipeline always decodes
        latents = run(pipe, req, encode, tiled_vae=True, **latents_only)
        pipe.transformer = None  # the decode stage runs without it
        return latents, pipe

    def _offloaded(self, req) -> list:
        from ..generate import pipeline, run

        pipe = pipeline(self.model, base=self.base, dtype=self.dtype, device="cpu")
        self.method = (getattr(pipe.transformer, "lindit_config", None) or {}).get("method", "teacher")
        pipe.enable_sequential_cpu_offload(device=self.device)
        return run(pipe, req, tiled_vae=True)


def decode(pipe, latents) -> list:
    """Latents (B, C, h, w) -> PIL images with the pipeline's VAE in tiles; DiT's sampler decodes itself."""
    if not torch.is_tensor(latents):
        return latents
    vae = pipe.vae
    vae.enable_tiling()
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    with torch.no_grad():
        image = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor + shift, return_dict=False)[0]
    return pipe.image_processor.postprocess(image, output_type="pil")
