"""SANA's Mix-FFN (GLUMBConv), the feed-forward that SANA-DiT puts in place of the MLP."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from .grid import Grid, OnGrid, check_grid, to_image, to_tokens


class MixFFN(OnGrid, nn.Module):
    """1x1 conv to 2 x hidden + SiLU, 3x3 depthwise conv, split into value and gate, value * SiLU(gate),
    1x1 conv back; no norms. Tokens (B, N, C) on grid (h, w) -> (B, N, C_out).

    The 1x1 convs are Linear layers on tokens: the same map, computed as one GEMM on channels-last data.
    ``hidden_dim`` defaults to ``mlp_ratio * dim`` (SANA uses 2.5). ``out_bias``: whether the last 1x1 conv
    (``point_conv``) has a bias; lindit's default True gives it one, SANA's GLUMBConv has none
    (``use_bias=(True, True, False)``): pass False for SANA's layer. Inside a converted model it stands in
    for a block's ``ff`` and reads the grid from the model.
    """

    def __init__(self, dim: int, hidden_dim: int | None = None, out_dim: int | None = None, mlp_ratio: float = 2.5,
                 out_bias: bool = True):
        super().__init__()
        hidden = hidden_dim or int(round(dim * mlp_ratio))
        self.inverted_conv = nn.Linear(dim, 2 * hidden)
        self.depth_conv = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden)
        self.point_conv = nn.Linear(hidden, out_dim or dim, bias=out_bias)

    def forward(self, hidden_states, grid: Grid | None = None, *args, **kwargs):
        x, grid = hidden_states, self.resolve_grid(grid)
        check_grid(x, grid)
        h = F.silu(self.inverted_conv(x))  # (B, N, 2 * hidden)
        h, _ = to_tokens(self.depth_conv(to_image(h, grid)))  # (B, N, 2 * hidden)
        value, gate = h.chunk(2, dim=-1)  # (B, N, hidden) each
        return self.point_conv(value * F.silu(gate))  # (B, N, C_out)
