"""Attention as pure functions on (B, heads, tokens, dim) tensors.

Every mechanism of EDiT and LiT reduces to three computations:

* ``softmax_attention``: scaled dot-product attention, EDiT Eq. (1).
* ``linear_attention``: kernelised attention with feature maps already applied, EDiT Eq. (3) / LiT Eq. (3).
* ``hybrid_attention``: MM-EDiT's mix of linear image-image attention and softmax attention for every
  pair that involves a prompt token, EDiT Eq. (7).

``*_reference`` functions are the plain, obviously-correct forms that every faster path is tested against.

Precision: every function takes float32, bfloat16, float16 or float64 tensors and returns the input's dtype.
Sums over tokens (linear attention's key-value state, softmax normalisers) are kept in float32 (float64 for
float64 inputs); the large GEMMs run in the input's precision with the GEMM's float32 accumulation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "Normaliser",
    "NORMALISERS",
    "DEFAULT_NORMALISER",
    "normaliser",
    "softmax_attention",
    "softmax_attention_with_lse",
    "softmax_attention_with_lse_reference",
    "merge_by_lse",
    "joint_prompt_attention",
    "linear_attention",
    "linear_attention_reference",
    "linear_attention_state",
    "linear_attention_apply",
    "hybrid_attention",
    "hybrid_attention_reference",
    "approx_eta",
    "moment_log_normaliser",
]


def _check_4d(**tensors: torch.Tensor | None) -> None:
    for name, t in tensors.items():
        if t is not None and t.dim() != 4:
            raise ValueError(f"{name} must have shape (B, heads, tokens, dim), got {tuple(t.shape)}")


def _acc(t: torch.Tensor) -> torch.dtype:
    """The dtype sums are kept in: float64 for float64 inputs, float32 otherwise."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


# ---------------------------------------------------------------------------------------------------------
# The normaliser of linear attention (Eq. 3's denominator) and its epsilon conventions.


@dataclass(frozen=True)
class Normaliser:
    """How Eq. (3)'s denominator is kept away from zero, as one published implementation does it.

    den_i = phi'(q_i) . S + eps with S = sum_j phi'(k_j) (``over="sum"``) or its mean over the M keys
    (``over="mean"``), where phi' = phi + ``feature_eps`` on every feature of queries and keys.
    """

    name: str
    eps: float
    over: str  # "sum" or "mean"
    feature_eps: float = 0.0
    source: str = ""

    def eps_on_mean(self, count: int) -> float:
        """eps expressed on the mean over ``count`` keys."""
        return self.eps if self.over == "mean" else self.eps / max(count, 1)


NORMALISERS: dict[str, Normaliser] = {n.name: n for n in [
    Normaliser("sana", 1e-15, "sum", source="SANA (NVlabs/Sana LiteLA.attn_matmul): eps=1e-15 on the sum over keys"),
    Normaliser("lit", 1e-6, "mean", 1e-6, source="LiT App. G pseudo-code: phi + 1e-6 on q and k, "
                                                 "1 / (q . mean(k) + 1e-6)"),
    Normaliser("linfusion", 1e-4, "mean", source="LinFusion (GeneralizedLinearAttention): q . mean(k) + 1e-4"),
    Normaliser("lindit", 1e-6, "sum", source="lindit before issue 23: q . sum(k) + 1e-6"),
]}
# LinFusion's: the smallest bound on d out / d q for dead and near-dead queries of the four, independent of
# the token count (2 max|v| mean(k_c) / 1e-4); measured by `lindit bench precision` (docs/BENCHMARKS.md).
DEFAULT_NORMALISER = "linfusion"


def normaliser(spec: str | float | Normaliser) -> Normaliser:
    """A Normaliser from a convention name (``sana``, ``lit``, ``linfusion``, ``lindit``), a Normaliser, or a
    float (added to the sum over keys, lindit's original form)."""
    if isinstance(spec, Normaliser):
        return spec
    if isinstance(spec, str):
        if spec not in NORMALISERS:
            raise ValueError(f"unknown normaliser {spec!r}; valid: {', '.join(NORMALISERS)} or a float eps >= 0")
        return NORMALISERS[spec]
    if isinstance(spec, (int, float)) and not isinstance(spec, bool) and spec >= 0:
        return Normaliser(f"sum+{spec:g}", float(spec), "sum", source="eps added to the sum over keys")
    raise ValueError(f"eps must be a normaliser name ({', '.join(NORMALISERS)}) or a float >= 0, got {spec!r}")


# ---------------------------------------------------------------------------------------------------------
# Softmax attention.


def softmax_attention(q, k, v, scale: float | None = None):
    """Scaled dot-product attention, EDiT Eq. (1).

    q: (B, H, N, d), k: (B, H, M, d), v: (B, H, M, dv) -> (B, H, N, dv).
    ``scale`` defaults to 1/sqrt(d).
    """
    _check_4d(q=q, k=k, v=v)
    return F.scaled_dot_product_attention(q, k, v, scale=scale)


def softmax_attention_with_lse_reference(q, k, v, scale: float | None = None):
    """``softmax_attention_with_lse`` as written: the full (B, H, N, M) scores in float32. O(N * M) memory."""
    _check_4d(q=q, k=k, v=v)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    acc = _acc(q)
    scores = torch.matmul(q.to(acc), k.to(acc).transpose(-2, -1)) * scale  # (B, H, N, M)
    lse = torch.logsumexp(scores, dim=-1, keepdim=True)  # (B, H, N, 1)
    out = torch.matmul(torch.exp(scores - lse), v.to(acc))  # (B, H, N, dv)
    return out.to(q.dtype), lse


SCORE_CHUNK = 1 << 24  # score elements materialised at once by the chunked softmax (64 MB in float32)


def _query_chunks(q, k):
    """Slices of the query axis such that one chunk's (B, H, n, M) scores hold about SCORE_CHUNK elements."""
    n, per_row = q.shape[-2], max(1, q.shape[0] * q.shape[1] * k.shape[-2])
    step = max(1, SCORE_CHUNK // per_row)
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


def _lse_forward_chunked(q, k, v, scale):
    acc = _acc(q)
    kf, vf = k.to(acc), v.to(acc)
    outs, lses = [], []
    for rows in _query_chunks(q, k):
        s = torch.matmul(q[..., rows, :].to(acc), kf.transpose(-2, -1)) * scale  # (B, H, n, M)
        lse = torch.logsumexp(s, dim=-1, keepdim=True)
        outs.append(torch.matmul(torch.exp(s - lse), vf).to(q.dtype))
        lses.append(lse)
    return torch.cat(outs, dim=-2), torch.cat(lses, dim=-2)


def _lse_forward(q, k, v, scale):
    """(out in q's dtype, lse (B, H, N, 1) float32/64) without the full score matrix."""
    if k.shape[-2] == 0:  # no keys (an empty band): nothing to attend to, weight exp(-inf) = 0 when merged
        return q.new_zeros(*q.shape[:-1], v.shape[-1]), q.new_full((*q.shape[:-1], 1), -math.inf, dtype=_acc(q))
    if q.device.type == "cpu" and v.shape[-1] == q.shape[-1] and q.dtype == k.dtype == v.dtype:
        q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))  # as SDPA hands it them
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False, scale=scale)
        return out, lse.unsqueeze(-1).to(_acc(q))  # the fused kernel: float32 statistics, no (N, M) scores
    return _lse_forward_chunked(q, k, v, scale)


class _SoftmaxWithLSE(torch.autograd.Function):
    """Softmax attention returning its log-normaliser, differentiable in both outputs.

    Backward recomputes the scores a chunk of queries at a time (as flash attention does): with
    P = softmax(S), dS = P * (dout v^T - rowsum(dout * out) + dlse).
    """

    @staticmethod
    def forward(ctx, q, k, v, scale):
        out, lse = _lse_forward(q, k, v, scale)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.scale = scale
        return out, lse

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout, dlse):
        q, k, v, out, lse = ctx.saved_tensors
        acc, scale = _acc(q), ctx.scale
        kf, vf = k.to(acc), v.to(acc)
        dq, dk, dv = torch.empty_like(q, dtype=acc), torch.zeros_like(kf), torch.zeros_like(vf)
        for rows in _query_chunks(q, k):
            qc, doc = q[..., rows, :].to(acc), dout[..., rows, :].to(acc)
            p = torch.exp(torch.matmul(qc, kf.transpose(-2, -1)) * scale - lse[..., rows, :])  # (B, H, n, M)
            d = (doc * out[..., rows, :].to(acc)).sum(-1, keepdim=True)  # (B, H, n, 1)
            ds = p * (torch.matmul(doc, vf.transpose(-2, -1)) - d + dlse[..., rows, :])
            dq[..., rows, :] = torch.matmul(ds, kf) * scale
            dk += torch.matmul(ds.transpose(-2, -1), qc) * scale
            dv += torch.matmul(p.transpose(-2, -1), doc)
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None


def softmax_attention_with_lse(q, k, v, scale: float | None = None):
    """Softmax attention that also returns the log of its normaliser.

    Returns (out (B, H, N, dv) in q's dtype, lse (B, H, N, 1)) with lse_i = log sum_j exp(scale * q_i.k_j) in
    float32 (float64 for float64 inputs). Memory is O((N + M) * d): the fused CPU kernel (or, on other
    devices, chunks of queries) never holds the (N, M) scores; gradients flow through both outputs.
    """
    _check_4d(q=q, k=k, v=v)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    return _SoftmaxWithLSE.apply(q, k, v, scale)


def merge_by_lse(parts):
    """Softmax attention over the union of disjoint key sets from each set's (out, lse): a weighted mean of
    the outs with weights exp(lse - logsumexp(lses)). Returns (out in the first out's dtype, lse)."""
    lse = torch.logsumexp(torch.cat([lse for _, lse in parts], dim=-1), dim=-1, keepdim=True)  # (B, H, N, 1)
    out = sum(torch.exp(part_lse - lse) * part.to(lse.dtype) for part, part_lse in parts)
    return out.to(parts[0][0].dtype), lse


def joint_prompt_attention(q_txt, k_img, v_img, k_txt, v_txt, scale: float | None = None, combine=None):
    """Prompt rows of MM-DiT joint attention (EDiT Eq. 7): softmax over [K_I; K_P] without concatenating them.

    Two softmax attentions, over image keys and over prompt keys, merged by their log-sum-exps (exactly the
    softmax over all keys). q_txt: (B, H, N_P, d); k_img, v_img: (B, H, M_I, d); k_txt, v_txt: (B, H, N_P, d).
    ``combine([(out, lse)]) -> [(out, lse)]`` gathers the image part of every token shard under sequence
    parallelism (default: the local keys are all keys). Returns (B, H, N_P, dv) in q_txt's dtype.
    """
    _check_4d(q_txt=q_txt, k_img=k_img, v_img=v_img, k_txt=k_txt, v_txt=v_txt)
    image = softmax_attention_with_lse(q_txt, k_img.to(q_txt.dtype), v_img.to(q_txt.dtype), scale)
    parts = combine([image]) if combine is not None else [image]
    prompt = softmax_attention_with_lse(q_txt, k_txt, v_txt, scale)
    return merge_by_lse(parts + [prompt])[0]


# ---------------------------------------------------------------------------------------------------------
# Linear attention.


def linear_attention_reference(q, k, v, eps: str | float | Normaliser = DEFAULT_NORMALISER):
    """EDiT Eq. (3) as written, y_i = phi'(q_i) (sum_j phi'(k_j)^T v_j) / (phi'(q_i) sum_j phi'(k_j) + eps'),
    with the normaliser convention ``eps`` (see ``NORMALISERS``), in float32 (float64 for float64 inputs).

    q: (B, H, N, d) and k: (B, H, M, d) are non-negative feature maps; v: (B, H, M, dv). M may differ
    from N (compressed keys). Returns (B, H, N, dv) in q's dtype.
    """
    _check_4d(q=q, k=k, v=v)
    conv, acc = normaliser(eps), _acc(q)
    qf, kf, vf = q.to(acc) + conv.feature_eps, k.to(acc) + conv.feature_eps, v.to(acc)
    m = k.shape[-2] if conv.over == "mean" else 1
    kv = torch.matmul(kf.transpose(-2, -1), vf) / m  # (B, H, d, dv)
    k_sum = kf.sum(dim=-2) / m  # (B, H, d)
    num = torch.matmul(qf, kv)  # (B, H, N, dv)
    den = torch.matmul(qf, k_sum.unsqueeze(-1))  # (B, H, N, 1)
    return (num / (den + conv.eps)).to(q.dtype)


def _absmax(t):
    """max |t| per (B, H) as (B, H, 1, 1) float32, without a full-size |t| temporary."""
    dims = (-2, -1)
    return torch.maximum(t.amax(dim=dims, keepdim=True), -t.amin(dim=dims, keepdim=True)).float().detach()


FP16_TOKEN_CHUNKS = 8  # an fp16 token reduction runs in this many float32 chunks (temporaries: 1/4 of the inputs)


def _token_sum(a, b):
    """sum over tokens of a^T b: a (..., T, p), b (..., T, r) -> (..., p, r) in float32 (float64 for float64).

    The GEMM runs in the input's precision with its float32 accumulation and a 1/T scale applied before the
    result is rounded (bf16 keeps float32's range). fp16 rounds its outputs at 65,504, which sums over many
    tokens exceed whatever the scale, so fp16 inputs run in float32 chunks of tokens instead.
    """
    acc, t = _acc(a), a.shape[-2]
    if a.dtype == torch.float16:
        step = max(1024, -(-t // FP16_TOKEN_CHUNKS))
        f32 = (lambda x: x.to(torch.float32, memory_format=torch.contiguous_format))  # one copy, GEMM-ready
        chunks = [torch.matmul(f32(a[..., i:i + step, :]).transpose(-2, -1), f32(b[..., i:i + step, :]))
                  for i in range(0, t, step)]
        return sum(chunks) if chunks else a.new_zeros(*a.shape[:-2], a.shape[-1], b.shape[-1], dtype=acc)
    a3, b3 = a.reshape(-1, t, a.shape[-1]), b.reshape(-1, t, b.shape[-1])
    mean = torch.baddbmm(a.new_zeros(()), a3.transpose(1, 2), b3, beta=0.0, alpha=1.0 / max(t, 1))
    return mean.view(*a.shape[:-2], *mean.shape[-2:]).to(acc) * t


class _ReadGEMM(torch.autograd.Function):
    """q (G, N, d) @ w (G, d, c) + bias (G, 1, c) in q's precision (float32 accumulation); w and bias stay in
    float32 for autograd and their gradients, sums over the N queries, are ``_token_sum``s (no fp16 overflow)."""

    @staticmethod
    def forward(ctx, q3, w, bias):
        ctx.save_for_backward(q3, w)
        ctx.has_bias = bias is not None
        if bias is None:
            return torch.bmm(q3, w.to(q3.dtype))
        return torch.baddbmm(bias.to(q3.dtype), q3, w.to(q3.dtype))

    @staticmethod
    def backward(ctx, grad):
        q3, w = ctx.saved_tensors
        gq = torch.bmm(grad, w.to(q3.dtype).transpose(1, 2)) if ctx.needs_input_grad[0] else None
        gw = _token_sum(q3, grad).to(w.dtype) if ctx.needs_input_grad[1] else None
        gb = grad.sum(dim=1, keepdim=True, dtype=w.dtype) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gq, gw, gb


def linear_attention_state(k, v, eps: str | float | Normaliser = DEFAULT_NORMALISER):
    """The key-value state of linear attention: (sum_j phi'(k_j)^T [v_j | 1], key count M).

    k: (B, H, M, d), v: (B, H, M, dv) -> ((B, H, d, dv + 1) float32 (float64 for float64 inputs), M).
    Padding the values with a column of ones (as SANA does) makes one GEMM yield the numerator and the
    normaliser. The GEMM runs in the input's precision with float32 accumulation (``_token_sum``); the state
    is kept in float32. States of token shards add up (sequence parallelism all-reduces them);
    ``linear_attention_apply`` reads them. ``eps``: the normaliser convention; LiT's adds its feature epsilon
    to every key here.
    """
    conv, acc, m = normaliser(eps), _acc(k), k.shape[-2]
    v1 = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)  # (B, H, M, dv + 1)
    state = _token_sum(k, v1)  # (B, H, d, dv + 1): sums over keys
    if conv.feature_eps:  # sum_j (k_j + e)^T [v_j | 1] = sum_j k_j^T [v_j | 1] + e * sum_j [v_j | 1] on every row
        v_sum = torch.cat([v.sum(dim=-2, keepdim=True).to(acc), state.new_full((*v.shape[:-2], 1, 1), m)], dim=-1)
        state = state + conv.feature_eps * v_sum
    return state, m


def _apply_scale(q, w):
    """A factor per (B, H) such that q @ (w / factor) is O(1) per feature and within q's dtype's range.
    Eq. (3) is a ratio, so the factor cancels: it is a constant for autograd (detached)."""
    scale = w.detach().abs().amax(dim=(-2, -1), keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)  # (B, H, 1, 1)
    if q.dtype == torch.float16:  # |q @ w| <= d * max|q| * max|w|: keep it under 2^12
        scale = scale * (_absmax(q).to(w.dtype) * q.shape[-1] / 2.0**12).clamp_min(1.0)
    return scale


def _read_state(q, state, count: int, eps, with_log_norm: bool = False):
    """Eq. (3) from a state: (out (B, H, N, dv) in q's dtype, log sum_j phi'(q_i).phi'(k_j) or None)."""
    conv = normaliser(eps)
    w = state / max(count, 1)  # (B, H, d, dv + 1): means over keys
    scale = _apply_scale(q, w)
    ws = w / scale  # (B, H, d, dv + 1), entries O(1)
    # (q + e) @ w = q @ w + e * (column sums of w): LiT's query shift rides along as the GEMM's bias
    shift = conv.feature_eps * ws.sum(dim=-2, keepdim=True) if conv.feature_eps else None  # (B, H, 1, dv + 1)
    flat = (lambda t: None if t is None else t.reshape(-1, *t.shape[-2:]))
    num_den = _ReadGEMM.apply(flat(q), flat(ws), flat(shift)).view(*q.shape[:-1], ws.shape[-1])  # (B, H, N, dv + 1)
    num, den = num_den[..., :-1], num_den[..., -1:].to(w.dtype)  # den: (B, H, N, 1)
    # A division (not a reciprocal, whose backward squares it) keeps a dead query's gradient finite and exact:
    # 0 / eps in forward, -g (num / x) / x = 0 in backward. The floor binds only in fp16 (its smallest subnormal),
    # for queries whose den is below fp16's resolution anyway.
    x = (den + conv.eps_on_mean(count) / scale).clamp_min(2.0**-24 if q.dtype == torch.float16 else 0.0)
    out = num / x.to(q.dtype)  # (B, H, N, dv)
    if not with_log_norm:
        return out, None
    log_norm = torch.log(den.clamp_min(torch.finfo(w.dtype).tiny)) + torch.log(scale * max(count, 1))  # no
    # math.log(count): a Python float of the key count would make torch.compile specialise on the image size
    return out, log_norm


def linear_attention_apply(q, state, count: int, eps: str | float | Normaliser = DEFAULT_NORMALISER):
    """Read a state with queries: q (B, H, N, d) -> (B, H, N, dv) in q's dtype, Eq. (3).

    The state is divided by the key count and rescaled per head to O(1) entries before the GEMM (in q's
    precision, float32 accumulation; no overflow in fp16 whatever the image size), with eps rescaled to match.
    """
    return _read_state(q, state, count, eps)[0]


def _identity_reduce(state, count):
    return state, count


def linear_attention(q, k, v, eps: str | float | Normaliser = DEFAULT_NORMALISER, reduce_state=None):
    """Linear attention, EDiT Eq. (3) / LiT Eq. (3).

    q: (B, H, N, d), k: (B, H, M, d) non-negative feature maps (phi already applied); v: (B, H, M, dv).
    Returns (B, H, N, dv) in q's dtype. Equals ``linear_attention_reference``: against it in float64 at
    262,144 tokens, including all-zero and very large inputs, the output stays within 1e-2 * max|v| (bf16),
    2e-3 (fp16), 1e-5 (fp32) and each gradient within 3e-2, 2e-2, 5e-5 of the largest (tested; measured by
    ``lindit bench precision``). ``eps`` is the normaliser convention (a name of ``NORMALISERS``; default
    LinFusion's). Temporaries stay within about 2x the size of q.
    ``reduce_state(state, count) -> (state, count)`` combines the states of token shards (sequence
    parallelism); the default keeps the local one.
    """
    _check_4d(q=q, k=k, v=v)
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k and v need the same token count, got {k.shape[-2]} and {v.shape[-2]}")
    state, count = (reduce_state or _identity_reduce)(*linear_attention_state(k, v, eps))
    return linear_attention_apply(q, state, count, eps)


def approx_eta(n_img: int, n_txt: int) -> float:
    """The token-count approximation of eta^Lin (EDiT Sec. 3.2): N_I / (N_I + N_P)."""
    return n_img / (n_img + n_txt)


# ---------------------------------------------------------------------------------------------------------
# MM-EDiT's hybrid attention, EDiT Eq. (7).


def _check_hybrid(image_attention, eta, eta_logit_bias, q_img, q_ip, k_img, k_is) -> bool:
    if image_attention not in ("linear", "softmax"):
        raise ValueError(f"image_attention must be 'linear' or 'softmax', got {image_attention!r}")
    exact = _check_eta(eta)
    if eta_logit_bias is not None and eta != "approx":
        raise ValueError(f"eta_logit_bias corrects eta='approx' only, got eta={eta!r}")
    if q_ip.shape != q_img.shape:
        raise ValueError(f"q_img_softmax must have q_img's shape {tuple(q_img.shape)}, got {tuple(q_ip.shape)}")
    if k_is.shape != k_img.shape:
        raise ValueError(f"k_img_softmax must have k_img's shape {tuple(k_img.shape)}, got {tuple(k_is.shape)}")
    return exact


def _eta_weight(eta, n_img, q_img, k_txt, eta_logit_bias):
    if not isinstance(eta, str):
        return float(eta)
    w = approx_eta(q_img.shape[-2] if n_img is None else n_img, k_txt.shape[-2])
    return w if eta_logit_bias is None else _biased_eta(w, eta_logit_bias, q_img.shape[1])  # (1, H, 1, 1)


def moment_log_normaliser(q, k, scale: float | None = None, count: int | None = None, reduce_state=None):
    """log sum_j exp(scale q_i.k_j) estimated in linear time from the keys' mean and covariance.

    If the scores s_j = scale q.k_j of one query are roughly Gaussian over the keys (mean scale q.mu,
    variance scale^2 q^T Sigma q), sum_j exp(s_j) = N E[exp(s)] = N exp(scale q.mu + scale^2 q^T Sigma q / 2)
    (the log-normal approximation: the log-partition function to its second cumulant). mu and Sigma come
    from the state sum_j k_j^T [k_j | 1] (``linear_attention_state(k, k)``), O(M d^2), so shard states add up
    under ``reduce_state`` as linear attention's do. q: (B, H, N, d), k: (B, H, M, d) -> (B, H, N, 1) float32.
    ``count``: the N of the log N term, default the key count M (pass the uncompressed token count when k
    are compressed keys standing for more tokens); ``scale`` defaults to 1/sqrt(d).
    """
    _check_4d(q=q, k=k)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    state, m = (reduce_state or _identity_reduce)(*linear_attention_state(k, k, 0.0))  # (B, H, d, d + 1)
    mean = state[..., -1] / m  # (B, H, d)
    cov = state[..., :-1] / m - mean.unsqueeze(-1) * mean.unsqueeze(-2)  # (B, H, d, d)
    qf = q.float()
    first = torch.matmul(qf, mean.unsqueeze(-1))  # (B, H, N, 1)
    second = (torch.matmul(qf, cov) * qf).sum(dim=-1, keepdim=True)  # (B, H, N, 1)
    return math.log(m if count is None else count) + scale * first + 0.5 * scale**2 * second



def hybrid_attention(
    q_img,
    k_img,
    v_img,
    q_txt,
    k_txt,
    v_txt,
    *,
    image_attention: str = "linear",
    eta: str | float = "approx",
    scale: float | None = None,
    n_img: int | None = None,
    eps: str | float | Normaliser = DEFAULT_NORMALISER,
    reduce_state=None,
    eta_logit_bias: torch.Tensor | None = None,
    q_img_softmax: torch.Tensor | None = None,
    combine=None,
    k_img_softmax: torch.Tensor | None = None,
):
    """MM-EDiT hybrid joint attention, EDiT Eq. (7).

    Image queries: eta * A_img(Q_I, K_I, V_I) + (1 - eta) * softmax(Q_I, K_P, V_P), where A_img is linear
    attention (``image_attention="linear"``; q_img and k_img must then be non-negative feature maps) or
    softmax attention (``"softmax"``). Prompt queries: softmax attention over [K_I; K_P], computed as two
    softmax attentions merged by their log-sum-exps (``joint_prompt_attention``).

    Shapes: q_img (B, H, N_I, d); k_img, v_img (B, H, M_I, d) with M_I <= N_I when compressed;
    q_txt (B, H, N_P, d) or None (a context-pre-only block needs no prompt output); k_txt, v_txt
    (B, H, N_P, d). Returns (out_img (B, H, N_I, dv), out_txt (B, H, N_P, dv) or None).

    eta:
      * "approx": eta = n_img / (n_img + N_P). ``n_img`` defaults to N_I, the number of image *queries*
        (the uncompressed image token count), which is the teacher's N_I in joint attention; pass
        ``n_img=k_img.shape[-2]`` to count compressed keys instead, or the global count under sequence
        parallelism.
      * "exact": eta^Lin per query, S_I / (S_I + S_P) with S_I = sum_j phi(q).phi(k_j) (linear, unscaled)
        or sum_j exp(scale q.k_j) (softmax), and S_P = sum_j' exp(scale q.k_P_j'); computed in log space from
        the attentions' own normalisers, never the (N_I, N_P) scores.
        With ``image_attention="softmax"`` this is the exact decomposition of joint attention (Eq. 6).
      * "moments": Eq. 6's eta per query, S_I / (S_I + S_P) with both S the softmax sums, in linear time:
        S_P exactly (the prompt block is softmax anyway) and S_I estimated from the mean and covariance of
        the image keys (``moment_log_normaliser``, with the count ``n_img`` as for "approx").
      * a float in [0, 1]: a fixed mixing weight.
    ``eta_logit_bias`` (H,), only with "approx": per-head eta = sigmoid(logit(N_I / (N_I + N_P)) + bias_h),
    lindit's learnable correction of the token-count approximation (zero bias = the paper's eta).
    ``q_img_softmax`` (B, H, N_I, d): the image queries of softmax(Q_I, K_P, V_P) when they differ from the
    linear term's feature maps (lindit's ``softmax_qk="raw"``); default ``q_img``, as in Eq. 7.
    ``k_img_softmax`` (B, H, M_I, d): likewise the image keys of the softmax similarity, which
    ``eta="moments"`` estimates S_I with; default ``k_img``.
    The softmax similarity uses ``scale`` (default 1/sqrt(d)); the linear similarity is unscaled.
    ``eps`` is the linear term's normaliser convention (see ``NORMALISERS``).
    ``reduce_state`` combines the image-image linear state across token shards (see ``linear_attention``)
    and ``combine`` the prompt rows' image part (see ``joint_prompt_attention``).
    """
    _check_4d(q_img=q_img, k_img=k_img, v_img=v_img, q_txt=q_txt, k_txt=k_txt, v_txt=v_txt)
    q_ip = q_img if q_img_softmax is None else q_img_softmax
    k_is = k_img if k_img_softmax is None else k_img_softmax
    exact = _check_hybrid(image_attention, eta, eta_logit_bias, q_img, q_ip, k_img, k_is)
    moments = eta == "moments"
    if exact or moments:
        out_ip, lse_ip = softmax_attention_with_lse(q_ip.to(k_txt.dtype), k_txt, v_txt, scale)
    else:
        out_ip = softmax_attention(q_ip.to(k_txt.dtype), k_txt, v_txt, scale=scale)  # (B, H, N_I, dv)
    if image_attention == "linear":
        state, count = (reduce_state or _identity_reduce)(*linear_attention_state(k_img, v_img, eps))
        out_ii, log_s_ii = _read_state(q_img, state, count, eps, with_log_norm=exact)
    else:
        out_ii, log_s_ii = softmax_attention_with_lse(q_img, k_img, v_img, scale)
    if exact:
        w = torch.sigmoid(log_s_ii - lse_ip)  # (B, H, N_I, 1): S_I / (S_I + S_P), stable for any magnitude
    elif moments:
        n = q_img.shape[-2] if n_img is None else n_img
        w = torch.sigmoid(moment_log_normaliser(q_ip, k_is, scale, n, reduce_state) - lse_ip)  # (B, H, N_I, 1)
    else:
        w = _eta_weight(eta, n_img, q_img, k_txt, eta_logit_bias)
    dtype = q_img.dtype
    w = w.to(dtype) if torch.is_tensor(w) else w
    out_img = torch.lerp(out_ip.to(dtype), out_ii.to(dtype), w)  # (1 - eta) A_ip + eta A_ii, (B, H, N_I, dv)
    out_txt = None
    if q_txt is not None:
        out_txt = joint_prompt_attention(q_txt, k_img, v_img, k_txt, v_txt, scale, combine)  # (B, H, N_P, dv)
    return out_img, out_txt


def _biased_eta(eta: float, bias: torch.Tensor, heads: int) -> torch.Tensor:
    """sigmoid(logit(eta) + bias_h) as (1, H, 1, 1) float32."""
    if bias.shape != (heads,):
        raise ValueError(f"eta_logit_bias must have shape ({heads},) (one per head), got {tuple(bias.shape)}")
    return torch.sigmoid(math.log(eta / (1 - eta)) + bias.float()).view(1, heads, 1, 1)


def _check_eta(eta) -> bool:
    """True when eta is "exact"; validates the other accepted forms."""
    if isinstance(eta, str):
        if eta not in ("approx", "exact", "moments"):
            raise ValueError(f"eta must be 'approx', 'exact', 'moments' or a float in [0, 1], got {eta!r}")
        return eta == "exact"
    if not 0.0 <= float(eta) <= 1.0:
        raise ValueError(f"a fixed eta must lie in [0, 1], got {eta}")
    return False


def hybrid_attention_reference(q_img, k_img, v_img, q_txt, k_txt, v_txt, *, image_attention="linear",
                               eta="approx", scale=None, n_img=None, eps=DEFAULT_NORMALISER,
                               eta_logit_bias=None, q_img_softmax=None, k_img_softmax=None):
    """``hybrid_attention`` as first written (the form the fast one is tested against): for eta^Lin the
    image-prompt scores materialised as (B, H, N_I, N_P) float32 tensors, the linear term in float32, and the
    prompt rows as one softmax over the concatenated [K_I; K_P]. Same arguments (no sharding hooks) and outputs."""
    _check_4d(q_img=q_img, k_img=k_img, v_img=v_img, q_txt=q_txt, k_txt=k_txt, v_txt=v_txt)
    q_ip = q_img if q_img_softmax is None else q_img_softmax
    k_is = k_img if k_img_softmax is None else k_img_softmax
    exact = _check_hybrid(image_attention, eta, eta_logit_bias, q_img, q_ip, k_img, k_is)
    acc = _acc(q_img)
    if exact or eta == "moments":
        out_ip, lse_ip = softmax_attention_with_lse_reference(q_ip, k_txt, v_txt, scale)
    else:
        out_ip = softmax_attention(q_ip.to(k_txt.dtype), k_txt, v_txt, scale=scale)
    if image_attention == "linear":
        out_ii, log_s_ii = linear_attention_reference(q_img, k_img, v_img, eps).to(acc), None
        if exact:  # log sum_j phi'(q).phi'(k_j) = log phi'(q) . sum_j phi'(k_j), as first written
            conv = normaliser(eps)
            k_sum = (k_img.to(acc) + conv.feature_eps).sum(dim=-2).unsqueeze(-1)  # (B, H, d, 1)
            log_s_ii = torch.log(((q_img.to(acc) + conv.feature_eps) @ k_sum).clamp_min(torch.finfo(acc).tiny))
    else:
        out_ii, log_s_ii = softmax_attention_with_lse_reference(q_img, k_img, v_img, scale)
    if exact:
        w = torch.sigmoid(log_s_ii - lse_ip)
    elif eta == "moments":  # two passes: the keys' mean, then their centred covariance
        n = q_img.shape[-2] if n_img is None else n_img
        w = torch.sigmoid(_moments_reference(q_ip.to(acc), k_is.to(acc), scale, n) - lse_ip.to(acc))
    else:
        w = _eta_weight(eta, n_img, q_img, k_txt, eta_logit_bias)
    out_img = (w * out_ii.to(acc) + (1 - w) * out_ip.to(acc)).to(q_img.dtype)
    out_txt = None
    if q_txt is not None:
        k_all = torch.cat([k_img.to(k_txt.dtype), k_txt], dim=-2)  # (B, H, M_I + N_P, d)
        v_all = torch.cat([v_img.to(v_txt.dtype), v_txt], dim=-2)
        out_txt = softmax_attention(q_txt, k_all, v_all, scale=scale)
    return out_img, out_txt


def _moments_reference(q, k, scale, count):
    """log N + scale q.mu + scale^2 q^T Sigma q / 2 with mu, Sigma the keys' mean and (biased) covariance."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    mu = k.mean(dim=-2, keepdim=True)  # (B, H, 1, d)
    kc = k - mu
    cov = kc.transpose(-1, -2) @ kc / k.shape[-2]  # (B, H, d, d)
    quad = ((q @ cov) * q).sum(dim=-1, keepdim=True)  # (B, H, N, 1)
    return math.log(count) + scale * (q @ mu.transpose(-1, -2)) + 0.5 * scale**2 * quad
