"""A random-weight pipeline folder at a published size, for measuring memory and time offline.

    lindit deploy synthetic --out /tmp/pixart-sigma-random
    lindit convert --teacher /tmp/pixart-sigma-random --method edit --out /tmp/edit-random
    lindit generate --model /tmp/edit-random --base /tmp/pixart-sigma-random --low-memory --profile ...

Real checkpoints cannot be downloaded on this machine, and memory and latency do not depend on weight
values, so this writes PixArtSigmaPipeline's components with the released configurations and random
weights: the PixArt-Sigma XL/2 transformer (``lindit.benchmarks.presets``) and the SDXL-architecture VAE it
uses. The text encoder is the exception: T5-XXL (billions of parameters) does not fit next to other work on a
small shared machine, so it is a one-layer T5 of the right width (4096) and ``--text-layers`` deep;
memory figures measured with it leave out the real text encoder, and say so.
"""

from __future__ import annotations

import torch

from .presets import PRESETS

# AutoencoderKL of SDXL / PixArt-Sigma (sdxl-vae): four levels, 4 latent channels, 8x downsampling
SDXL_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                layers_per_block=2, norm_num_groups=32, sample_size=1024, scaling_factor=0.13025)
WORDS = ["<pad>", "</s>", "<unk>", "a", "red", "blue", "circle", "square", "cat", "photo", "of", "the"]


def tokenizer():
    """A word-level tokenizer with T5's special tokens (the vocabulary is irrelevant to memory and time)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def text_encoder(width: int, layers: int):
    from transformers import T5Config, T5EncoderModel

    config = T5Config(vocab_size=len(WORDS), d_model=width, d_kv=64, num_heads=8, d_ff=1024, num_layers=layers)
    return T5EncoderModel(config).eval()


def pixart_sigma(text_layers: int):
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, PixArtSigmaPipeline

    preset = PRESETS["pixart-sigma"]
    torch.manual_seed(0)
    transformer = preset.model_class(**preset.config).eval()
    encoder = text_encoder(preset.config["caption_channels"], text_layers)
    return PixArtSigmaPipeline(tokenizer=tokenizer(), text_encoder=encoder, vae=AutoencoderKL(**SDXL_VAE).eval(),
                               transformer=transformer, scheduler=DPMSolverMultistepScheduler())


BUILDERS = {"pixart-sigma": pixart_sigma}


def main(argv: list[str] | None = None) -> int:
    """``python -m lindit.benchmarks.synthetic ARGS`` (was ``lindit.deploy.synthetic``), kept for old scripts:
    runs ``lindit deploy synthetic ARGS``."""
    from ..cli import forward

    return forward(["deploy", "synthetic"], argv)


if __name__ == "__main__":
    raise SystemExit(main())
