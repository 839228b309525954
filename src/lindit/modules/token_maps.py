"""Token maps: how queries, keys and values are computed from tokens X on their grid.

Each map is ``forward(x (B, N, C), grid) -> (y (B, M, D), out_grid)`` and holds its linear projection in
``.proj`` (so a teacher's to_q/to_k/to_v can be inherited into any of them). The feature function that
makes queries and keys non-negative (ReLU, 1 + ELU) is applied by the attention after the head split,
not here, so that per-head qk-norms (SD3.5) sit between projection and feature function.

* ``LinearMap``: Linear(X), the teacher's projection (also SANA's and LiT's before ReLU).
* ``ConvFusion``: EDiT Eq. (4) inside its ReLU, Linear(X + Conv1x1(LeakyReLU(GN(Conv3x3(X))))).
* ``SpatialCompressor``: EDiT Eq. (5), Conv(Linear(X)), depthwise 3x3 with stride 2 (4x fewer tokens).
* ``LinFusionMap``: LinFusion's Linear(X + MLP(X)) with MLP = Linear -> LN -> LeakyReLU -> Linear.
* ``KVCompress``: PixArt-Sigma's key/value token compression for softmax attention.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .grid import Grid, to_image, to_tokens
from .shard import grid_conv, grid_group_norm, shard_of


@dataclass(frozen=True)
class TokenMapOptions:
    """Options of the token maps; each map reads only its own fields."""

    cf_reduction: int = 4  # ConvFusion: channel compression of its 3x3 conv (C -> C / r)
    cf_groups: int = 32  # ConvFusion: GroupNorm groups (reduced to a divisor of C / r when needed)
    cf_negative_slope: float = 0.01  # ConvFusion: LeakyReLU slope
    sc_kernel: int = 3  # Spatial Compressor: depthwise kernel
    sc_stride: int = 2  # Spatial Compressor: stride (tokens shrink by stride^2)
    lf_mid_dim: int | None = None  # LinFusion: MLP width (None = input width, LinFusion's default)


class LinearMap(nn.Module):
    """phi(X) = Linear(X)."""

    compresses = False

    def __init__(self, dim: int, out_dim: int, bias: bool = True, options: TokenMapOptions = TokenMapOptions()):
        super().__init__()
        self.proj = nn.Linear(dim, out_dim, bias=bias)

    def forward(self, x, grid: Grid):
        return self.proj(x), grid  # (B, N, D)


def _group_count(channels: int, wanted: int) -> int:
    """The largest divisor of ``channels`` that is <= ``wanted`` (GroupNorm needs groups | channels)."""
    return max(g for g in range(1, min(wanted, channels) + 1) if channels % g == 0)


class ConvFusion(nn.Module):
    """EDiT's ConvFusion query map, Eq. (4) without the outer ReLU.

    Linear(X + Conv1x1(LeakyReLU(GN(Conv3x3(X))))): the 3x3 conv reduces channels by ``cf_reduction``,
    the 1x1 conv restores them, on the (h, w) token grid, so each query sees its neighbourhood.
    The 1x1 conv is applied as a Linear on tokens (the same map, a plain GEMM on channels-last data).
    """

    compresses = False

    def __init__(self, dim: int, out_dim: int, bias: bool = True, options: TokenMapOptions = TokenMapOptions()):
        super().__init__()
        mid = max(1, dim // options.cf_reduction)
        self.conv3x3 = nn.Conv2d(dim, mid, kernel_size=3, padding=1)
        self.norm = nn.GroupNorm(_group_count(mid, options.cf_groups), mid)
        self.act = nn.LeakyReLU(options.cf_negative_slope)
        self.conv1x1 = nn.Linear(mid, dim)
        self.proj = nn.Linear(dim, out_dim, bias=bias)

    def forward(self, x, grid: Grid):
        local, _ = grid_conv(self.conv3x3, to_image(x, grid), grid)  # (B, C/r, h, w)
        local, _ = to_tokens(self.act(grid_group_norm(self.norm, local, grid)))  # (B, N, C/r)
        return self.proj(x + self.conv1x1(local)), grid  # (B, N, D)

    def start_at_projection_(self) -> None:
        """Zero the local branch's last map, so that the map equals ``proj`` (until the branch trains)."""
        nn.init.zeros_(self.conv1x1.weight)
        nn.init.zeros_(self.conv1x1.bias)


class SpatialCompressor(nn.Module):
    """EDiT's Spatial Compressor for keys and values, Eq. (5): Conv(Linear(X)).

    A depthwise ``sc_kernel`` x ``sc_kernel`` conv with stride ``sc_stride`` and padding kernel // 2 gives a
    ceil(h / s) x ceil(w / s) grid (a 33 x 47 grid becomes 17 x 24). The conv starts as a local average
    (weight 1 / k^2, bias 0), so compressed keys and values begin as means of inherited projections.
    """

    compresses = True

    def __init__(self, dim: int, out_dim: int, bias: bool = True, options: TokenMapOptions = TokenMapOptions()):
        super().__init__()
        k, s = options.sc_kernel, options.sc_stride
        self.proj = nn.Linear(dim, out_dim, bias=bias)
        self.conv = nn.Conv2d(out_dim, out_dim, k, stride=s, padding=k // 2, groups=out_dim)
        nn.init.constant_(self.conv.weight, 1.0 / (k * k))
        nn.init.zeros_(self.conv.bias)

    def forward(self, x, grid: Grid):
        y, out_grid = grid_conv(self.conv, to_image(self.proj(x), grid), grid)  # (B, D, ceil(h/s), ceil(w/s))
        return to_tokens(y)[0], out_grid  # (B, M, D), compressed grid


class LinFusionMap(nn.Module):
    """LinFusion's query/key map inside its 1 + ELU: Linear(X + MLP(X)).

    MLP = Linear -> LayerNorm -> LeakyReLU -> Linear, as in LinFusion's released code
    (``to_q(x + to_q_(x))``). EDiT Sec. 2.2 writes the LN after the LeakyReLU; we follow the code the
    published LinFusion numbers come from.
    """

    compresses = False

    def __init__(self, dim: int, out_dim: int, bias: bool = True, options: TokenMapOptions = TokenMapOptions()):
        super().__init__()
        mid = options.lf_mid_dim or dim
        self.mlp = nn.Sequential(nn.Linear(dim, mid), nn.LayerNorm(mid), nn.LeakyReLU(), nn.Linear(mid, dim))
        self.proj = nn.Linear(dim, out_dim, bias=bias)

    def forward(self, x, grid: Grid):
        return self.proj(x + self.mlp(x)), grid  # (B, N, D)

    def start_at_projection_(self) -> None:
        """Zero the MLP's last layer, so that the map equals ``proj`` (until the MLP trains)."""
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)


TOKEN_MAPS: dict[str, type[nn.Module]] = {
    "linear": LinearMap,
    "convfusion": ConvFusion,
    "compressor": SpatialCompressor,
    "linfusion": LinFusionMap,
}


def build_token_map(kind: str, dim: int, out_dim: int, bias: bool, options: TokenMapOptions) -> nn.Module:
    if kind not in TOKEN_MAPS:
        raise ValueError(f"unknown token map {kind!r}; valid: {sorted(TOKEN_MAPS)}")
    return TOKEN_MAPS[kind](dim, out_dim, bias=bias, options=options)


FEATURE_MAPS = {
    "relu": F.relu,
    "elu1": lambda x: F.elu(x) + 1.0,  # LinFusion / Katharopoulos et al.
    "identity": lambda x: x,
}


def feature_map(name: str):
    """The non-negative feature function phi applied to queries and keys of linear attention."""
    if name not in FEATURE_MAPS:
        raise ValueError(f"unknown feature map {name!r}; valid: {sorted(FEATURE_MAPS)}")
    return FEATURE_MAPS[name]


class KVCompress(nn.Module):
    """PixArt-Sigma's KV token compression (``AttentionKVCompress``), shared by keys and values.

    Depthwise conv with kernel = stride = ``factor`` (initialised as the block average 1 / factor^2, bias 0),
    then LayerNorm. Grids that do not divide are padded by replication, so every token is counted and the
    compressed grid is ceil(h / factor) x ceil(w / factor).
    """

    def __init__(self, dim: int, factor: int = 2):
        super().__init__()
        if factor < 2:
            raise ValueError(f"KV compression factor must be >= 2, got {factor}")
        self.factor = factor
        self.conv = nn.Conv2d(dim, dim, factor, stride=factor, groups=dim)
        nn.init.constant_(self.conv.weight, 1.0 / factor**2)
        nn.init.zeros_(self.conv.bias)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x, grid: Grid):
        img = to_image(x, grid)  # (B, C, h, w)
        pad_w = (-grid[1]) % self.factor
        pad_h = 0 if shard_of(grid) else (-grid[0]) % self.factor  # sharded: the last band replicates rows
        if pad_h or pad_w:
            img = F.pad(img, (0, pad_w, 0, pad_h), mode="replicate")
        y, out_grid = grid_conv(self.conv, img, grid, edge="replicate")
        return self.norm(to_tokens(y)[0]), out_grid  # (B, M, C)

