"""Tiny random-initialised models of the real diffusers classes, and inputs for them (no downloads)."""

import torch
from diffusers import DiTTransformer2DModel, PixArtTransformer2DModel, SD3Transformer2DModel

CAPTION_CHANNELS, PROMPT_TOKENS, POOLED = 12, 5, 10


def tiny_pixart(seed=0, layers=2):
    torch.manual_seed(seed)
    return PixArtTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=layers,
        cross_attention_dim=16, sample_size=8, patch_size=2, caption_channels=CAPTION_CHANNELS,
        use_additional_conditions=False,
    ).eval()


def tiny_sd3(seed=0, layers=3):
    torch.manual_seed(seed)
    return SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=4, num_layers=layers, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=CAPTION_CHANNELS, caption_projection_dim=16, pooled_projection_dim=POOLED,
        out_channels=4, pos_embed_max_size=32, dual_attention_layers=(0,), qk_norm="rms_norm",
    ).eval()


def tiny_dit(seed=0, layers=2):
    torch.manual_seed(seed)
    return DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=layers,
        sample_size=8, patch_size=2, num_embeds_ada_norm=10,
    ).eval()


BUILDERS = {"pixart": tiny_pixart, "sd3": tiny_sd3, "dit": tiny_dit}


def inputs(family, height, width, batch=2, seed=1):
    """Keyword arguments of one forward at a latent of height x width."""
    g = torch.Generator().manual_seed(seed)
    latent = torch.randn(batch, 4, height, width, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    if family == "pixart":
        text = torch.randn(batch, PROMPT_TOKENS, CAPTION_CHANNELS, generator=g)
        return dict(hidden_states=latent, encoder_hidden_states=text, timestep=t,
                    added_cond_kwargs={"resolution": None, "aspect_ratio": None})
    if family == "sd3":
        text = torch.randn(batch, PROMPT_TOKENS, CAPTION_CHANNELS, generator=g)
        return dict(hidden_states=latent, encoder_hidden_states=text, timestep=t,
                    pooled_projections=torch.randn(batch, POOLED, generator=g))
    return dict(hidden_states=latent, timestep=t, class_labels=torch.randint(0, 10, (batch,), generator=g))


def forward(model, family, height, width, **kw):
    with torch.no_grad():
        return model(**inputs(family, height, width, **kw), return_dict=False)[0]


def tiny_vae(shift_factor=None):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    extra = {} if shift_factor is None else {"shift_factor": shift_factor}
    return AutoencoderKL(block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8,
                         sample_size=16, **extra)
