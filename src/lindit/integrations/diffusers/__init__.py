"""diffusers integration: convert PixArt / SD3 / DiT transformers into lindit's student classes, keep the
grid, save and load them (locally and on the hub), and carry teacher LoRAs over."""

from .convert import convert, convert_pipeline, converted_layers, count_parameters
from .families import FAMILIES, family_of
from .persistence import is_lindit_dir, load, save
from .positions import allow_any_resolution
from .plan import Plan
from .students import (
    STUDENT_CLASSES,
    LinditDiTTransformer2DModel,
    LinditPixArtTransformer2DModel,
    LinditSD3Transformer2DModel,
)
from .token_grid import TokenGrid, token_grid

__all__ = [
    "FAMILIES",
    "STUDENT_CLASSES",
    "LinditDiTTransformer2DModel",
    "LinditPixArtTransformer2DModel",
    "LinditSD3Transformer2DModel",
    "Plan",
    "TokenGrid",
    "allow_any_resolution",
    "convert",
    "convert_pipeline",
    "converted_layers",
    "count_parameters",
    "family_of",
    "is_lindit_dir",
    "load",
    "save",
    "token_grid",
]
