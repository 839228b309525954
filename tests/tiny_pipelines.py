"""Tiny complete pipeline folders (VAE, scheduler, tokenizer, text encoder) saved offline for tests."""

import torch
from diffusers import DDIMScheduler, DiTPipeline, DPMSolverMultistepScheduler, PixArtSigmaPipeline

from tiny_models import CAPTION_CHANNELS, tiny_dit, tiny_pixart, tiny_vae

WORDS = ["<pad>", "</s>", "<unk>", "a", "red", "blue", "circle", "square", "at", "the", "top", "left"]


def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def tiny_t5():
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    config = T5Config(vocab_size=len(WORDS), d_model=CAPTION_CHANNELS, d_kv=4, d_ff=16, num_layers=1, num_heads=2)
    return T5EncoderModel(config).eval()


def save_pixart_pipeline(path):
    pipe = PixArtSigmaPipeline(tokenizer=tiny_tokenizer(), text_encoder=tiny_t5(), vae=tiny_vae(),
                               transformer=tiny_pixart(), scheduler=DPMSolverMultistepScheduler())
    pipe.save_pretrained(path)
    return path


def save_dit_pipeline(path):
    DiTPipeline(transformer=tiny_dit(), vae=tiny_vae(), scheduler=DDIMScheduler()).save_pretrained(path)
    return path
