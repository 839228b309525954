"""Reference layers: each paper's equations on tokens (B, N, C) and their grid (h, w), weights read by name."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .ops import (
    FEATURES, Params, conv2d, group_norm, heads, layer_norm, leaky_relu, linear, linear_attention, merge, rms_norm,
    silu, softmax_attention, softmax_scores, similarity_linear, to_grid, to_seq,
)


@dataclass(frozen=True)
class MapOptions:
    cf_groups: int = 32  # GroupNorm groups wanted (the largest divisor of the channels that is <= this)
    cf_slope: float = 0.01
    sc_kernel: int = 3
    sc_stride: int = 2


def group_count(channels: int, wanted: int) -> int:
    return max(g for g in range(1, min(wanted, channels) + 1) if channels % g == 0)


def convfusion(p: Params, name: str, x, grid, opt: MapOptions):
    """EDiT Eq. (4) inside the Linear: Conv1x1(LeakyReLU(GN(Conv3x3(X)))) on the token grid -> (B, N, C)."""
    w3 = p[f"{name}.conv3x3.weight"]  # (C / r, C, 3, 3): the 3x3 conv compresses channels
    assert w3.shape[-2:] == (3, 3), f"ConvFusion's first conv is {tuple(w3.shape[-2:])}, EDiT's is 3 x 3"
    img = conv2d(to_grid(x, *grid), w3, p[f"{name}.conv3x3.bias"], padding=1)
    img = group_norm(img, group_count(w3.shape[0], opt.cf_groups), p[f"{name}.norm.weight"], p[f"{name}.norm.bias"])
    img = leaky_relu(img, opt.cf_slope)
    return linear(to_seq(img), p[f"{name}.conv1x1.weight"], p[f"{name}.conv1x1.bias"])  # 1x1 conv restores C


def spatial_compressor(p: Params, name: str, y, grid, opt: MapOptions):
    """EDiT Eq. (5): the depthwise k x k conv, stride s, padding k // 2, on projected tokens -> (tokens, grid)."""
    w = p[f"{name}.conv.weight"]  # (D, 1, k, k)
    img = conv2d(to_grid(y, *grid), w, p[f"{name}.conv.bias"], stride=opt.sc_stride, padding=opt.sc_kernel // 2,
                 groups=w.shape[0])
    return to_seq(img), tuple(img.shape[-2:])


def kv_compress(p: Params, name: str, y, grid, factor: int):
    """PixArt-Sigma's AttentionKVCompress: depthwise conv, kernel = stride = factor, then LayerNorm.

    Compressed token (i, j) reads the factor x factor block at rows f*i + a, columns f*j + b; where the grid
    does not divide, lindit repeats the last row / column (PixArt-Sigma's grids always divide; see the test).
    """
    h, w = grid
    img = to_grid(y, h, w)
    rows = [min(r, h - 1) for r in range(-(-h // factor) * factor)]
    cols = [min(c, w - 1) for c in range(-(-w // factor) * factor)]
    img = img[:, :, rows][:, :, :, cols]
    wt = p[f"{name}.conv.weight"]
    out = to_seq(conv2d(img, wt, p[f"{name}.conv.bias"], stride=factor, groups=wt.shape[0]))
    return layer_norm(out, p[f"{name}.norm.weight"], p[f"{name}.norm.bias"]), (len(rows) // factor, len(cols) // factor)


def linfusion_mlp(p: Params, name: str, x):
    """LinFusion's released code: MLP(X) = Linear -> LayerNorm -> LeakyReLU -> Linear (added to X)."""
    m = f"{name}.mlp"
    h = linear(x, p[f"{m}.0.weight"], p[f"{m}.0.bias"])
    h = leaky_relu(layer_norm(h, p[f"{m}.1.weight"], p[f"{m}.1.bias"]))
    return linear(h, p[f"{m}.3.weight"], p[f"{m}.3.bias"])


BRANCH_NAMES = {"convfusion": "conv_fusion", "linfusion": "linfusion", "compressor": "spatial_compressor"}


def token_map(p: Params, kind: str, role: str, proj: str, x, grid, opt: MapOptions):
    """One of q, k, v (or a prompt's): the projection ``proj`` with the map's branch -> (tokens, grid)."""
    branch = f"{BRANCH_NAMES.get(kind, '')}_{role}"
    if kind == "convfusion":
        x = x + convfusion(p, branch, x, grid, opt)
    elif kind == "linfusion":
        x = x + linfusion_mlp(p, branch, x)
    y = linear(x, p[f"{proj}.weight"], p.get(f"{proj}.bias"))
    if kind == "compressor":
        return spatial_compressor(p, branch, y, grid, opt)
    assert kind in ("linear", "convfusion", "linfusion"), kind
    return y, grid


def qk_norm(p: Params, name: str, x):
    """Per-head RMSNorm after the head split (SD3.5), or nothing."""
    weight = p.get(f"{name}.weight")
    return x if weight is None else rms_norm(x, weight)


def value_conv(p: Params, v, grid, k: int, shared: bool, n_heads: int):
    """LiT's depthwise k x k conv on V, 'same' padding. Per channel (one kernel per channel of V), or LiT's
    Algorithm 1: one kernel per head channel, the same for every head (V reshaped to (B * heads, d, h, w))."""
    w = p["value_conv.weight"]
    assert w.shape[-2:] == (k, k), f"value conv kernel {tuple(w.shape[-2:])}, the method's is {k} x {k}"
    if not shared:
        img = conv2d(to_grid(v, *grid), w, p["value_conv.bias"], padding=k // 2, groups=w.shape[0])
        return to_seq(img)
    per_head = [to_seq(conv2d(to_grid(vh, *grid), w, p["value_conv.bias"], padding=k // 2, groups=w.shape[0]))
                for vh in heads(v, n_heads).unbind(1)]
    return torch.cat(per_head, dim=-1)  # (B, N, H * d), head after head


def output(p: Params, out, name: str = "to_out.0"):
    return linear(merge(out), p[f"{name}.weight"], p.get(f"{name}.bias"))


@dataclass(frozen=True)
class SelfSpec:
    """A self-attention method as its paper describes it."""

    q: str = "linear"
    k: str = "linear"
    v: str = "linear"
    attention: str = "linear"  # linear | softmax
    phi: str = "relu"
    value_conv: int = 0  # LiT: the kernel of the depthwise conv on V (0: none)
    value_conv_shared: bool = False
    heads: int | None = None  # the method's head count (None: the teacher's)
    kv_factor: int = 1  # PixArt-Sigma's KV compression (softmax attention)


def self_attention(p: Params, spec: SelfSpec, x, grid, n_heads: int, opt: MapOptions, eps="lindit"):
    """Image self-attention -> (B, N, C_out)."""
    q, _ = token_map(p, spec.q, "q", "to_q", x, grid, opt)
    k, k_grid = token_map(p, spec.k, "k", "to_k", x, grid, opt)
    v, _ = token_map(p, spec.v, "v", "to_v", x, grid, opt)
    if spec.kv_factor > 1:  # one compression module for keys and values, as in PixArt-Sigma
        k, _ = kv_compress(p, "kv_compress", k, grid, spec.kv_factor)
        v, _ = kv_compress(p, "kv_compress", v, grid, spec.kv_factor)
    qh, kh, vh = qk_norm(p, "norm_q", heads(q, n_heads)), qk_norm(p, "norm_k", heads(k, n_heads)), heads(v, n_heads)
    if spec.attention == "softmax":
        out = softmax_attention(qh, kh, vh)
    else:
        phi = FEATURES[spec.phi]
        out = linear_attention(phi(qh), phi(kh), vh, eps)  # EDiT Eq. (3) / LiT Eq. (2)
    if spec.value_conv:  # LiT: O + DWC(V)
        out = out + heads(value_conv(p, v, grid, spec.value_conv, spec.value_conv_shared, n_heads), n_heads)
    return output(p, out)


def mixffn(p: Params, x, grid, out_bias: bool = True):
    """SANA's Mix-FFN (GLUMBConv): 1x1 conv to 2 x hidden + SiLU, 3x3 depthwise conv, split into value and
    gate, value * SiLU(gate), 1x1 conv (SANA: no bias on this last conv)."""
    h = silu(linear(x, p["inverted_conv.weight"], p["inverted_conv.bias"]))
    w = p["depth_conv.weight"]
    h = to_seq(conv2d(to_grid(h, *grid), w, p["depth_conv.bias"], padding=1, groups=w.shape[0]))
    hidden = h.shape[-1] // 2
    value, gate = h[..., :hidden], h[..., hidden:]
    return linear(value * silu(gate), p["point_conv.weight"], p["point_conv.bias"] if out_bias else None)


@dataclass(frozen=True)
class JointSpec:
    """A joint (MM-DiT) attention method as EDiT Sec. 3.2 / Table 2 describes it."""

    mode: str = "hybrid"  # softmax | hybrid | linear
    q: str = "convfusion"
    k: str = "compressor"
    v: str = "compressor"
    prompt_qk: str = "linear"
    phi: str = "relu"
    prompt_phi: str = "relu"
    eta: str | float = "approx"  # approx | exact | learned | a float
    softmax_qk: str = "phi"  # what the softmax pairs see of the image queries / keys: phi(.) or the raw maps


def _eta(p: Params, spec: JointSpec, q_feat, k_feat, q_soft, k_p, n_img: int):
    """The weight of the image-image term per (B, H, N_I, 1) query, EDiT Eq. (7)."""
    n_txt = k_p.shape[-2]
    if spec.eta == "exact":  # eta^Lin = S_lin / (S_lin + S_exp)
        s_lin = similarity_linear(q_feat, k_feat).sum(-1, keepdim=True)
        s_exp = torch.exp(softmax_scores(q_soft, k_p)).sum(-1, keepdim=True)
        return s_lin / (s_lin + s_exp)
    if spec.eta in ("approx", "learned"):
        eta = torch.tensor(n_img / (n_img + n_txt), dtype=torch.float64)  # N_I / (N_I + N_P), image *tokens*
        if spec.eta == "learned":  # lindit: a per-head offset in logit space
            logit = torch.log(eta / (1 - eta)) + p["eta_logit_bias"]
            eta = (1 / (1 + torch.exp(-logit))).view(1, -1, 1, 1)
        return eta
    return float(spec.eta)


def joint_attention(p: Params, spec: JointSpec, x, grid, c, n_heads: int, opt: MapOptions, eps="lindit"):
    """Image tokens x (B, N_I, C) on grid, prompt tokens c (B, N_P, C) -> (x_out, c_out or None)."""
    q, _ = token_map(p, spec.q, "q", "to_q", x, grid, opt)
    k, _ = token_map(p, spec.k, "k", "to_k", x, grid, opt)
    v, _ = token_map(p, spec.v, "v", "to_v", x, grid, opt)
    q_i, k_i = qk_norm(p, "norm_q", heads(q, n_heads)), qk_norm(p, "norm_k", heads(k, n_heads))
    v_i = heads(v, n_heads)
    has_q_p = "add_q_proj.weight" in p.tensors  # SD3's last block (context_pre_only) has no prompt queries
    q_p = None
    if has_q_p:
        q_p = qk_norm(p, "norm_added_q", heads(token_map(p, spec.prompt_qk, "added_q", "add_q_proj", c, None, opt)[0],
                                               n_heads))
    k_p = qk_norm(p, "norm_added_k", heads(token_map(p, spec.prompt_qk, "added_k", "add_k_proj", c, None, opt)[0],
                                           n_heads))
    v_p = heads(linear(c, p["add_v_proj.weight"], p.get("add_v_proj.bias")), n_heads)
    if spec.mode == "softmax":
        out_i = softmax_attention(q_i, torch.cat([k_i, k_p], -2), torch.cat([v_i, v_p], -2))
        out_p = None if q_p is None else softmax_attention(q_p, torch.cat([k_i, k_p], -2), torch.cat([v_i, v_p], -2))
    elif spec.mode == "linear":  # every pair linear: one normaliser over image and prompt keys
        phi, phi_p = FEATURES[spec.phi], FEATURES[spec.prompt_phi]
        keys, values = torch.cat([phi(k_i), phi_p(k_p)], -2), torch.cat([v_i, v_p], -2)
        out_i = linear_attention(phi(q_i), keys, values, eps)
        out_p = None if q_p is None else linear_attention(phi_p(q_p), keys, values, eps)
    else:  # hybrid, EDiT Eq. (7)
        phi = FEATURES[spec.phi]
        fq, fk = phi(q_i), phi(k_i)
        sq, sk = (fq, fk) if spec.softmax_qk == "phi" else (q_i, k_i)
        eta = _eta(p, spec, fq, fk, sq, k_p, n_img=grid[0] * grid[1])
        out_i = eta * linear_attention(fq, fk, v_i, eps) + (1 - eta) * softmax_attention(sq, k_p, v_p)
        out_p = None if q_p is None else softmax_attention(q_p, torch.cat([sk, k_p], -2), torch.cat([v_i, v_p], -2))
    x_out = output(p, out_i)
    return x_out, None if out_p is None else output(p, out_p, "to_add_out")
