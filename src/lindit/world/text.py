"""A built-in text encoder for the shapes world, so prompts work offline.

A word-level tokenizer over the caption grammar's vocabulary and a tiny frozen transformer encoder whose
weights are a fixed random draw: random token embeddings and two attention layers already give every
caption a distinct, order-aware code (which colour goes with which shape, which phrase with which object);
a diffusion model learns to read it the way it learns to read a real frozen text encoder.

The weights ship in ``assets/text_encoder.safetensors`` (about 0.3 MB) with their config in
``assets/text_encoder.json``; regenerate both with

    lindit world text --write-assets
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .assets import ASSETS, load_asset, save_asset
from .grammar import vocabulary

__all__ = ["SEED", "TextEncoder", "Tokenizer", "build_text_encoder", "write_assets"]

SPECIALS = ("<pad>", "<unk>")
PAD, UNK = 0, 1
SEED = 1234
ASSET = ASSETS / "text_encoder.safetensors"
COMMAND = "lindit world text --write-assets"  # recorded with the weights: how to remake them
DEFAULT_CONFIG = {"max_length": 16, "width": 64, "depth": 2, "heads": 4, "pooled_dim": 64}


class Tokenizer:
    """Lower-cased runs of letters -> ids over ``SPECIALS + vocabulary``; unknown words map to ``<unk>``.

    Sequences are truncated or padded to ``max_length`` (16 holds any caption of up to 2 objects).
    """

    def __init__(self, vocab: list[str] | None = None, max_length: int = 16):
        self.vocab = list(SPECIALS) + (vocabulary() if vocab is None else list(vocab))
        self.ids = {word: i for i, word in enumerate(self.vocab)}
        self.max_length = max_length

    def encode_one(self, text: str) -> list[int]:
        """Ids of the words of one text, truncated to ``max_length`` and not padded."""
        words = re.findall(r"[^\W\d_]+", text.lower())  # runs of letters, any alphabet
        return [self.ids.get(word, UNK) for word in words[: self.max_length]]

    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """ids (B, max_length) long padded with ``<pad>``, and mask (B, max_length) long, 1 on words."""
        ids = torch.full((len(texts), self.max_length), PAD, dtype=torch.long)
        mask = torch.zeros((len(texts), self.max_length), dtype=torch.long)
        for row, text in enumerate(texts):
            tokens = self.encode_one(text)
            ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            mask[row, : len(tokens)] = 1
        return ids, mask


def sinusoidal_positions(length: int, width: int) -> torch.Tensor:
    """Transformer sine/cosine position codes: (length, width)."""
    position = torch.arange(length, dtype=torch.float32)[:, None]  # (L, 1)
    frequency = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(10000.0) / width))
    angle = position * frequency  # (L, width / 2)
    return torch.stack([angle.sin(), angle.cos()], dim=-1).flatten(1)  # (L, width)


class EncoderBlock(nn.Module):
    """Pre-norm transformer encoder layer: x + attention(norm(x)), then x + MLP(norm(x))."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.fc1, self.fc2 = nn.Linear(width, 2 * width), nn.Linear(2 * width, width)

    def forward(self, x: torch.Tensor, attend: torch.Tensor) -> torch.Tensor:
        """x: (B, L, D), attend: (B, L) bool, keys to attend to -> (B, L, D)."""
        qkv = self.qkv(self.norm1(x)).unflatten(-1, (3, self.heads, -1))  # (B, L, 3, H, d)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, H, L, d)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attend[:, None, None, :])  # (B, H, L, d)
        x = x + self.proj(out.transpose(1, 2).flatten(2))  # (B, L, D)
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))  # (B, L, D)


class TextEncoder(nn.Module):
    """Tiny frozen text encoder: token embedding + sine positions -> ``depth`` encoder blocks -> LayerNorm.

    Outputs per-token embeddings (zero on padding, so models that ignore the mask see no text there) and a
    pooled vector, a projection of the masked mean, as SD3-style models take in ``pooled_projections``.
    """

    def __init__(
        self,
        vocab: list[str] | None = None,
        max_length: int = 16,
        width: int = 64,
        depth: int = 2,
        heads: int = 4,
        pooled_dim: int = 64,
    ):
        super().__init__()
        self.tokenizer = Tokenizer(vocab, max_length)
        self.config = dict(max_length=max_length, width=width, depth=depth, heads=heads, pooled_dim=pooled_dim)
        self.embed = nn.Embedding(len(self.tokenizer.vocab), width)
        self.register_buffer("positions", sinusoidal_positions(max_length, width), persistent=False)
        self.blocks = nn.ModuleList(EncoderBlock(width, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.pool = nn.Linear(width, pooled_dim)
        self.requires_grad_(False)

    @property
    def width(self) -> int:
        return self.embed.embedding_dim

    @property
    def pooled_dim(self) -> int:
        return self.pool.out_features

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ids, mask: (B, L) -> embeds (B, L, D) zero where mask is 0, pooled (B, P)."""
        valid = mask.bool()  # (B, L)
        # An empty text has no key to attend to; let it attend to its padding instead of producing NaN.
        attend = valid | ~valid.any(-1, keepdim=True)  # (B, L)
        x = self.embed(ids) + self.positions[: ids.shape[1]]  # (B, L, D)
        for block in self.blocks:
            x = block(x, attend)  # (B, L, D)
        x = self.norm(x) * valid[..., None]  # (B, L, D)
        mean = x.sum(1) / valid.sum(1, keepdim=True).clamp(min=1)  # (B, D)
        return x, self.pool(mean)  # (B, L, D), (B, P)

    @torch.no_grad()
    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Texts -> embeds (B, L, D), mask (B, L) long, pooled (B, P); L = max_length, always padded."""
        ids, mask = self.tokenizer(list(texts))
        embeds, pooled = self(ids.to(self.embed.weight.device), mask.to(self.embed.weight.device))
        return embeds, mask.to(embeds.device), pooled

    @classmethod
    def builtin(cls, path: str | Path = ASSET) -> TextEncoder:
        """The shipped encoder (or one written by ``write_assets``), in eval mode."""
        state, record = load_asset(path)
        if record["vocab"] != vocabulary():
            hint = f"run `{COMMAND}` to regenerate it"
            raise ValueError(f"{path} was made for another caption vocabulary; {hint}")
        model = cls(record["vocab"], **record["config"])
        model.load_state_dict(state)
        return model.eval()


def _initialise(model: nn.Module, seed: int) -> None:
    """Deterministic weights from ``seed``: embeddings N(0, 1), linear weights N(0, 1/fan_in), zero biases,
    identity LayerNorms. Modules are visited in name order, so the draw does not depend on construction."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, module in sorted(model.named_modules()):
            if isinstance(module, nn.Embedding):
                module.weight.normal_(0.0, 1.0, generator=generator)
            elif isinstance(module, nn.Linear):
                module.weight.normal_(0.0, module.in_features**-0.5, generator=generator)
                module.bias.zero_()
            elif isinstance(module, nn.LayerNorm):
                module.reset_parameters()


def build_text_encoder(seed: int = SEED, **config) -> TextEncoder:
    """A freshly generated encoder: ``DEFAULT_CONFIG`` updated by ``config``, weights drawn from ``seed``."""
    model = TextEncoder(**{**DEFAULT_CONFIG, **config})
    _initialise(model, seed)
    return model.eval()


def write_assets(path: str | Path = ASSET, seed: int = SEED) -> Path:
    """Generate the built-in encoder and write its weights to ``path`` and its config to the .json beside."""
    model = build_text_encoder(seed)
    record = {
        "command": COMMAND,
        "seed": seed,
        "config": model.config,
        "vocab": model.tokenizer.vocab[len(SPECIALS) :],
        "specials": list(SPECIALS),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    return save_asset(path, model.state_dict(), record)


def main(argv: list[str] | None = None) -> int:
    """``python -m lindit.world.text ARGS``, kept for old scripts: runs ``lindit world text ARGS``."""
    from ..cli import forward

    return forward(["world", "text"], argv)


if __name__ == "__main__":
    raise SystemExit(main())
