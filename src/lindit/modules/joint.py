"""Joint attention over image and prompt tokens (MM-DiT), and its linear-time variants.

One module, three ways to relate the two modalities (``mode``):

* ``softmax``: the teacher's joint attention, softmax over the concatenated tokens (SD3).
* ``hybrid``: MM-EDiT, EDiT Eq. (7): linear image-image attention, softmax for every pair with a prompt
  token, mixed by eta (token-count approximation or the exact eta^Lin).
* ``linear``: linear attention for all pairs (Linear MM-DiT-alpha/beta, SANA-MM-DiT).

As in SD3, image and prompt tokens have separate projections (``to_q/k/v``, ``add_q/k/v_proj``), optional
per-head qk norms, and separate output projections (``to_out``, ``to_add_out``). With
``context_pre_only`` (SD3's last block) no prompt output is produced, so prompt queries are not computed.

======================  =========  =================================  ==================  ==========
method                  mode       image q / k / v maps               prompt q / k maps   phi (img/P)
======================  =========  =================================  ==================  ==========
MM-EDiT                 hybrid     convfusion / compressor / compr.   linear              relu / -
MM-EDiT no CF, SC       hybrid     linear / linear / linear           linear              relu / -
Linear MM-DiT-alpha     linear     convfusion / compressor / compr.   linear              relu / relu
Linear MM-DiT-beta      linear     convfusion / compressor / compr.   linfusion           relu / elu1
SANA-MM-DiT             linear     linear / linear / linear           linear              relu / relu
======================  =========  =================================  ==================  ==========
"""

from __future__ import annotations

import torch
from torch import nn

from ..functional import (DEFAULT_NORMALISER, hybrid_attention, joint_prompt_attention, linear_attention_apply,
                          linear_attention_state, softmax_attention)
from .attention import _check_heads, check_kv_maps, output_projection, qk_norm_layer
from .grid import Grid, OnGrid, check_grid, merge_heads, split_heads
from .token_maps import TokenMapOptions, TokenMapsMixin, feature_map

MODES = ("softmax", "hybrid", "linear")
# Which image queries and keys the softmax pairs of hybrid mode see (the image-image term always uses phi):
# "phi": EDiT Eq. 7 as written, the same ReLU'd ConvFusion queries and Spatial Compressor keys as the linear
# term; "raw": the maps' outputs before the ReLU, as the teacher's softmax saw them, so a converted layer with
# inherited projections starts with the teacher's image-prompt attention (the ReLU drops every negative
# query component from q.k_P).
SOFTMAX_QK = ("phi", "raw")


class JointAttention(OnGrid, TokenMapsMixin, nn.Module):
    """Image + prompt joint attention. forward(x (B, N_I, C), grid, context (B, N_P, C)) ->
    (x_out (B, N_I, C_out), context_out (B, N_P, C_out) or None).

    Inside a converted SD3 model it takes the call of diffusers' joint ``Attention`` (``hidden_states``,
    ``encoder_hidden_states``) and reads the grid from the model."""

    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        mode: str = "hybrid",
        query: str = "convfusion",
        key: str = "compressor",
        value: str = "compressor",
        prompt_query: str = "linear",
        prompt_key: str = "linear",
        phi: str = "relu",
        prompt_phi: str = "relu",
        eta: str | float = "approx",
        softmax_qk: str = "phi",
        qk_norm: str | None = None,
        context_dim: int | None = None,
        inner_dim: int | None = None,
        out_dim: int | None = None,
        context_pre_only: bool = False,
        bias: bool = True,
        eps: str | float = DEFAULT_NORMALISER,
        options: TokenMapOptions = TokenMapOptions(),
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        inner_dim, context_dim = inner_dim or dim, context_dim or dim
        _check_heads(inner_dim, heads)
        if mode == "softmax" and (query, key, value) != ("linear",) * 3:
            raise ValueError("softmax joint attention uses linear token maps (query=key=value='linear')")
        if eta == "learned" and mode != "hybrid":
            raise ValueError(f"eta='learned' needs mode='hybrid', got mode={mode!r}")
        if softmax_qk not in SOFTMAX_QK:
            raise ValueError(f"softmax_qk must be one of {SOFTMAX_QK}, got {softmax_qk!r}")
        self.mode, self.heads, self.eps, self.softmax_qk = mode, heads, eps, softmax_qk
        self.eta = "approx" if eta == "learned" else eta
        # eta="learned": the paper's token-count eta with a per-head logit offset learnt in distillation
        # (zero at conversion, so the converted model is the paper's MM-EDiT until it trains).
        self.eta_logit_bias = nn.Parameter(torch.zeros(heads)) if eta == "learned" else None
        self.context_pre_only = context_pre_only
        for role, kind in zip("qkv", (query, key, value)):
            self.add_token_map(role, kind, f"to_{role}", dim, inner_dim, bias, options)
        check_kv_maps(self, key, value)
        prompt_maps = (("k", prompt_key), ("v", "linear")) if context_pre_only else (
            ("q", prompt_query), ("k", prompt_key), ("v", "linear"))
        self.add_q_proj = None  # SD3's last block (context_pre_only) computes no prompt queries
        for role, kind in prompt_maps:
            self.add_token_map(f"added_{role}", kind, f"add_{role}_proj", context_dim, inner_dim, bias, options)
        self.phi = feature_map(phi)
        self.prompt_phi = feature_map(prompt_phi)
        head_dim = inner_dim // heads
        self.norm_q, self.norm_k = qk_norm_layer(qk_norm, head_dim), qk_norm_layer(qk_norm, head_dim)
        self.norm_added_q = None if context_pre_only else qk_norm_layer(qk_norm, head_dim)
        self.norm_added_k = qk_norm_layer(qk_norm, head_dim)
        self.to_out = output_projection(inner_dim, out_dim or dim)
        self.to_add_out = None if context_pre_only else nn.Linear(inner_dim, out_dim or context_dim)

    def _image_qkv(self, x, grid: Grid):
        q, _ = self.project("q", x, grid)  # (B, N_I, D)
        k, k_grid = self.project("k", x, grid)  # (B, M_I, D)
        v, _ = self.project("v", x, grid)  # (B, M_I, D)
        q = self.norm_q(split_heads(q, self.heads))  # (B, H, N_I, d)
        k = self.norm_k(split_heads(k, self.heads))  # (B, H, M_I, d)
        return q, k, split_heads(v, self.heads), k_grid

    def _prompt_qkv(self, c):
        q = None
        if self.add_q_proj is not None:
            q = self.norm_added_q(split_heads(self.project("added_q", c, None)[0], self.heads))  # (B, H, N_P, d)
        k = self.norm_added_k(split_heads(self.project("added_k", c, None)[0], self.heads))  # (B, H, N_P, d)
        v = split_heads(self.project("added_v", c, None)[0], self.heads)  # (B, H, N_P, d)
        return q, k, v

    def forward(self, hidden_states, grid: Grid | None = None, encoder_hidden_states=None, attention_mask=None,
                **kwargs):
        if encoder_hidden_states is None:
            raise ValueError("a converted joint attention layer needs encoder_hidden_states (prompt tokens)")
        if attention_mask is not None:
            raise ValueError("attention masks are not supported by converted joint attention layers")
        x, context, grid = hidden_states, encoder_hidden_states, self.resolve_grid(grid)
        check_grid(x, grid)
        q_i, k_i, v_i, k_grid = self._image_qkv(x, grid)
        q_p, k_p, v_p = self._prompt_qkv(context)
        attend = {"softmax": self._softmax, "hybrid": self._hybrid, "linear": self._linear}[self.mode]
        out_i, out_p = attend(q_i, k_i, v_i, q_p, k_p, v_p, grid, k_grid)
        out_i = self.to_out[1](self.to_out[0](merge_heads(out_i)))  # (B, N_I, C_out)
        if self.to_add_out is None:
            return out_i, None
        return out_i, self.to_add_out(merge_heads(out_p))  # (B, N_P, C_out)

    def _all_keys(self, k_i, v_i, k_p, v_p, k_grid):
        """Every image key (of every band when sharded) followed by the prompt keys."""
        k = torch.cat([self.bands.gather(k_i, k_grid).to(k_p.dtype), k_p], dim=-2)  # (B, H, M_I + N_P, d)
        return k, torch.cat([self.bands.gather(v_i, k_grid).to(v_p.dtype), v_p], dim=-2)

    def _softmax(self, q_i, k_i, v_i, q_p, k_p, v_p, grid, k_grid):
        k, v = self._all_keys(k_i, v_i, k_p, v_p, k_grid)
        out_p = None if q_p is None else softmax_attention(q_p, k, v)
        return softmax_attention(q_i, k, v), out_p

    def _hybrid(self, q_i, k_i, v_i, q_p, k_p, v_p, grid, k_grid):
        fq, fk = self.phi(q_i), self.phi(k_i)  # feature maps of the image-image linear term
        sq, sk = (fq, fk) if self.softmax_qk == "phi" else (q_i, k_i)  # what the softmax pairs see
        out_i, _ = hybrid_attention(fq, fk, v_i, None, k_p, v_p, eta=self.eta, eps=self.eps,
                                    n_img=self.bands.count(q_i.shape[-2], grid),
                                    reduce_state=self.bands.reduce_state(k_grid),
                                    eta_logit_bias=self.eta_logit_bias, q_img_softmax=sq, k_img_softmax=sk)
        if q_p is None:
            return out_i, None
        return out_i, joint_prompt_attention(q_p, sk, v_i, k_p, v_p, combine=self.bands.combine(k_grid))  # prompt rows

    def _linear(self, q_i, k_i, v_i, q_p, k_p, v_p, grid, k_grid):
        state, count = linear_attention_state(self.phi(k_i), v_i, self.eps)  # image keys
        reduce = self.bands.reduce_state(k_grid)  # None on one device
        state, count = (state, count) if reduce is None else reduce(state, count)
        prompt_state, prompt_count = linear_attention_state(self.prompt_phi(k_p), v_p, self.eps)
        state, count = state + prompt_state, count + prompt_count  # + prompt keys (replicated: added once)
        out_i = linear_attention_apply(self.phi(q_i), state, count, self.eps).to(q_i.dtype)
        if q_p is None:
            return out_i, None
        return out_i, linear_attention_apply(self.prompt_phi(q_p), state, count, self.eps).to(q_p.dtype)
