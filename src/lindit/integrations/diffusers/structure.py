"""Where lindit layers sit in a diffusers transformer: the conversion plan and the module surgery it implies.

``build_structure(model, plan)`` replaces the planned blocks' attention (and, for SANA, feed-forward) with
freshly initialised lindit layers, in place, at the names of the layers they replace (``attn1``, ``attn``,
SD3.5's ``attn2``, ``ff``). It is the one place the module tree changes: conversion, ``from_config`` and
``from_pretrained`` of a student class all go through it, so a student is rebuilt from (class, config).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from torch import nn

from ...methods import REGISTRY, Method
from ...modules import JointAttention, LinearAttention, MixFFN, SoftmaxAttention
from .families import FAMILIES, Family, layer_spec
from .token_grid import TokenGrid

FORMAT_VERSION = 2  # 1: lindit.json + lindit_model.safetensors with adapters (.inner); 2: diffusers classes
ATTENTION_LAYERS = (LinearAttention, SoftmaxAttention, JointAttention)


@dataclass
class Plan:
    """What a conversion did: enough to rebuild the module tree, recorded in the student's config."""

    family: str
    method: str
    layers: list[int]
    inherit: str = ""
    options: dict = field(default_factory=dict)
    teacher: str | None = None  # the teacher's hub id or folder, when it was loaded from one
    format_version: int = FORMAT_VERSION

    def as_dict(self) -> dict:
        return asdict(self)


def build_structure(model: nn.Module, plan: Plan, grid: TokenGrid) -> None:
    """Replace the planned layers of ``model`` in place with freshly initialised lindit layers on ``grid``."""
    fam = FAMILIES[plan.family]
    method = REGISTRY[plan.method]
    for i in plan.layers:
        block = model.transformer_blocks[i]
        _replace_attention(block, fam, method, plan.options, grid)
        if method.feed_forward == "mixffn":
            _replace_feed_forward(block, plan.options, grid)


def _like(new: nn.Module, old: nn.Module, grid: TokenGrid) -> nn.Module:
    """Put a new layer on the old one's device and dtype (meta stays meta when loading) and on the grid."""
    p = next(old.parameters())
    new.grid_source = grid
    return new.to(device=p.device, dtype=p.dtype)


def _replace_attention(block: nn.Module, fam: Family, method: Method, options: dict, grid: TokenGrid) -> None:
    old = getattr(block, fam.attention)
    setattr(block, fam.attention, _like(method.build(layer_spec(old), **options), old, grid))
    attn2 = getattr(block, "attn2", None)
    if fam.kind == "joint" and attn2 is not None:  # SD3.5 dual attention: image-only self-attention
        self_method = REGISTRY[method.self_method]
        block.attn2 = _like(self_method.build(layer_spec(attn2), **options), attn2, grid)


def _replace_feed_forward(block: nn.Module, options: dict, grid: TokenGrid) -> None:
    old = block.ff
    dim = next(m for m in old.modules() if isinstance(m, nn.Linear)).in_features
    block.ff = _like(MixFFN(dim, mlp_ratio=options.get("mlp_ratio", 2.5)), old, grid)


def converted_layers(model: nn.Module, attention_only: bool = False) -> dict[str, nn.Module]:
    """Qualified name -> lindit layer, for every layer lindit put into ``model`` (in module order).

    The teacher has its original layer at the same name, so hooks on these names pair student and teacher
    features (EDiT's feature distillation). ``attention_only`` leaves out replaced feed-forwards.
    """
    kinds = ATTENTION_LAYERS if attention_only else (*ATTENTION_LAYERS, MixFFN)
    return {name: m for name, m in model.named_modules() if isinstance(m, kinds)}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
