"""``convert``: a diffusers transformer in, a linear-time copy of it out; the teacher is never modified.

The student is the same diffusers class with some blocks' attention replaced by a lindit layer (and, for
SANA, the feed-forward by Mix-FFN). Everything else is the teacher's, copied exactly (LiT Guidelines 3-4);
the new attention weights are fresh unless ``inherit`` names teacher projections to copy.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ...methods import REGISTRY, Method, get_method
from ...modules import MixFFN
from .adapters import FeedForwardAdapter, JointAttentionAdapter, SelfAttentionAdapter, TokenGrid, install_grid
from .families import FAMILIES, Family, family_of, layer_spec, patch_size
from .positions import allow_any_resolution

# Teacher projection groups (LiT Table 3) -> (teacher attribute, student attribute) pairs they cover.
INHERIT_GROUPS = {
    "q": [("to_q", "to_q"), ("norm_q", "norm_q"), ("add_q_proj", "add_q_proj"), ("norm_added_q", "norm_added_q")],
    "k": [("to_k", "to_k"), ("norm_k", "norm_k"), ("add_k_proj", "add_k_proj"), ("norm_added_k", "norm_added_k")],
    "v": [("to_v", "to_v"), ("add_v_proj", "add_v_proj")],
    "o": [("to_out.0", "to_out"), ("to_add_out", "to_add_out")],
}
COMMON_OPTIONS = ("layers", "inherit", "keep_softmax")


@dataclass
class Plan:
    """What a conversion did: enough to rebuild the module tree (``lindit.load``) and to report it."""

    family: str
    method: str
    layers: list[int]
    inherit: str = ""
    options: dict = field(default_factory=dict)
    format_version: int = 1

    def as_dict(self) -> dict:
        return asdict(self)


def convert(model: nn.Module, method: str | None = None, **options) -> nn.Module:
    """Return a converted copy of a diffusers transformer; ``model`` itself is left untouched.

    method: a registry name valid for the model's family (see ``lindit.methods()``); default ``edit`` for
    PixArt, ``mm_edit`` for SD3, ``lit`` for DiT.
    options: ``layers`` (block indices to convert; default all, ``kv_compress``: the second half, i.e.
    layers 14-27 of PixArt-Sigma's 28), ``keep_softmax`` (block indices left out of ``layers``, keeping the
    teacher's attention; negative indices count from the end, so ``[-1]`` keeps the last block), ``inherit``
    (teacher projections to copy: any of "qkvo"; default none, ``kv_compress``: "qkvo"), and the method's own
    options (e.g. ``heads`` for ``lit``, ``eta`` for
    ``mm_edit``, ``factor`` for ``kv_compress``, ``cf_reduction``).
    """
    if getattr(model, "lindit_config", None):
        raise ValueError(f"model is already converted ({model.lindit_config['method']}); convert the original teacher")
    fam = family_of(model)
    plan = make_plan(fam, model, method or fam.default_method, options)
    student = copy.deepcopy(model)
    build_structure(student, plan)
    inherit_weights(student, model, plan)
    return student.train(model.training)


def make_plan(fam: Family, model: nn.Module, method_name: str, options: dict) -> Plan:
    try:
        method = get_method(method_name, kind=fam.kind)
    except ValueError:
        valid = ", ".join(n for n, m in REGISTRY.items() if m.kind == fam.kind)
        raise ValueError(
            f"method {method_name!r} does not fit {fam.model_class.__name__}; valid methods: {valid}"
        ) from None
    opts = dict(options)
    unknown = set(opts) - set(method.options) - set(COMMON_OPTIONS)
    if unknown:
        valid = ", ".join(sorted(set(method.options) | set(COMMON_OPTIONS)))
        raise ValueError(f"unknown option(s) {sorted(unknown)} for method {method_name!r}; valid: {valid}")
    depth = len(model.transformer_blocks)
    layers = _layers(opts.pop("layers", None), depth, method_name)
    keep = _blocks(opts.pop("keep_softmax", None) or [], depth, "keep_softmax")
    layers = [i for i in layers if i not in keep]
    if not layers:
        raise ValueError(f"keep_softmax={sorted(keep)} leaves no block to convert")
    inherit = _inherit(opts.pop("inherit", "qkvo" if method_name == "kv_compress" else ""))
    return Plan(fam.name, method_name, layers, inherit, opts)


def _layers(layers, depth: int, method_name: str) -> list[int]:
    if layers is None:  # PixArt-Sigma's 1024px kv-compress config: layers 14-27 of 28, i.e. the second half
        return list(range(depth // 2, depth)) if method_name == "kv_compress" else list(range(depth))
    layers = sorted({int(i) for i in layers})
    bad = [i for i in layers if not 0 <= i < depth]
    if bad or not layers:
        raise ValueError(f"layers {bad or layers} out of range; the model has blocks 0-{depth - 1}")
    return layers


def _blocks(indices, depth: int, name: str) -> set[int]:
    """Block indices, negative ones counted from the end (-1: the last block)."""
    bad = [i for i in indices if not -depth <= int(i) < depth]
    if bad:
        raise ValueError(f"{name} {bad} out of range; the model has blocks 0-{depth - 1} (or -{depth} to -1)")
    return {int(i) % depth for i in indices}


def _inherit(inherit) -> str:
    """Normalise "qv", ["q", "v"], "all" or "none" to a string in q, k, v, o order."""
    if inherit in (None, "none"):
        return ""
    if inherit == "all":
        return "qkvo"
    letters = set("".join(inherit))
    if not letters <= set("qkvo"):
        raise ValueError(f"inherit must use the letters q, k, v, o (or 'all' / 'none'), got {inherit!r}")
    return "".join(c for c in "qkvo" if c in letters)


def build_structure(model: nn.Module, plan: Plan) -> None:
    """Replace the planned layers of ``model`` in place with freshly initialised lindit layers."""
    fam = FAMILIES[plan.family]
    method = REGISTRY[plan.method]
    grid = install_grid(model, patch_size(model))
    allow_any_resolution(model)  # SD3: positions beyond the trained table; PixArt/DiT: no change
    for i in plan.layers:
        block = model.transformer_blocks[i]
        _replace_attention(block, fam, method, plan.options, grid)
        if method.feed_forward == "mixffn":
            _replace_feed_forward(block, plan.options, grid)
    model.lindit_config = plan.as_dict()


def _like(new: nn.Module, old: nn.Module) -> nn.Module:
    """Put a new module on the old one's device and dtype (meta stays meta when loading)."""
    p = next(old.parameters())
    return new.to(device=p.device, dtype=p.dtype)


def _replace_attention(block: nn.Module, fam: Family, method: Method, options: dict, grid: TokenGrid) -> None:
    old = getattr(block, fam.attention)
    adapter = JointAttentionAdapter if fam.kind == "joint" else SelfAttentionAdapter
    setattr(block, fam.attention, adapter(_like(method.build(layer_spec(old), **options), old), grid))
    attn2 = getattr(block, "attn2", None)
    if fam.kind == "joint" and attn2 is not None:  # SD3.5 dual attention: image-only self-attention
        self_method = REGISTRY[method.self_method]
        block.attn2 = SelfAttentionAdapter(_like(self_method.build(layer_spec(attn2), **options), attn2), grid)


def _replace_feed_forward(block: nn.Module, options: dict, grid: TokenGrid) -> None:
    old = block.ff
    dim = next(m for m in old.modules() if isinstance(m, nn.Linear)).in_features
    mix = MixFFN(dim, mlp_ratio=options.get("mlp_ratio", 2.5))
    block.ff = FeedForwardAdapter(_like(mix, old), grid)


def _student_target(layer: nn.Module, name: str) -> nn.Module | None:
    """The module a teacher projection maps to: a token map's ``.proj``, or the layer itself."""
    target = getattr(layer, name, None)
    return getattr(target, "proj", target) if isinstance(target, nn.Module) else None


def _copy_module(src: nn.Module, dst: nn.Module) -> list[str]:
    """Copy every tensor of src into dst where names and shapes agree; return what could not be copied."""
    dst_state = dst.state_dict()
    skipped = []
    for name, tensor in src.state_dict().items():
        if name in dst_state and dst_state[name].shape == tensor.shape:
            with torch.no_grad():
                dst_state[name].copy_(tensor)
        else:
            skipped.append(name)
    return skipped


def _inherit_layer(teacher_attn: nn.Module, student_layer: nn.Module, groups: str, where: str) -> list[str]:
    skipped = []
    if "v" in groups and hasattr(student_layer, "start_value_conv_at_zero_"):
        student_layer.start_value_conv_at_zero_()  # LiT's DWC(V) adds to the inherited values' attention
    for group in groups:
        for t_name, s_name in INHERIT_GROUPS[group]:
            src = teacher_attn.get_submodule(t_name) if _has(teacher_attn, t_name) else None
            dst = _student_target(student_layer, s_name)
            if src is None or dst is None or not list(src.parameters()):
                continue
            skipped += [f"{where}.{t_name}.{n}" for n in _copy_module(src, dst)]
            token_map = getattr(student_layer, s_name)
            if hasattr(token_map, "start_at_projection_"):
                # ConvFusion and LinFusion maps add a residual branch before their projection; with it
                # zeroed the inherited projection gives the teacher's own queries (keys) at conversion
                # instead of the teacher's plus a random branch. The branch still learns: its input is not zero.
                token_map.start_at_projection_()
    return skipped


def _has(module: nn.Module, path: str) -> bool:
    try:
        return module.get_submodule(path) is not None
    except AttributeError:
        return False


def inherit_weights(student: nn.Module, teacher: nn.Module, plan: Plan) -> None:
    """Copy the teacher projections named by ``plan.inherit`` into the converted layers (LiT Table 3)."""
    if not plan.inherit:
        return
    fam = FAMILIES[plan.family]
    skipped = []
    for i in plan.layers:
        t_block, s_block = teacher.transformer_blocks[i], student.transformer_blocks[i]
        for attr in (fam.attention, "attn2") if fam.kind == "joint" else (fam.attention,):
            if isinstance(getattr(s_block, attr, None), (SelfAttentionAdapter, JointAttentionAdapter)):
                where = f"transformer_blocks.{i}.{attr}"
                skipped += _inherit_layer(getattr(t_block, attr), getattr(s_block, attr).inner, plan.inherit, where)
    if skipped:
        warnings.warn(f"inherit={plan.inherit!r}: shapes differ, left freshly initialised: {', '.join(skipped[:8])}"
                      + (f" and {len(skipped) - 8} more" if len(skipped) > 8 else ""), stacklevel=3)


def converted_layers(model: nn.Module, attention_only: bool = False) -> dict[str, nn.Module]:
    """Qualified name -> adapter, for every layer lindit put into ``model`` (in module order).

    The teacher has its original layer at the same name, so hooks on these names pair student and teacher
    features (EDiT's feature distillation). ``attention_only`` leaves out replaced feed-forwards.
    """
    kinds = (SelfAttentionAdapter, JointAttentionAdapter) if attention_only else (
        SelfAttentionAdapter, JointAttentionAdapter, FeedForwardAdapter)
    return {name: m for name, m in model.named_modules() if isinstance(m, kinds)}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
