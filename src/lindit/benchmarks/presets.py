"""The published model sizes the benchmark times, with random weights (latency does not depend on values).

Configs are those of the released checkpoints: PixArt-Sigma XL/2 1024px, Stable Diffusion 3.5 Medium and
DiT-XL/2 (ImageNet, class-conditional, learned variance).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers import DiTTransformer2DModel, PixArtTransformer2DModel, SD3Transformer2DModel

from ..integrations.diffusers.families import FAMILIES


@dataclass(frozen=True)
class Preset:
    name: str
    family: str
    model_class: type
    config: dict = field(repr=False)
    methods: tuple[str, ...]  # "teacher" is the unconverted model
    prompt_tokens: int = 0  # prompt length (channels, pooled size and latent channels come from config)

    @property
    def vae_factor(self) -> int:
        """px per latent pixel (the family's published VAE)."""
        return FAMILIES[self.family].vae_factor

    def inputs(self, height: int, width: int, device, dtype) -> dict:
        """Keyword arguments of one forward at a latent of height x width (batch 1)."""
        fam = FAMILIES[self.family]
        tensors = fam.example_inputs(self.config, (height, width), 1, self.prompt_tokens, timestep=500, class_label=207,
                                     generator=torch.Generator().manual_seed(0), dtype=dtype, device=device)
        return {**tensors, **fam.static_kwargs}


PRESETS = {
    "pixart-sigma": Preset(
        "pixart-sigma", "pixart", PixArtTransformer2DModel,
        dict(num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8, num_layers=28,
             cross_attention_dim=1152, caption_channels=4096, sample_size=128, patch_size=2,
             use_additional_conditions=False, interpolation_scale=2),
        ("teacher", "kv_compress", "sana", "linfusion", "lit", "edit"),
        prompt_tokens=300),
    "sd35-medium": Preset(
        "sd35-medium", "sd3", SD3Transformer2DModel,
        dict(sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64,
             num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
             pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=384,
             dual_attention_layers=tuple(range(13)), qk_norm="rms_norm"),
        ("teacher", "sana_mmdit", "linear_mmdit_alpha", "mm_edit"),
        prompt_tokens=333),
    "dit-xl-2": Preset(
        "dit-xl-2", "dit", DiTTransformer2DModel,
        dict(num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8, num_layers=28,
             sample_size=32, patch_size=2, num_embeds_ada_norm=1000),
        ("teacher", "lit")),
}

# EDiT Table 3: one transformer forward on an NVIDIA A100, seconds, at 1024 / 2048 / 4096 / 8192 px.
PAPER_A100 = {
    "pixart-sigma": {"teacher": (0.047, 0.387, 4.770, 72.96), "sana": (0.043, 0.166, 0.687, 21.76),
                     "edit": (0.034, 0.121, 0.461, 1.693)},
    "sd35-medium": {"teacher": (0.071, 0.474, 5.603, None), "sana_mmdit": (0.069, 0.228, 0.861, None),
                    "mm_edit": (0.053, 0.169, 0.623, None)},
}
PAPER_RESOLUTIONS = (1024, 2048, 4096, 8192)
