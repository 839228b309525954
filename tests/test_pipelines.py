"""Converted models inside the stock diffusers pipelines, called exactly as users call them."""

import torch
from diffusers import DDIMScheduler, DiTPipeline, DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler
from diffusers import PixArtSigmaPipeline, StableDiffusion3Pipeline

import lindit
from tiny_models import CAPTION_CHANNELS, POOLED, PROMPT_TOKENS, tiny_dit, tiny_pixart, tiny_sd3, tiny_vae


def _text(batch=1, seed=0):
    return torch.randn(batch, PROMPT_TOKENS, CAPTION_CHANNELS, generator=torch.Generator().manual_seed(seed))


def test_pixart_sigma_pipeline_runs_edit_at_a_non_square_size(tmp_path):
    lindit.save(lindit.convert(tiny_pixart(), "edit"), tmp_path / "edit")
    pipe = PixArtSigmaPipeline(tokenizer=None, text_encoder=None, vae=tiny_vae(),
                               transformer=lindit.load(tmp_path / "edit"), scheduler=DPMSolverMultistepScheduler())
    mask = torch.ones(1, PROMPT_TOKENS)
    images = pipe(prompt=None, prompt_embeds=_text(), prompt_attention_mask=mask, negative_prompt=None,
                  negative_prompt_embeds=_text(seed=1), negative_prompt_attention_mask=mask, height=24, width=40,
                  num_inference_steps=2, guidance_scale=2.0, use_resolution_binning=False, output_type="pt").images
    assert images.shape == (1, 3, 24, 40) and torch.isfinite(images).all()
    assert pipe.transformer.lindit_grid.hw == (6, 10)  # 24x40 px / VAE 2 / patch 2


def test_sd3_pipeline_runs_mm_edit_at_a_non_square_size():
    pipe = StableDiffusion3Pipeline(transformer=lindit.convert(tiny_sd3(), "mm_edit"),
                                    scheduler=FlowMatchEulerDiscreteScheduler(), vae=tiny_vae(shift_factor=0.0),
                                    text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None,
                                    text_encoder_3=None, tokenizer_3=None)
    images = pipe(prompt_embeds=_text(), pooled_prompt_embeds=torch.randn(1, POOLED),
                  negative_prompt_embeds=_text(seed=1), negative_pooled_prompt_embeds=torch.randn(1, POOLED),
                  height=40, width=24, num_inference_steps=2, guidance_scale=3.0, output_type="pt").images
    assert images.shape == (1, 3, 40, 24) and torch.isfinite(images).all()
    assert pipe.transformer.lindit_grid.hw == (10, 6)


def test_dit_pipeline_runs_lit():
    pipe = DiTPipeline(transformer=lindit.convert(tiny_dit(), "lit"), vae=tiny_vae(), scheduler=DDIMScheduler())
    images = pipe(class_labels=[1, 3], num_inference_steps=2, guidance_scale=1.0, output_type="np").images
    assert images.shape == (2, 16, 16, 3)  # DiTPipeline samples the model's square sample_size only
    assert pipe.transformer.lindit_grid.hw == (4, 4)
