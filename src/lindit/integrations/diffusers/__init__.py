"""diffusers integration: convert PixArt / SD3 / DiT transformers, keep the grid, save and load them."""

from .adapters import FeedForwardAdapter, JointAttentionAdapter, SelfAttentionAdapter, TokenGrid, token_grid
from .convert import Plan, convert, converted_layers, count_parameters
from .families import FAMILIES, family_of
from .persistence import is_lindit_dir, load, save
from .positions import allow_any_resolution

__all__ = [
    "FAMILIES",
    "FeedForwardAdapter",
    "JointAttentionAdapter",
    "Plan",
    "SelfAttentionAdapter",
    "TokenGrid",
    "allow_any_resolution",
    "convert",
    "converted_layers",
    "count_parameters",
    "family_of",
    "is_lindit_dir",
    "load",
    "save",
    "token_grid",
]
