"""Reference building blocks in float64: grids, explicit convolutions, norms, full attention matrices."""

from __future__ import annotations

import math

import torch


class Params:
    """A layer's parameters as float64 leaves, read by name; remembers which names a reference read."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        self.tensors = tensors
        self.read: set[str] = set()

    @classmethod
    def of(cls, module: torch.nn.Module) -> Params:
        return cls({n: p.detach().double().clone().requires_grad_() for n, p in module.named_parameters()})

    def __getitem__(self, name: str) -> torch.Tensor:
        self.read.add(name)
        return self.tensors[name]

    def get(self, name: str) -> torch.Tensor | None:
        return self[name] if name in self.tensors else None

    def unread(self) -> set[str]:
        return set(self.tensors) - self.read


def to_grid(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Tokens (B, N, C) -> image (B, C, h, w): token n sits at row n // w, column n % w."""
    b, n, c = x.shape
    assert n == h * w, (n, h, w)
    rows = [torch.stack([x[:, r * w + col] for col in range(w)], dim=-1) for r in range(h)]  # h x (B, C, w)
    return torch.stack(rows, dim=-2)  # (B, C, h, w)


def to_seq(img: torch.Tensor) -> torch.Tensor:
    """Image (B, C, h, w) -> tokens (B, h*w, C), row by row."""
    h, w = img.shape[-2:]
    return torch.stack([img[:, :, r, col] for r in range(h) for col in range(w)], dim=1)


def conv2d(img, weight, bias=None, stride=1, padding=0, groups=1):
    """Zero-padded 2D convolution (cross-correlation, as every framework's conv) as a loop over kernel taps.

    img (B, C_in, H, W); weight (C_out, C_in / groups, k, k) -> (B, C_out, H_out, W_out) with
    H_out = (H + 2p - k) // s + 1. Output (i, j) reads input (i*s + a - p, j*s + b - p) with weight[..., a, b].
    """
    b, c_in, h, w = img.shape
    c_out, c_per, k, _ = weight.shape
    h_out, w_out = (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1
    padded = img.new_zeros(b, c_in, h + 2 * padding, w + 2 * padding)
    padded[:, :, padding:padding + h, padding:padding + w] = img
    out_per = c_out // groups
    out = img.new_zeros(b, c_out, h_out, w_out)
    for g in range(groups):
        x_g = padded[:, g * c_per:(g + 1) * c_per]
        w_g = weight[g * out_per:(g + 1) * out_per]  # (out_per, c_per, k, k)
        for a in range(k):
            for bb in range(k):
                patch = x_g[:, :, a:a + stride * (h_out - 1) + 1:stride, bb:bb + stride * (w_out - 1) + 1:stride]
                out[:, g * out_per:(g + 1) * out_per] += torch.einsum("oc,bchw->bohw", w_g[:, :, a, bb], patch)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


def linear(x, weight, bias=None):
    """x (..., C_in) with weight (C_out, C_in): y_o = sum_c W_oc x_c + b_o."""
    y = torch.einsum("...c,oc->...o", x, weight)
    return y if bias is None else y + bias


def group_norm(img, groups: int, weight, bias, eps: float = 1e-5):
    """GroupNorm: statistics over each group's channels and every position of the image (biased variance)."""
    b, c, h, w = img.shape
    x = img.reshape(b, groups, c // groups * h * w)
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    y = ((x - mean) / torch.sqrt(var + eps)).reshape(b, c, h, w)
    return y * weight.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)


def layer_norm(x, weight, bias, eps: float = 1e-5):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def rms_norm(x, weight, eps: float = 1e-6):
    return x / torch.sqrt((x**2).mean(-1, keepdim=True) + eps) * weight


def leaky_relu(x, slope: float = 0.01):
    return torch.where(x >= 0, x, slope * x)


def silu(x):
    return x / (1 + torch.exp(-x))


def elu1(x):
    """1 + ELU(x): LinFusion's (and Katharopoulos et al.'s) positive feature map."""
    return 1 + torch.where(x > 0, x, torch.exp(x) - 1)


FEATURES = {"relu": torch.relu, "elu1": elu1, "identity": lambda x: x}


def heads(x, n_heads: int):
    """(B, N, H*d) -> (B, H, N, d): head h owns channels [h*d, (h+1)*d)."""
    b, n, c = x.shape
    d = c // n_heads
    return torch.stack([x[:, :, i * d:(i + 1) * d] for i in range(n_heads)], dim=1)


def merge(x):
    """(B, H, N, d) -> (B, N, H*d), head after head."""
    return torch.cat(list(x.unbind(1)), dim=-1)


def similarity_linear(q, k):
    """The N x M matrix phi(q_i) . phi(k_j) (features already applied)."""
    return torch.einsum("bhnd,bhmd->bhnm", q, k)


def linear_attention(q, k, v, eps="lindit"):
    """EDiT Eq. (2) with sim = phi(q).phi(k), the full N x M matrix, guarded as the layer under test guards
    its denominator (its convention, ``lindit.functional.NORMALISERS``; a float is added to the sum):

        y_i = (sum_j s_ij v_j / Z) / (sum_j s_ij / Z + eps),  s_ij = (phi(q_i) + e) . (phi(k_j) + e)

    with Z = 1 (eps on the sum: SANA, lindit) or Z = M (eps on the mean: LinFusion, LiT) and e LiT's
    per-feature epsilon (0 elsewhere).
    """
    from lindit.functional import normaliser  # the conventions' constants only

    conv = normaliser(eps)
    s = similarity_linear(q + conv.feature_eps, k + conv.feature_eps)  # (B, H, N, M)
    z = k.shape[-2] if conv.over == "mean" else 1
    return (torch.einsum("bhnm,bhmd->bhnd", s, v) / z) / (s.sum(-1, keepdim=True) / z + conv.eps)


def softmax_scores(q, k, scale: float | None = None):
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    return torch.einsum("bhnd,bhmd->bhnm", q, k) * scale  # (B, H, N, M)


def softmax_attention(q, k, v, scale: float | None = None):
    """EDiT Eq. (1): softmax(q k^T / sqrt(d)) v with the full N x M matrix."""
    s = softmax_scores(q, k, scale)
    p = torch.exp(s - s.amax(-1, keepdim=True))
    return torch.einsum("bhnm,bhmd->bhnd", p / p.sum(-1, keepdim=True), v)
