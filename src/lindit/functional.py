"""Attention as pure functions on (B, heads, tokens, dim) tensors.

Every mechanism of EDiT and LiT reduces to three computations:

* ``softmax_attention``: scaled dot-product attention, EDiT Eq. (1).
* ``linear_attention``: kernelised attention with feature maps already applied, EDiT Eq. (3) / LiT Eq. (3).
* ``hybrid_attention``: MM-EDiT's mix of linear image-image attention and softmax attention for every
  pair that involves a prompt token, EDiT Eq. (7).

``*_reference`` functions are the plain, obviously-correct forms that every faster path is tested against.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "softmax_attention",
    "softmax_attention_with_lse",
    "linear_attention",
    "linear_attention_reference",
    "linear_attention_state",
    "linear_attention_apply",
    "hybrid_attention",
    "approx_eta",
    "moment_log_normaliser",
]


def _check_4d(**tensors: torch.Tensor | None) -> None:
    for name, t in tensors.items():
        if t is not None and t.dim() != 4:
            raise ValueError(f"{name} must have shape (B, heads, tokens, dim), got {tuple(t.shape)}")


def softmax_attention(q, k, v, scale: float | None = None):
    """Scaled dot-product attention, EDiT Eq. (1).

    q: (B, H, N, d), k: (B, H, M, d), v: (B, H, M, dv) -> (B, H, N, dv).
    ``scale`` defaults to 1/sqrt(d).
    """
    _check_4d(q=q, k=k, v=v)
    return F.scaled_dot_product_attention(q, k, v, scale=scale)


def softmax_attention_with_lse(q, k, v, scale: float | None = None):
    """Softmax attention that also returns the log of its normaliser.

    Returns (out (B, H, N, dv), lse (B, H, N, 1)) with lse_i = log sum_j exp(scale * q_i.k_j), computed in
    float32. Memory is O(N * M): meant for blocks where one side is small (prompt tokens) or for references.
    """
    _check_4d(q=q, k=k, v=v)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = torch.matmul(q.float(), k.float().transpose(-2, -1)) * scale  # (B, H, N, M)
    lse = torch.logsumexp(scores, dim=-1, keepdim=True)  # (B, H, N, 1)
    out = torch.matmul(torch.exp(scores - lse), v.float())  # (B, H, N, dv)
    return out.to(q.dtype), lse


def linear_attention_reference(q, k, v, eps: float = 1e-6):
    """EDiT Eq. (3) as written: y_i = q_i (sum_j k_j^T v_j) / (q_i sum_j k_j + eps), all in float32.

    q: (B, H, N, d) and k: (B, H, M, d) are non-negative feature maps; v: (B, H, M, dv). M may differ
    from N (compressed keys). Returns (B, H, N, dv) in q's dtype.
    """
    _check_4d(q=q, k=k, v=v)
    qf, kf, vf = q.float(), k.float(), v.float()
    kv = torch.matmul(kf.transpose(-2, -1), vf)  # (B, H, d, dv)
    k_sum = kf.sum(dim=-2)  # (B, H, d)
    num = torch.matmul(qf, kv)  # (B, H, N, dv)
    den = torch.matmul(qf, k_sum.unsqueeze(-1))  # (B, H, N, 1)
    return (num / (den + eps)).to(q.dtype)


def linear_attention_state(k, v):
    """The key-value state of linear attention: (sum_j k_j^T [v_j | 1], key count), in float32.

    k: (B, H, M, d), v: (B, H, M, dv) -> ((B, H, d, dv + 1), M). Padding the values with a column of ones
    (as SANA does) makes one matmul yield both the numerator and the normaliser. States of token shards
    add up (sequence parallelism all-reduces them); ``linear_attention_apply`` divides by the count.
    """
    ones = torch.ones(*v.shape[:-1], 1, dtype=torch.float32, device=v.device)
    v1 = torch.cat([v.float(), ones], dim=-1)  # (B, H, M, dv + 1)
    return torch.matmul(k.float().transpose(-2, -1), v1), k.shape[-2]  # (B, H, d, dv + 1)


def linear_attention_apply(q, state, count: int, eps: float):
    """Read a state with queries: q (B, H, N, d) -> (B, H, N, dv) float32, Eq. (3) with eps.

    The state is divided by the key count first, so its entries are means: O(1) in magnitude whatever the
    image size (no overflow in low-precision matmuls), with eps rescaled to match.
    """
    num_den = torch.matmul(q.to(state.dtype), state / count)  # (B, H, N, dv + 1)
    num, den = num_den[..., :-1], num_den[..., -1:]
    return num / (den + eps / count)


def _identity_reduce(state, count):
    return state, count


def linear_attention(q, k, v, eps: float = 1e-6, reduce_state=None):
    """Linear attention, EDiT Eq. (3) / LiT Eq. (3), accumulated in float32.

    q: (B, H, N, d), k: (B, H, M, d) non-negative feature maps (phi already applied); v: (B, H, M, dv).
    Returns (B, H, N, dv) in q's dtype. Equals ``linear_attention_reference`` (the denominator is
    q_i . sum_j k_j + eps) but stays finite for fp16/bf16 inputs of any length (262,144 tokens and beyond).
    ``reduce_state(state, count) -> (state, count)`` combines the states of token shards (sequence
    parallelism); the default keeps the local one.
    """
    _check_4d(q=q, k=k, v=v)
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k and v need the same token count, got {k.shape[-2]} and {v.shape[-2]}")
    state, count = (reduce_state or _identity_reduce)(*linear_attention_state(k, v))
    return linear_attention_apply(q, state, count, eps).to(q.dtype)


def approx_eta(n_img: int, n_txt: int) -> float:
    """The token-count approximation of eta^Lin (EDiT Sec. 3.2): N_I / (N_I + N_P)."""
    return n_img / (n_img + n_txt)


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
    state, m = (reduce_state or _identity_reduce)(*linear_attention_state(k, k))  # (B, H, d, d + 1)
    mean = state[..., -1] / m  # (B, H, d)
    cov = state[..., :-1] / m - mean.unsqueeze(-1) * mean.unsqueeze(-2)  # (B, H, d, d)
    qf = q.float()
    first = torch.matmul(qf, mean.unsqueeze(-1))  # (B, H, N, 1)
    second = (torch.matmul(qf, cov) * qf).sum(dim=-1, keepdim=True)  # (B, H, N, 1)
    return math.log(m if count is None else count) + scale * first + 0.5 * scale**2 * second


def _linear_with_log_normaliser(q, k, v, eps: float, reduce_state=None):
    """Linear attention plus log sum_j phi(q_i).phi(k_j) (unscaled similarity), for eta^Lin."""
    state, count = (reduce_state or _identity_reduce)(*linear_attention_state(k, v))  # (B, H, d, dv + 1)
    out = linear_attention_apply(q, state, count, eps)  # (B, H, N, dv)
    den = torch.matmul(q.float(), state[..., -1:] / count)  # (B, H, N, 1) = sum_j q.k_j / M
    log_norm = torch.log(den.clamp_min(torch.finfo(torch.float32).tiny)) + math.log(count)
    return out, log_norm


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
    eps: float = 1e-6,
    reduce_state=None,
    eta_logit_bias: torch.Tensor | None = None,
    q_img_softmax: torch.Tensor | None = None,
    k_img_softmax: torch.Tensor | None = None,
):
    """MM-EDiT hybrid joint attention, EDiT Eq. (7).

    Image queries: eta * A_img(Q_I, K_I, V_I) + (1 - eta) * softmax(Q_I, K_P, V_P), where A_img is linear
    attention (``image_attention="linear"``; q_img and k_img must then be non-negative feature maps) or
    softmax attention (``"softmax"``). Prompt queries: softmax attention over [K_I; K_P].

    Shapes: q_img (B, H, N_I, d); k_img, v_img (B, H, M_I, d) with M_I <= N_I when compressed;
    q_txt (B, H, N_P, d) or None (a context-pre-only block needs no prompt output); k_txt, v_txt
    (B, H, N_P, d). Returns (out_img (B, H, N_I, dv), out_txt (B, H, N_P, dv) or None).

    eta:
      * "approx": eta = n_img / (n_img + N_P). ``n_img`` defaults to N_I, the number of image *queries*
        (the uncompressed image token count), which is the teacher's N_I in joint attention; pass
        ``n_img=k_img.shape[-2]`` to count compressed keys instead, or the global count under sequence
        parallelism.
      * "exact": eta^Lin per query, S_I / (S_I + S_P) with S_I = sum_j phi(q).phi(k_j) (linear, unscaled)
        or sum_j exp(scale q.k_j) (softmax), and S_P = sum_j' exp(scale q.k_P_j'); computed in log space.
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
    ``reduce_state`` combines the image-image linear state across token shards (see ``linear_attention``);
    under sequence parallelism prompt queries must see every image key, so shard callers pass
    ``q_txt=None`` and attend for the prompt themselves.
    """
    _check_4d(q_img=q_img, k_img=k_img, v_img=v_img, q_txt=q_txt, k_txt=k_txt, v_txt=v_txt)
    if image_attention not in ("linear", "softmax"):
        raise ValueError(f"image_attention must be 'linear' or 'softmax', got {image_attention!r}")
    exact = _check_eta(eta)
    if eta_logit_bias is not None and eta != "approx":
        raise ValueError(f"eta_logit_bias corrects eta='approx' only, got eta={eta!r}")
    q_ip = q_img if q_img_softmax is None else q_img_softmax
    if q_ip.shape != q_img.shape:
        raise ValueError(f"q_img_softmax must have q_img's shape {tuple(q_img.shape)}, got {tuple(q_ip.shape)}")
    k_is = k_img if k_img_softmax is None else k_img_softmax
    if k_is.shape != k_img.shape:
        raise ValueError(f"k_img_softmax must have k_img's shape {tuple(k_img.shape)}, got {tuple(k_is.shape)}")
    moments = eta == "moments"
    out_ip, lse_ip = _image_prompt_block(q_ip, k_txt, v_txt, scale, need_lse=exact or moments)
    if image_attention == "linear" and not exact:
        out_ii, log_s_ii = linear_attention(q_img, k_img, v_img, eps, reduce_state).float(), None
    elif image_attention == "linear":
        out_ii, log_s_ii = _linear_with_log_normaliser(q_img, k_img, v_img, eps, reduce_state)
    else:
        out_ii, log_s_ii = softmax_attention_with_lse(q_img, k_img, v_img, scale)
        out_ii = out_ii.float()
    if exact:
        w = torch.sigmoid(log_s_ii - lse_ip)  # (B, H, N_I, 1): S_I / (S_I + S_P), stable for any magnitude
    elif moments:
        n = q_img.shape[-2] if n_img is None else n_img
        w = torch.sigmoid(moment_log_normaliser(q_ip, k_is, scale, n, reduce_state) - lse_ip)  # (B, H, N_I, 1)
    elif isinstance(eta, str):
        w = approx_eta(q_img.shape[-2] if n_img is None else n_img, k_txt.shape[-2])
        if eta_logit_bias is not None:
            w = _biased_eta(w, eta_logit_bias, q_img.shape[1])  # (1, H, 1, 1)
    else:
        w = float(eta)
    out_img = (w * out_ii + (1 - w) * out_ip.float()).to(q_img.dtype)  # (B, H, N_I, dv)
    out_txt = None
    if q_txt is not None:
        k_all = torch.cat([k_img.to(k_txt.dtype), k_txt], dim=-2)  # (B, H, M_I + N_P, d)
        v_all = torch.cat([v_img.to(v_txt.dtype), v_txt], dim=-2)
        out_txt = softmax_attention(q_txt, k_all, v_all, scale=scale)  # (B, H, N_P, dv)
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


def _image_prompt_block(q_img, k_txt, v_txt, scale, need_lse: bool):
    """softmax(Q_I, K_P, V_P), with its log-normaliser when eta^Lin needs it. O(N_I * N_P)."""
    if need_lse:
        return softmax_attention_with_lse(q_img, k_txt, v_txt, scale)
    q = q_img.to(k_txt.dtype)
    return softmax_attention(q, k_txt, v_txt, scale=scale), None
