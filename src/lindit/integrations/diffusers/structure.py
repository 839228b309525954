"""Where lindit layers sit in a diffusers transformer: the conversion plan and the module surgery it implies.

``build_structure(model, plan)`` replaces the planned blocks' attention (and, for SANA, feed-forward) with
freshly initialised lindit layers, in place, at the names of the layers they replace (``attn1``, ``attn``,
SD3.5's ``attn2``, ``ff``). It is the one place the module tree changes: conversion, ``from_config`` and
``from_pretrained`` of a student class all go through it, so a student is rebuilt from (class, config).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from torch import nn

from ...functional import DEFAULT_NORMALISER
from ...methods import REGISTRY, Method, check_options, get_method
from ...modules import JointAttention, LinearAttention, MixFFN, SoftmaxAttention
from .families import FAMILIES, Family, layer_spec
from .token_grid import TokenGrid

# 1: lindit.json + lindit_model.safetensors with adapters (.inner); 2: diffusers classes; 3: every linear
# method's normaliser convention recorded (``eps``; before, the unnamed convention was lindit's own).
FORMAT_VERSION = 3
ATTENTION_LAYERS = (LinearAttention, SoftmaxAttention, JointAttention)
COMMON_OPTIONS = ("layers", "inherit", "keep_softmax")


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


def make_plan(fam: Family, depth: int, method_name: str, options: dict, teacher: str | None = None) -> Plan:
    """Check a method and its options for a model of family ``fam`` with ``depth`` blocks; the Plan."""
    try:
        method = get_method(method_name, kind=fam.kind)
    except ValueError:
        valid = ", ".join(n for n, m in REGISTRY.items() if m.kind == fam.kind)
        raise ValueError(
            f"method {method_name!r} does not fit {fam.model_class.__name__}; valid methods: {valid}"
        ) from None
    opts = {k: v for k, v in options.items() if v is not None or k not in COMMON_OPTIONS}
    check_options(method.name, opts)  # names and values; block indices are checked below, against the model
    layers = _layers(opts.pop("layers", None), depth, method_name)
    keep = _blocks(opts.pop("keep_softmax", None) or [], depth, "keep_softmax")
    layers = [i for i in layers if i not in keep]
    if not layers:
        raise ValueError(f"keep_softmax={sorted(keep)} leaves no block to convert")
    inherit = _inherit(opts.pop("inherit", "qkvo" if method_name == "kv_compress" else ""))
    if "eps" in method.options:  # named, so that a later default cannot change a saved model's outputs
        opts.setdefault("eps", DEFAULT_NORMALISER)
    return Plan(fam.name, method_name, layers, inherit, opts, teacher=teacher)


def _layers(layers, depth: int, method_name: str) -> list[int]:
    if layers is None:  # PixArt-Sigma's 1024px kv-compress config: layers 14-27 of 28, i.e. the second half
        return list(range(depth // 2, depth)) if method_name == "kv_compress" else list(range(depth))
    if isinstance(layers, (str, bytes)) or not all(isinstance(i, int) for i in _iterable(layers)):
        raise ValueError(f"layers must be a list of block indices, got {layers!r}")
    layers = sorted(set(layers))
    bad = [i for i in layers if not 0 <= i < depth]
    if bad or not layers:
        raise ValueError(f"layers {bad or layers} out of range; the model has blocks 0-{depth - 1}")
    return layers


def _blocks(indices, depth: int, name: str) -> set[int]:
    """Block indices, negative ones counted from the end (-1: the last block)."""
    bad = [i for i in indices if not -depth <= i < depth]
    if bad:
        raise ValueError(f"{name} {bad} out of range; the model has blocks 0-{depth - 1} (or -{depth} to -1)")
    return {i % depth for i in indices}


def _iterable(value) -> list:
    try:
        return list(value)
    except TypeError:
        return [value, None]  # not a sequence: fails the check


def _inherit(inherit) -> str:
    """Normalise "qv", ["q", "v"], "all" or "none" to a string in q, k, v, o order."""
    if inherit in (None, "none"):
        return ""
    if inherit == "all":
        return "qkvo"
    letters = set("".join(inherit)) if isinstance(inherit, (str, list, tuple)) else {"?"}
    if not letters <= set("qkvo"):
        raise ValueError(f"inherit must use the letters q, k, v, o (or 'all' / 'none'), got {inherit!r}")
    return "".join(c for c in "qkvo" if c in letters)


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
    ffn = MixFFN(dim, mlp_ratio=options.get("mlp_ratio", 2.5), out_bias=options.get("mlp_out_bias", True))
    block.ff = _like(ffn, old, grid)


def converted_layers(model: nn.Module, attention_only: bool = False) -> dict[str, nn.Module]:
    """Qualified name -> lindit layer, for every layer lindit put into ``model`` (in module order).

    The teacher has its original layer at the same name, so hooks on these names pair student and teacher
    features (EDiT's feature distillation). ``attention_only`` leaves out replaced feed-forwards.
    """
    kinds = ATTENTION_LAYERS if attention_only else (*ATTENTION_LAYERS, MixFFN)
    return {name: m for name, m in model.named_modules() if isinstance(m, kinds)}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
