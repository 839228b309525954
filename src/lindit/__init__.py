"""lindit: linear-time diffusion transformers (EDiT, MM-EDiT, LiT) for diffusers models."""

from . import functional
from .modules import JointAttention, LinearAttention, MixFFN, SoftmaxAttention

__version__ = "0.1.0"

__all__ = ["JointAttention", "LinearAttention", "MixFFN", "SoftmaxAttention", "functional"]
