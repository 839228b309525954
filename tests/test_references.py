"""Every registry method's layer against its float64 reference from the papers (tests/references/):
outputs and the gradients of the input and of every parameter, on odd and non-square grids."""

import pytest
import torch
from references.compare import compare, randomise, tokens
from references.layers import JointSpec, MapOptions, joint_attention, mixffn, self_attention
from references.methods import JOINT, SELF, SELF_OF_JOINT
from tiny_models import BUILDERS

import lindit
from lindit.methods import REGISTRY, LayerSpec
from lindit.modules import JointAttention, MixFFN, SoftmaxAttention

DIM, HEADS, PROMPT = 16, 4, 3  # 4 heads of 4 channels; 3 prompt tokens
GRIDS = [(5, 7), (7, 5), (9, 4), (1, 6)]
CF_GROUPS = 2  # ConvFusion's 3x3 conv gives 16 / 4 = 4 channels: two GroupNorm groups of two
SPEC = LayerSpec(dim=DIM, heads=HEADS, inner_dim=DIM, out_dim=DIM)
QK_SPEC = LayerSpec(dim=DIM, heads=HEADS, inner_dim=DIM, out_dim=DIM, qk_norm="rms_norm")  # SD3.5's attn2
JOINT_SPEC = LayerSpec(dim=DIM, heads=HEADS, inner_dim=DIM, out_dim=DIM, qk_norm="rms_norm", context_dim=DIM)


def _options(name, **extra):
    allowed = REGISTRY[name].options
    return {**({"cf_groups": CF_GROUPS} if "cf_groups" in allowed else {}), **extra}


def _self_layer(name, spec=SPEC, **opts):
    if name == "softmax":
        return SoftmaxAttention(DIM, HEADS, qk_norm=spec.qk_norm)
    return REGISTRY[name].build(spec, **_options(name, **opts))


def _self_reference(ref_spec, n_heads, grid, eps):
    opt = MapOptions(cf_groups=CF_GROUPS)
    return lambda p, x: self_attention(p, ref_spec, x, grid, n_heads, opt, eps)


@pytest.mark.parametrize("grid", GRIDS, ids=lambda g: f"{g[0]}x{g[1]}")
@pytest.mark.parametrize("name", list(SELF))
def test_self_attention_matches_its_reference(name, grid):
    layer = randomise(_self_layer(name))
    heads = SELF[name].heads or HEADS  # the paper's head count, or the teacher's
    compare(layer, lambda x: layer(x, grid), _self_reference(SELF[name], heads, grid, getattr(layer, "eps", 0.0)),
            [tokens(grid[0] * grid[1], DIM, seed=1)], f"{name} on {grid}")


def test_every_registered_method_has_a_reference():
    """The comparisons below loop over the references' tables; a method added to the registry without one
    would otherwise go unchecked without a test failing."""
    kinds = {kind: {n for n, m in REGISTRY.items() if m.kind == kind} for kind in ("self", "joint")}
    assert kinds["self"] <= set(SELF), f"no float64 reference for {sorted(kinds['self'] - set(SELF))}"
    assert kinds["joint"] <= set(JOINT) & set(SELF_OF_JOINT), \
        f"no float64 reference for {sorted(kinds['joint'] - (set(JOINT) & set(SELF_OF_JOINT)))}"
    assert set(REGISTRY) == kinds["self"] | kinds["joint"]


@pytest.mark.parametrize("grid", [(5, 7), (9, 4)], ids=lambda g: f"{g[0]}x{g[1]}")
@pytest.mark.parametrize("joint", list(SELF_OF_JOINT))
def test_sd35_image_only_attn2_replacement_matches_its_reference(joint, grid):
    """SD3.5's dual-attention attn2 (image-only, RMS qk norms) gets the joint method's self method."""
    name = REGISTRY[joint].self_method
    assert name == SELF_OF_JOINT[joint]
    layer = randomise(REGISTRY[name].build(QK_SPEC, **_options(name)))
    compare(layer, lambda x: layer(x, grid), _self_reference(SELF[name], HEADS, grid, layer.eps),
            [tokens(grid[0] * grid[1], DIM, seed=1)], f"{joint}'s attn2 on {grid}")


def test_converted_sd35_dual_block_attn2_matches_the_reference():
    """Through lindit.convert: the dual-attention block's image-only attn2 of an MM-EDiT student is EDiT's
    layer with SD3.5's qk norms (the teacher's joint attn gets MM-EDiT)."""
    student = lindit.convert(BUILDERS["sd3"](), "mm_edit")
    layer = randomise(student.transformer_blocks[0].attn2)
    grid, n_heads, dim = (5, 7), layer.heads, layer.to_q.in_features
    reference = lambda p, x: self_attention(p, SELF["edit"], x, grid, n_heads, MapOptions(), layer.eps)  # noqa: E731
    compare(layer, lambda x: layer(x, grid), reference, [tokens(35, dim, seed=1)], "converted attn2")
    assert isinstance(student.transformer_blocks[0].attn, JointAttention)


def _joint_cases():
    """(name, options, reference description, context_pre_only) as pytest params."""
    cases = [("softmax", {}, JOINT["softmax"], False)] + [(n, {}, JOINT[n], False) for n in SELF_OF_JOINT]
    cases += [("mm_edit", {"eta": "learned"}, JointSpec(eta="learned"), False),
              ("mm_edit", {"softmax_qk": "raw"}, JointSpec(softmax_qk="raw"), False),
              ("mm_edit_exact", {"softmax_qk": "raw"}, JointSpec(eta="exact", softmax_qk="raw"), False),
              ("mm_edit_plain", {"eta": 0.3}, JointSpec(q="linear", k="linear", v="linear", eta=0.3), False),
              ("mm_edit", {}, JOINT["mm_edit"], True),  # SD3's last block: no prompt queries, no prompt output
              ("linear_mmdit_beta", {}, JOINT["linear_mmdit_beta"], True)]
    ids = [n + "".join(f"-{k}={v}" for k, v in o.items()) + ("-context_pre_only" if cpo else "")
           for n, o, _, cpo in cases]
    return [pytest.param(*case, id=i) for case, i in zip(cases, ids)]


def _joint_layer(name, opts, context_pre_only):
    spec = LayerSpec(**{**JOINT_SPEC.__dict__, "context_pre_only": context_pre_only})
    if name == "softmax":
        return JointAttention(DIM, HEADS, mode="softmax", query="linear", key="linear", value="linear",
                              qk_norm="rms_norm", context_pre_only=context_pre_only)
    return REGISTRY[name].build(spec, **_options(name, **opts))


@pytest.mark.parametrize("grid", GRIDS, ids=lambda g: f"{g[0]}x{g[1]}")
@pytest.mark.parametrize("name, opts, ref_spec, context_pre_only", _joint_cases())
def test_joint_attention_matches_its_reference(name, opts, ref_spec, context_pre_only, grid):
    layer = randomise(_joint_layer(name, opts, context_pre_only))
    opt = MapOptions(cf_groups=CF_GROUPS)
    reference = lambda p, x, c: joint_attention(p, ref_spec, x, grid, c, HEADS, opt, layer.eps)  # noqa: E731
    compare(layer, lambda x, c: layer(x, grid, c), reference,
            [tokens(grid[0] * grid[1], DIM, seed=1), tokens(PROMPT, DIM, seed=2)], f"{name} {opts} on {grid}")


@pytest.mark.parametrize("grid", GRIDS, ids=lambda g: f"{g[0]}x{g[1]}")
def test_mixffn_matches_sanas_glumbconv(grid):
    ffn = randomise(MixFFN(DIM, mlp_ratio=1.5))
    compare(ffn, lambda x: ffn(x, grid), lambda p, x: mixffn(p, x, grid),
            [tokens(grid[0] * grid[1], DIM, seed=1)], f"Mix-FFN on {grid}")
