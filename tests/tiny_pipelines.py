"""Tiny complete pipeline folders (VAE, scheduler, tokenizer, text encoder) saved offline for tests."""

import torch
from diffusers import DDIMScheduler, DiTPipeline, DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler
from diffusers import PixArtSigmaPipeline, StableDiffusion3Pipeline

from tiny_models import CAPTION_CHANNELS, POOLED, tiny_dit, tiny_pixart, tiny_sd3, tiny_vae

WORDS = ["<pad>", "</s>", "<unk>", "a", "red", "blue", "circle", "square", "at", "the", "top", "left"]


def tiny_tokenizer(**kwargs):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   **kwargs)


def tiny_t5():
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    config = T5Config(vocab_size=len(WORDS), d_model=CAPTION_CHANNELS, d_kv=4, d_ff=16, num_layers=1, num_heads=2)
    return T5EncoderModel(config).eval()


def tiny_clip(hidden, projection, seed):
    """A CLIP text encoder with projection (SD3's text_encoder / text_encoder_2); prompts of up to 8 tokens."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    config = CLIPTextConfig(vocab_size=len(WORDS), hidden_size=hidden, intermediate_size=2 * hidden,
                            num_attention_heads=2, num_hidden_layers=1, max_position_embeddings=8,
                            projection_dim=projection, pad_token_id=0, bos_token_id=1, eos_token_id=1)
    return CLIPTextModelWithProjection(config).eval()


def save_pixart_pipeline(path):
    pipe = PixArtSigmaPipeline(tokenizer=tiny_tokenizer(), text_encoder=tiny_t5(), vae=tiny_vae(),
                               transformer=tiny_pixart(), scheduler=DPMSolverMultistepScheduler())
    pipe.save_pretrained(path)
    return path


def save_dit_pipeline(path):
    DiTPipeline(transformer=tiny_dit(), vae=tiny_vae(), scheduler=DDIMScheduler()).save_pretrained(path)
    return path


def save_sd3_pipeline(path):
    """StableDiffusion3Pipeline with two CLIP encoders (hidden 4 + 8 <= the T5 width 12, projections 4 + 6 =
    the transformer's pooled width) and T5; call it with max_sequence_length <= 8."""
    assert POOLED == 4 + 6 and CAPTION_CHANNELS >= 4 + 8
    pipe = StableDiffusion3Pipeline(
        transformer=tiny_sd3(), scheduler=FlowMatchEulerDiscreteScheduler(), vae=tiny_vae(shift_factor=0.0),
        text_encoder=tiny_clip(4, 4, seed=1), tokenizer=tiny_tokenizer(model_max_length=8),
        text_encoder_2=tiny_clip(8, 6, seed=2), tokenizer_2=tiny_tokenizer(model_max_length=8),
        text_encoder_3=tiny_t5(), tokenizer_3=tiny_tokenizer(model_max_length=8))
    pipe.save_pretrained(path)
    return path
