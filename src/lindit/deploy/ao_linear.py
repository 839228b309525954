"""int8 dynamic quantization with torch.ao's own kernels, held in plain tensors.

torch.ao's ``DynamicQuantizedLinear`` keeps its weight in an opaque packed object that safetensors
cannot store. ``DynamicInt8Linear`` instead keeps the int8 weight and its per-channel scales as ordinary
buffers (so ``lindit.save`` writes them like any tensor) and packs them for the kernel
(``quantized::linear_dynamic``, fbgemm / oneDNN) on first use, again whenever they change.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

QMAX = 127  # symmetric int8; -128 is unused so that the range is symmetric


def int8_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """weight (out, in) float -> (int8 (out, in), scale (out,) float32) with weight ~ int8 * scale."""
    w = weight.detach().float()
    scale = (w.abs().amax(dim=1) / QMAX).clamp_min(torch.finfo(torch.float32).tiny)  # (out,)
    q = torch.round(w / scale[:, None]).clamp(-QMAX, QMAX).to(torch.int8)  # (out, in)
    return q, scale


class DynamicInt8Linear(nn.Module):
    """y = x W^T + b with W in int8 (per output channel) and x quantized to 8 bits per call.

    On x86 the activation range is reduced to 7 bits (``reduce_range``), as torch.ao's own default
    qconfig does, because fbgemm's u8 x s8 multiply-add saturates int16 otherwise.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("scale", torch.ones(out_features, dtype=torch.float32, device=device))
        bias_t = torch.zeros(out_features, device=device, dtype=dtype)
        self.bias = nn.Parameter(bias_t, requires_grad=False) if bias else None
        self._packed, self._packed_key = None, None

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "DynamicInt8Linear":
        w = linear.weight
        new = cls(linear.in_features, linear.out_features, linear.bias is not None, device=w.device, dtype=w.dtype)
        q, scale = int8_per_channel(w)
        new.qweight.copy_(q)
        new.scale.copy_(scale)
        if linear.bias is not None:
            new.bias.data.copy_(linear.bias.detach())
        return new

    def _pack(self):
        key = (self.qweight.data_ptr(), self.qweight._version, self.scale._version,
               None if self.bias is None else (self.bias.data_ptr(), self.bias._version))
        if key != self._packed_key:
            zeros = torch.zeros(self.out_features, dtype=torch.long, device=self.qweight.device)
            with warnings.catch_warnings():  # torch marks quantized tensor creation deprecated; the kernel is current
                warnings.simplefilter("ignore")
                qw = torch._make_per_channel_quantized_tensor(self.qweight, self.scale.double(), zeros, 0)
                bias = None if self.bias is None else self.bias.detach().float()
                self._packed = torch.ops.quantized.linear_prepack(qw, bias)
            self._packed_key = key
        return self._packed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., in) any float dtype -> (..., out) in x's dtype; the kernel takes and returns float32."""
        reduce_range = torch.backends.quantized.engine in ("x86", "fbgemm")
        return torch.ops.quantized.linear_dynamic(x.float(), self._pack(), reduce_range).to(x.dtype)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_packed"], state["_packed_key"] = None, None  # packed kernels are rebuilt, never copied
        return state

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
