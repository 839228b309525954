"""Token maps: how queries, keys and values are computed from tokens X on their grid.

Every map keeps the teacher's projection as a plain ``nn.Linear`` under diffusers' name (``to_q``, ``to_k``,
``to_v``; ``add_q_proj``, ``add_k_proj``, ``add_v_proj`` for prompt tokens), so PEFT LoRA targets and
inherited teacher weights are where a diffusers user expects them. A method adds at most one branch before
the projection (a residual on X) and one after it (on the projected tokens), as siblings of the projection:

======================  ========================================  =====================================
map kind                branch before the projection              branch after the projection
======================  ========================================  =====================================
``linear``              -                                         -
``convfusion``          ``conv_fusion_{q,k}``: ConvFusion         -
``compressor``          -                                         ``spatial_compressor_{k,v}``
``linfusion``           ``linfusion_{q,k,added_q,added_k}``       -
======================  ========================================  =====================================

* ``ConvFusion``: EDiT Eq. (4) inside its ReLU is Linear(X + Conv1x1(LeakyReLU(GN(Conv3x3(X))))); the branch
  is the Conv1x1(...) term, the Linear is ``to_q``.
* ``SpatialCompressor``: EDiT Eq. (5) is Conv(Linear(X)); the branch is the depthwise strided conv after
  ``to_k`` / ``to_v``.
* ``LinFusionBranch``: LinFusion's Linear(X + MLP(X)) with MLP = Linear -> LN -> LeakyReLU -> Linear.
* ``KVCompress``: PixArt-Sigma's key/value token compression for softmax attention (after ``to_k``, ``to_v``).

The feature function that makes queries and keys non-negative (ReLU, 1 + ELU) is applied by the attention
after the head split, not here, so that per-head qk norms (SD3.5) sit between projection and feature map.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import nn

from .grid import Grid, to_image, to_tokens


@dataclass(frozen=True)
class TokenMapOptions:
    """Options of the token maps; each branch reads only its own fields."""

    cf_reduction: int = 4  # ConvFusion: channel compression of its 3x3 conv (C -> C / r)
    cf_groups: int = 32  # ConvFusion: GroupNorm groups (reduced to a divisor of C / r when needed)
    cf_negative_slope: float = 0.01  # ConvFusion: LeakyReLU slope
    sc_kernel: int = 3  # Spatial Compressor: depthwise kernel
    sc_stride: int = 2  # Spatial Compressor: stride (tokens shrink by stride^2)
    lf_mid_dim: int | None = None  # LinFusion: MLP width (None = input width, LinFusion's default)


def _group_count(channels: int, wanted: int) -> int:
    """The largest divisor of ``channels`` that is <= ``wanted`` (GroupNorm needs groups | channels)."""
    return max(g for g in range(1, min(wanted, channels) + 1) if channels % g == 0)


class ConvFusion(nn.Module):
    """EDiT's ConvFusion branch, Eq. (4): X -> Conv1x1(LeakyReLU(GN(Conv3x3(X)))), added to X before ``to_q``.

    The 3x3 conv reduces channels by ``cf_reduction`` and the 1x1 conv restores them, on the (h, w) token
    grid, so each query sees its neighbourhood. The 1x1 conv is a Linear on tokens (the same map, one GEMM
    on channels-last data).
    """

    def __init__(self, dim: int, options: TokenMapOptions = TokenMapOptions()):
        super().__init__()
        mid = max(1, dim // options.cf_reduction)
        self.conv3x3 = nn.Conv2d(dim, mid, kernel_size=3, padding=1)
        self.norm = nn.GroupNorm(_group_count(mid, options.cf_groups), mid)
        self.act = nn.LeakyReLU(options.cf_negative_slope)
        self.conv1x1 = nn.Linear(mid, dim)

    def forward(self, x, grid: Grid):
        local = self.conv3x3(to_image(x, grid))  # (B, C/r, h, w)
        local, _ = to_tokens(self.act(self.norm(local)))  # (B, N, C/r)
        return self.conv1x1(local)  # (B, N, C)

    def zero_(self) -> None:
        """Zero the branch's output, so that the map equals its projection (until the branch trains)."""
        nn.init.zeros_(self.conv1x1.weight)
        nn.init.zeros_(self.conv1x1.bias)


class LinFusionBranch(nn.Module):
    """LinFusion's branch MLP(X) = Linear -> LayerNorm -> LeakyReLU -> Linear, added to X before ``to_q``.

    As in LinFusion's released code (``to_q(x + to_q_(x))``). EDiT Sec. 2.2 writes the LN after the
    LeakyReLU; we follow the code the published LinFusion numbers come from.
    """

    def __init__(self, dim: int, options: TokenMapOptions = TokenMapOptions()):
        super().__init__()
        mid = options.lf_mid_dim or dim
        self.mlp = nn.Sequential(nn.Linear(dim, mid), nn.LayerNorm(mid), nn.LeakyReLU(), nn.Linear(mid, dim))

    def forward(self, x, grid: Grid | None = None):
        return self.mlp(x)  # (B, N, C)

    def zero_(self) -> None:
        """Zero the MLP's last layer, so that the map equals its projection (until the MLP trains)."""
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)


class SpatialCompressor(nn.Module):
    """EDiT's Spatial Compressor, Eq. (5): the depthwise strided Conv after the projection, Conv(Linear(X)).

    A ``sc_kernel`` x ``sc_kernel`` conv with stride ``sc_stride`` and padding kernel // 2 gives a
    ceil(h / s) x ceil(w / s) grid (a 33 x 47 grid becomes 17 x 24). The conv starts as a local average
    (weight 1 / k^2, bias 0), so compressed keys and values begin as means of inherited projections.
    """

    def __init__(self, dim: int, options: TokenMapOptions = TokenMapOptions()):
        super().__init__()
        k, s = options.sc_kernel, options.sc_stride
        self.conv = nn.Conv2d(dim, dim, k, stride=s, padding=k // 2, groups=dim)
        nn.init.constant_(self.conv.weight, 1.0 / (k * k))
        nn.init.zeros_(self.conv.bias)

    def forward(self, y, grid: Grid):
        return to_tokens(self.conv(to_image(y, grid)))  # (B, M, D), compressed grid (ceil(h/s), ceil(w/s))


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
        pad_h, pad_w = (-grid[0]) % self.factor, (-grid[1]) % self.factor
        if pad_h or pad_w:
            img = F.pad(img, (0, pad_w, 0, pad_h), mode="replicate")
        y, out_grid = to_tokens(self.conv(img))  # (B, M, C)
        return self.norm(y), out_grid  # (B, M, C)


# map kind -> (attribute prefix, class) of its branch before / after the projection
BEFORE = {"convfusion": ("conv_fusion", ConvFusion), "linfusion": ("linfusion", LinFusionBranch)}
AFTER = {"compressor": ("spatial_compressor", SpatialCompressor)}
MAP_KINDS = ("linear", "convfusion", "compressor", "linfusion")


class TokenMapsMixin:
    """For attention layers: build and apply token maps, each a projection plus its optional branches.

    ``add_token_map("q", "convfusion", "to_q", ...)`` gives the layer ``conv_fusion_q`` and ``to_q``;
    ``project("q", x, grid)`` computes to_q(X + conv_fusion_q(X)) -> (tokens, grid of the tokens).
    """

    def add_token_map(self, role: str, kind: str, proj: str, dim: int, out_dim: int, bias: bool,
                      options: TokenMapOptions) -> None:
        if kind not in MAP_KINDS:
            raise ValueError(f"unknown token map {kind!r}; valid: {list(MAP_KINDS)}")
        before = after = None
        if kind in BEFORE:  # created first, as the branch comes first in the computation
            prefix, cls = BEFORE[kind]
            before = f"{prefix}_{role}"
            setattr(self, before, cls(dim, options))
        setattr(self, proj, nn.Linear(dim, out_dim, bias=bias))
        if kind in AFTER:
            prefix, cls = AFTER[kind]
            after = f"{prefix}_{role}"
            setattr(self, after, cls(out_dim, options))
        if not hasattr(self, "token_maps"):
            self.token_maps = {}
        self.token_maps[role] = (before, proj, after)

    def project(self, role: str, x, grid: Grid | None):
        """x (B, N, C) -> (y (B, M, D), grid of y); M < N only after a compressing branch."""
        before, proj, after = self.token_maps[role]
        if before is not None:
            x = x + getattr(self, before)(x, grid)  # (B, N, C): X + branch(X)
        y = getattr(self, proj)(x)  # (B, N, D)
        return getattr(self, after)(y, grid) if after is not None else (y, grid)

    def compresses(self, role: str) -> bool:
        return self.token_maps[role][2] is not None

    def branch_before(self, role: str) -> nn.Module | None:
        """The residual branch added to X before ``role``'s projection (ConvFusion, LinFusion), if any."""
        before = self.token_maps[role][0]
        return None if before is None else getattr(self, before)


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
