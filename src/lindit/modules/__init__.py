"""nn.Modules of lindit: attention mechanisms and their feature maps, on tokens (B, N, C) + grid (h, w)."""

from .attention import LinearAttention, SoftmaxAttention
from .grid import OnGrid, check_grid, to_image, to_tokens
from .joint import JointAttention
from .mixffn import MixFFN
from .token_maps import ConvFusion, KVCompress, LinFusionBranch, SpatialCompressor, TokenMapOptions

__all__ = [
    "ConvFusion",
    "JointAttention",
    "KVCompress",
    "LinFusionBranch",
    "LinearAttention",
    "MixFFN",
    "OnGrid",
    "SoftmaxAttention",
    "SpatialCompressor",
    "TokenMapOptions",
    "check_grid",
    "to_image",
    "to_tokens",
]
