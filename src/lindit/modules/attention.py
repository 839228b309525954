"""Self-attention over image tokens: the teacher's softmax attention and every linear variant.

``SoftmaxAttention`` is the teacher's mechanism (optionally with PixArt-Sigma's KV compression);
``LinearAttention`` is one module whose options give each paper's mechanism:

=================  =============  ==============  ==============  ========  ===========  =====
mechanism          query map      key map         value map       phi       value conv   heads
=================  =============  ==============  ==============  ========  ===========  =====
EDiT (Sec. 3.1)    convfusion     compressor      compressor      relu      -            teacher
EDiT CF on Q, K    convfusion     convfusion      linear          relu      -            teacher
EDiT SC only       linear         compressor      compressor      relu      -            teacher
EDiT CF on Q only  convfusion     linear          linear          relu      -            teacher
LiT                linear         linear          linear          relu      5x5 DW       2
SANA               linear         linear          linear          relu      -            teacher
LinFusion          linfusion      linfusion       linear          elu1      -            teacher
=================  =============  ==============  ==============  ========  ===========  =====

Both take tokens x (B, N, C) with their row-major grid (h, w) and return (B, N, C_out). Their weights
carry diffusers' ``Attention`` names (``to_q``, ``to_k``, ``to_v``, ``to_out.0``, ``norm_q``, ``norm_k``), with
the methods' branches beside them (``modules.token_maps``), and inside a converted diffusers model they
take the call of the layer they replace (``hidden_states``, ``encoder_hidden_states=None``,
``attention_mask=None``), reading the grid from the model (``grid.OnGrid``).
"""

from __future__ import annotations

from torch import nn

from ..functional import DEFAULT_NORMALISER, linear_attention, softmax_attention
from .grid import Grid, OnGrid, check_grid, merge_heads, split_heads, to_image, to_tokens
from .token_maps import KVCompress, TokenMapOptions, TokenMapsMixin, feature_map

QK_NORMS = {"rms_norm": nn.RMSNorm, "layer_norm": nn.LayerNorm}


def qk_norm_layer(kind: str | None, head_dim: int, eps: float = 1e-6) -> nn.Module:
    """Per-head norm of queries or keys after the head split (SD3.5 uses rms_norm); Identity for None."""
    if kind is None:
        return nn.Identity()
    if kind not in QK_NORMS:
        raise ValueError(f"unknown qk_norm {kind!r}; valid: None, {sorted(QK_NORMS)}")
    return QK_NORMS[kind](head_dim, eps=eps)


def _check_heads(dim: int, heads: int) -> None:
    if heads < 1 or dim % heads:
        raise ValueError(f"heads={heads} must be a positive divisor of the attention width {dim}")




def output_projection(inner_dim: int, out_dim: int) -> nn.ModuleList:
    """diffusers' ``to_out``: [Linear, Dropout], so that ``to_out.0`` names the output projection."""
    return nn.ModuleList([nn.Linear(inner_dim, out_dim), nn.Dropout(0.0)])


def check_self_call(encoder_hidden_states, attention_mask) -> None:
    """What a converted image self-attention cannot take from a diffusers block."""
    if encoder_hidden_states is not None:
        raise ValueError("a converted self-attention layer got encoder_hidden_states; it attends to image tokens only")
    if attention_mask is not None:
        raise ValueError("image-token attention masks are not supported by converted self-attention layers")


class SoftmaxAttention(OnGrid, TokenMapsMixin, nn.Module):
    """The teacher's softmax self-attention; ``kv_compress=k`` adds PixArt-Sigma's KV token compression."""

    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        inner_dim: int | None = None,
        out_dim: int | None = None,
        kv_compress: int = 1,
        qk_norm: str | None = None,
        bias: bool = True,
    ):
        super().__init__()
        inner_dim = inner_dim or dim
        _check_heads(inner_dim, heads)
        self.heads = heads
        for role in "qkv":
            self.add_token_map(role, "linear", f"to_{role}", dim, inner_dim, bias, TokenMapOptions())
        self.norm_q = qk_norm_layer(qk_norm, inner_dim // heads)
        self.norm_k = qk_norm_layer(qk_norm, inner_dim // heads)
        self.kv_compress = KVCompress(inner_dim, kv_compress) if kv_compress > 1 else None
        self.to_out = output_projection(inner_dim, out_dim or dim)

    def forward(self, hidden_states, grid: Grid | None = None, encoder_hidden_states=None, attention_mask=None,
                **kwargs):
        check_self_call(encoder_hidden_states, attention_mask)
        x, grid = hidden_states, self.resolve_grid(grid)
        check_grid(x, grid)
        q, k, v = self.to_q(x), self.to_k(x), self.to_v(x)  # (B, N, D)
        kv_grid = grid
        if self.kv_compress is not None:
            k, kv_grid = self.kv_compress(k, grid)  # (B, M, D), M = ceil(h/k) * ceil(w/k)
            v, _ = self.kv_compress(v, grid)
        k, v = self.bands.gather(k, kv_grid), self.bands.gather(v, kv_grid)  # no-op on one device
        q = self.norm_q(split_heads(q, self.heads))  # (B, H, N, d)
        k = self.norm_k(split_heads(k, self.heads))  # (B, H, M, d)
        out = softmax_attention(q, k, split_heads(v, self.heads))  # (B, H, N, d)
        return self.to_out[1](self.to_out[0](merge_heads(out)))  # (B, N, C_out)


class LinearAttention(OnGrid, TokenMapsMixin, nn.Module):
    """Linear self-attention (EDiT Eq. 3) with the query/key/value maps of EDiT, LiT, SANA or LinFusion.

    query/key/value name token maps (``linear``, ``convfusion``, ``compressor``, ``linfusion``); keys and
    values must agree on compression. ``phi`` is the feature function on queries and keys (``relu``,
    ``elu1``). ``value_conv=k`` adds LiT's depthwise k x k conv on the values to the attention output
    (needs uncompressed values). ``value_conv_shared`` chooses its kernels: False (default, lindit) one per
    channel of V, heads x the parameters of LiT's; True one per head channel, the same for every head, as
    LiT's Algorithm 1 (``Conv2d(head_dim, head_dim, groups=head_dim)`` on V as (B * heads, d, h, w)).
    ``eps`` is the normaliser's epsilon convention (``lindit.functional.NORMALISERS``: sana, lit, linfusion,
    lindit; default LinFusion's). The attention keeps its sums in float32 for any dtype.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        query: str = "convfusion",
        key: str = "compressor",
        value: str = "compressor",
        phi: str = "relu",
        value_conv: int | None = None,
        value_conv_shared: bool = False,
        qk_norm: str | None = None,
        inner_dim: int | None = None,
        out_dim: int | None = None,
        bias: bool = True,
        eps: str | float = DEFAULT_NORMALISER,
        options: TokenMapOptions = TokenMapOptions(),
    ):
        super().__init__()
        inner_dim = inner_dim or dim
        _check_heads(inner_dim, heads)
        self.heads, self.eps = heads, eps
        for role, kind in zip("qkv", (query, key, value)):
            self.add_token_map(role, kind, f"to_{role}", dim, inner_dim, bias, options)
        check_kv_maps(self, key, value)
        if self.compresses("q"):
            raise ValueError(f"query map {query!r} compresses tokens; queries need one per token")
        self.phi_name = phi
        self.phi = feature_map(phi)
        self.norm_q = qk_norm_layer(qk_norm, inner_dim // heads)
        self.norm_k = qk_norm_layer(qk_norm, inner_dim // heads)
        if value_conv_shared and value_conv is None:
            raise ValueError("value_conv_shared=True needs a value_conv kernel size")
        self.value_conv_shared = value_conv_shared
        conv_channels = inner_dim // heads if value_conv_shared else inner_dim
        self.value_conv = _value_conv(conv_channels, value_conv, self.compresses("v"), value)
        self.to_out = output_projection(inner_dim, out_dim or dim)

    def start_value_conv_at_zero_(self) -> None:
        """Zero LiT's depthwise conv on V (if any), so that a layer with inherited projections starts as their
        plain linear attention instead of that plus a random local term (until the conv trains)."""
        if self.value_conv is not None:
            nn.init.zeros_(self.value_conv.weight)
            nn.init.zeros_(self.value_conv.bias)

    def forward(self, hidden_states, grid: Grid | None = None, encoder_hidden_states=None, attention_mask=None,
                **kwargs):
        check_self_call(encoder_hidden_states, attention_mask)
        x, grid = hidden_states, self.resolve_grid(grid)
        check_grid(x, grid)
        q, _ = self.project("q", x, grid)  # (B, N, D)
        k, k_grid = self.project("k", x, grid)  # (B, M, D)
        v, _ = self.project("v", x, grid)  # (B, M, D)
        q = self.phi(self.norm_q(split_heads(q, self.heads)))  # (B, H, N, d), non-negative
        k = self.phi(self.norm_k(split_heads(k, self.heads)))  # (B, H, M, d), non-negative
        attn = linear_attention(q, k, split_heads(v, self.heads), self.eps,
                                self.bands.reduce_state(k_grid))  # (B, H, N, d)
        out = merge_heads(attn)  # (B, N, D)
        if self.value_conv is not None:  # LiT: + DWC(V)
            out = out + self._dwc(v, grid)  # (B, N, D)
        return self.to_out[1](self.to_out[0](out))  # (B, N, C_out)

    def _dwc(self, v, grid: Grid):
        """LiT's DWC(V): v (B, N, D) -> (B, N, D), per channel or with kernels shared across heads."""
        if not self.value_conv_shared:
            return to_tokens(self.value_conv(to_image(v, grid)))[0]
        b, n, _ = v.shape
        per_head = split_heads(v, self.heads).reshape(b * self.heads, n, -1)  # (B * H, N, d)
        out = to_tokens(self.value_conv(to_image(per_head, grid)))[0]  # (B * H, N, d)
        return merge_heads(out.view(b, self.heads, n, -1))  # (B, N, D)


def check_kv_maps(layer: TokenMapsMixin, key: str, value: str) -> None:
    if layer.compresses("k") != layer.compresses("v"):
        raise ValueError(
            f"key map {key!r} and value map {value!r} must give the same token count: "
            "compress both (compressor) or neither"
        )


def _value_conv(channels: int, kernel: int | None, compressed: bool, value: str) -> nn.Module | None:
    """LiT's depthwise conv on V (Guideline 1), kernel x kernel with 'same' padding, on ``channels``."""
    if kernel is None:
        return None
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"value_conv must be an odd kernel size, got {kernel}")
    if compressed:
        raise ValueError(f"value_conv needs uncompressed values; value map {value!r} compresses")
    return nn.Conv2d(channels, channels, kernel, padding=kernel // 2, groups=channels)
