"""``convert``: a diffusers transformer in, a linear-time student out; the teacher is never modified.

The student is an instance of lindit's subclass of the teacher's class (``students.py``) with some blocks'
attention replaced by lindit layers (and, for SANA, the feed-forward by Mix-FFN). Everything else is the
teacher's, copied exactly (LiT Guidelines 3-4); the new attention weights are fresh unless ``inherit``
names teacher projections to copy.

Each replaced layer is ``lindit.methods.REGISTRY[method].build(spec, **options)`` (``methods.py``), put in
place by ``build_structure`` below: a ``modules/attention.py`` or ``modules/joint.py`` layer whose equations
are in ``functional.py``. ``build_structure`` is the one place the module tree changes: ``convert`` reaches it
through the student class's ``_lindit_build`` (``students.py``), which ``from_config`` and ``from_pretrained``
run too, so a converted and a loaded student have the same structure.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from ...methods import REGISTRY, Method
from ...modules import JointAttention, LinearAttention, MixFFN, SoftmaxAttention
from .families import FAMILIES, Family, family_of, layer_spec
from .plan import Plan, make_plan
from .token_grid import TokenGrid

ATTENTION_LAYERS = (LinearAttention, SoftmaxAttention, JointAttention)

# Teacher projection groups (LiT Table 3) -> (teacher path, student path, role whose branch restarts at zero).
INHERIT_GROUPS = {
    "q": [("to_q", "to_q", "q"), ("norm_q", "norm_q", None), ("add_q_proj", "add_q_proj", "added_q"),
          ("norm_added_q", "norm_added_q", None)],
    "k": [("to_k", "to_k", "k"), ("norm_k", "norm_k", None), ("add_k_proj", "add_k_proj", "added_k"),
          ("norm_added_k", "norm_added_k", None)],
    "v": [("to_v", "to_v", None), ("add_v_proj", "add_v_proj", None)],
    "o": [("to_out.0", "to_out.0", None), ("to_add_out", "to_add_out", None)],
}


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
    Returns an instance of the family's student class (e.g. ``LinditPixArtTransformer2DModel``).
    """
    if getattr(model, "lindit_config", None):
        raise ValueError(f"model is already converted ({model.lindit_config['method']}); convert the original teacher")
    fam = family_of(model)
    plan = make_plan(fam, len(model.transformer_blocks), method or fam.default_method, options,
                     teacher=model.config.get("_name_or_path"))
    from .students import STUDENT_CLASSES  # here: the student classes build themselves with build_structure

    student = copy.deepcopy(model)
    # The copy becomes the student class in place: the teacher's weights and buffers stay exact copies and
    # a large model is not initialised twice. _lindit_build is what the class's __init__ runs after the
    # teacher's, so converted and loaded students have the same structure.
    student.__class__ = STUDENT_CLASSES[fam.name]
    student.register_to_config(lindit_conversion=plan.as_dict(), lindit_quantized=None)
    student._lindit_build(plan.as_dict(), None)
    inherit_weights(student, model, plan)
    return student.train(model.training)


def convert_pipeline(pipe, method: str | None = None, **options):
    """Convert the transformer of a loaded diffusers pipeline and put the student in its place; returns
    ``pipe``. ``pipe.save_pretrained`` then records lindit's class in ``model_index.json``."""
    pipe.register_modules(transformer=convert(pipe.transformer, method, **options))
    return pipe


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
        for t_name, s_name, role in INHERIT_GROUPS[group]:
            if not (_has(teacher_attn, t_name) and _has(student_layer, s_name)):
                continue
            src, dst = teacher_attn.get_submodule(t_name), student_layer.get_submodule(s_name)
            if not list(src.parameters()):
                continue
            skipped += [f"{where}.{t_name}.{n}" for n in _copy_module(src, dst)]
            branch = student_layer.branch_before(role) if role and role in student_layer.token_maps else None
            if branch is not None:
                # ConvFusion and LinFusion add a residual branch to X before the projection; with it zeroed
                # the inherited projection gives the teacher's own queries (keys) at conversion instead of
                # the teacher's plus a random branch. The branch still learns: its input is not zero.
                branch.zero_()
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
    layers = converted_layers(student, attention_only=True)
    for i in plan.layers:
        t_block = teacher.transformer_blocks[i]
        for attr in (fam.attention, "attn2") if fam.kind == "joint" else (fam.attention,):
            where = f"transformer_blocks.{i}.{attr}"
            if where in layers:
                skipped += _inherit_layer(getattr(t_block, attr), layers[where], plan.inherit, where)
    if skipped:
        warnings.warn(f"inherit={plan.inherit!r}: shapes differ, left freshly initialised: {', '.join(skipped[:8])}"
                      + (f" and {len(skipped) - 8} more" if len(skipped) > 8 else ""), stacklevel=3)
