"""Positional embeddings beyond the trained resolution.

PixArt and DiT compute sin-cos positions for any grid (diffusers' PatchEmbed interpolates them, PixArt
style), so they need nothing. SD3 instead crops a learned-size table (``pos_embed_max_size``, 384 for
SD3.5): a grid larger than the table cannot run at all, which is why EDiT Table 3 has no 8192 px entry for
SD3.5-Medium. ``allow_any_resolution`` keeps the crop for every grid that fits and, for larger grids,
resizes the whole table to the grid by bicubic interpolation, so 8192 px (a 512 x 512 token grid) runs.
"""

from __future__ import annotations

import torch.nn.functional as F
from diffusers.models.embeddings import PatchEmbed
from torch import nn


class InterpolatingPatchEmbed(PatchEmbed):
    """PatchEmbed whose cropped table is interpolated up when the grid exceeds ``pos_embed_max_size``."""

    def cropped_pos_embed(self, height, width):
        gh, gw = height // self.patch_size, width // self.patch_size
        size = self.pos_embed_max_size
        if gh <= size and gw <= size:
            return super().cropped_pos_embed(height, width)
        table = self.pos_embed.reshape(1, size, size, -1).permute(0, 3, 1, 2)  # (1, C, size, size)
        table = F.interpolate(table.float(), size=(gh, gw), mode="bicubic", align_corners=False)
        return table.to(self.pos_embed.dtype).permute(0, 2, 3, 1).reshape(1, gh * gw, -1)  # (1, N, C)


def allow_any_resolution(model: nn.Module) -> nn.Module:
    """Let an SD3-family model run at grids beyond its positional table (in place; others untouched)."""
    embed = getattr(model, "pos_embed", None)
    if isinstance(embed, PatchEmbed) and embed.pos_embed_max_size is not None:
        embed.__class__ = InterpolatingPatchEmbed  # same state and weights, one method differs
    return model
