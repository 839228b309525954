"""Encoders: images -> latent moments, prompts -> the transformer's conditioning keyword arguments.

    enc = build_encoders(cfg.model, family, teacher_config, device, dtype)
    moments = enc.encode_images(images)      # images (B, 3, H, W) in [-1, 1] -> {"mean", "std"} (B, C, h, w)
    cond = enc.encode_prompts(captions)      # list[str] (or class ids) -> e.g. {"encoder_hidden_states", ...}
    null = enc.null_condition()              # the empty prompt / null class, batch 1 (caption dropout)

Latents are sampled at train time (mean + std * noise), as diffusers' examples do with a cached
``latent_dist``; moments are already shifted and scaled by the VAE's ``shift_factor``/``scaling_factor``.
Condition keys are the transformer's own forward arguments:
  PixArt: encoder_hidden_states (B, L, D), encoder_attention_mask (B, L)   (T5, 300 tokens)
  SD3:    encoder_hidden_states (B, L, D), pooled_projections (B, P)       (CLIP-L + CLIP-G + T5)
  DiT:    class_labels (B,)                                                 (null class = num_classes)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from ..integrations.diffusers.families import FAMILIES


class ImageEncoder(Protocol):
    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]: ...


class PromptEncoder(Protocol):
    def __call__(self, prompts: list) -> dict[str, torch.Tensor]: ...


@dataclass
class Encoders:
    images: ImageEncoder
    prompts: PromptEncoder
    null_prompt: object = ""  # what a dropped caption becomes: "" or the null class id

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.images(images)

    @torch.no_grad()
    def encode_prompts(self, prompts: list) -> dict[str, torch.Tensor]:
        return self.prompts(list(prompts))

    def null_condition(self) -> dict[str, torch.Tensor]:
        return self.encode_prompts([self.null_prompt])


class PixelImages:
    """No VAE: the images are the latents (pixel-space tiny models, in_channels 3)."""

    scale_factor = 1  # pixels per latent pixel

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"mean": images.float(), "std": torch.zeros_like(images, dtype=torch.float32)}


class VAEImages:
    """A diffusers AutoencoderKL: the posterior's mean and std, shifted and scaled for the transformer."""

    def __init__(self, vae, device: torch.device):
        self.vae = vae.to(device).eval().requires_grad_(False)
        self.scale = float(vae.config.scaling_factor)
        self.shift = float(getattr(vae.config, "shift_factor", None) or 0.0)
        self.scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)  # pixels per latent pixel
        self.device = device

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = images.to(self.device, self.vae.dtype)  # (B, 3, H, W)
        dist = self.vae.encode(x).latent_dist
        mean = (dist.mean.float() - self.shift) * self.scale  # (B, C, H/8, W/8)
        return {"mean": mean, "std": dist.std.float() * self.scale}


class LabelPrompts:
    """Class-conditional models (DiT): prompts are class ids; the null class is ``num_classes``."""

    def __init__(self, device: torch.device):
        self.device = device

    def __call__(self, prompts: list) -> dict[str, torch.Tensor]:
        return {"class_labels": torch.tensor([int(p) for p in prompts], dtype=torch.long, device=self.device)}


class PixArtPrompts:
    """PixArtSigmaPipeline.encode_prompt (T5): embeddings and attention mask."""

    def __init__(self, pipe, device: torch.device, max_length: int | None):
        self.pipe, self.device, self.max_length = pipe, device, max_length or 300

    def __call__(self, prompts: list) -> dict[str, torch.Tensor]:
        embeds, mask, _, _ = self.pipe.encode_prompt(
            prompts, do_classifier_free_guidance=False, device=self.device, max_sequence_length=self.max_length)
        return {"encoder_hidden_states": embeds, "encoder_attention_mask": mask}


class SD3Prompts:
    """StableDiffusion3Pipeline.encode_prompt (CLIP-L, CLIP-G, T5): token embeddings and pooled vector."""

    def __init__(self, pipe, device: torch.device, max_length: int | None):
        self.pipe, self.device, self.max_length = pipe, device, max_length or 256

    def __call__(self, prompts: list) -> dict[str, torch.Tensor]:
        embeds, _, pooled, _ = self.pipe.encode_prompt(
            prompts, None, None, device=self.device, do_classifier_free_guidance=False,
            max_sequence_length=self.max_length)
        return {"encoder_hidden_states": embeds, "pooled_projections": pooled}


class BuiltinPrompts:
    """The shapes world's tiny text encoder (lindit.world.text), shaped for PixArt or SD3 inputs."""

    def __init__(self, family: str, device: torch.device):
        from ..world.text import TextEncoder

        self.encoder = TextEncoder.builtin().to(device)
        self.family = FAMILIES[family]

    def __call__(self, prompts: list) -> dict[str, torch.Tensor]:
        embeds, mask, pooled = self.encoder.encode([str(p) for p in prompts])  # (B, L, D), (B, L), (B, P)
        return self.family.text_conditions(embeds, mask, pooled)


PIPELINE_PROMPTS = {"t5": PixArtPrompts, "clip_t5": SD3Prompts}  # Family.prompt_encoding -> its encoder


def conditioning_kind(requested: str, family: str) -> str:
    labels = FAMILIES[family].class_conditional
    if requested == "auto":
        return "labels" if labels else "pipeline"
    if (requested == "labels") != labels:
        raise ValueError(f"model.conditioning: {requested!r} does not fit a {family} model")
    return requested


def load_pipeline(base: str, family: str, dtype: torch.dtype):
    """The family's stock pipeline from ``base`` without its transformer (only VAE, encoders, scheduler)."""
    return FAMILIES[family].pipeline_class().from_pretrained(base, transformer=None, dtype=dtype)


def _images(vae: str, pipe, device: torch.device):
    if vae == "pipeline":
        return VAEImages(pipe.vae, device)
    if vae == "builtin":
        from ..world.autoencoder import load_world_autoencoder

        return VAEImages(load_world_autoencoder(), device)
    return PixelImages()


def build_encoders(model_cfg, family: str, num_classes: int | None, device: torch.device,
                   dtype: torch.dtype) -> Encoders:  # fmt: skip
    """Encoders for a run: pipeline VAE/text encoders from ``model.base``, or pixels / built-in / labels."""
    kind = conditioning_kind(model_cfg.conditioning, family)
    needs_pipe = model_cfg.vae == "pipeline" or kind == "pipeline"
    if needs_pipe and not model_cfg.base:
        raise ValueError("model.base (a diffusers pipeline folder) is needed for the VAE / text encoders; "
                         "or set model.vae: none and model.conditioning: builtin")
    pipe = load_pipeline(model_cfg.base, family, dtype) if needs_pipe else None
    if pipe is not None and pipe.vae is not None and pipe.vae.dtype != torch.float32:
        pipe.vae.to(torch.float32)  # the SDXL VAE overflows in fp16; it runs once per image anyway
    images = _images(model_cfg.vae, pipe, device)
    if kind == "labels":
        return Encoders(images, LabelPrompts(device), null_prompt=num_classes)
    if kind == "builtin":
        return Encoders(images, BuiltinPrompts(family, device))
    for name in ("text_encoder", "text_encoder_2", "text_encoder_3"):
        if getattr(pipe, name, None) is not None:
            getattr(pipe, name).to(device)
    prompts = PIPELINE_PROMPTS[FAMILIES[family].prompt_encoding](pipe, device, model_cfg.max_sequence_length)
    return Encoders(images, prompts)
