"""lindit.convert on tiny models of the real diffusers classes."""

import copy
import re

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import lindit
from lindit.integrations.diffusers import converted_layers, token_grid
from lindit.integrations.diffusers.convert import _inherit_layer
from lindit.modules import ConvFusion, JointAttention, LinearAttention, SoftmaxAttention
from tiny_models import BUILDERS, forward, inputs

PAIRS = [(fam, m) for fam in ("pixart", "dit") for m in lindit.methods("self")]
PAIRS += [("sd3", m) for m in lindit.methods("joint")]
GRIDS = {"pixart": [(24, 40), (18, 26)], "sd3": [(24, 40), (18, 26)], "dit": [(18, 18), (22, 22)]}  # latent H, W


@pytest.fixture(scope="module")
def teachers():
    return {fam: build() for fam, build in BUILDERS.items()}


@pytest.mark.parametrize("fam, method", PAIRS)
def test_every_method_converts_every_family(teachers, fam, method):
    teacher = teachers[fam]
    snapshot = {k: v.clone() for k, v in teacher.state_dict().items()}
    modules_before = [type(m) for m in teacher.modules()]
    student = lindit.convert(teacher, method)
    for h, w in GRIDS[fam]:  # non-square and odd grids (DiT's unpatchify in diffusers is square-only)
        out, ref = forward(student, fam, h, w), forward(teacher, fam, h, w)
        assert out.shape == ref.shape and torch.isfinite(out).all()
    assert student.lindit_grid.hw == (GRIDS[fam][-1][0] // 2, GRIDS[fam][-1][1] // 2)
    replaced = set(converted_layers(student))
    assert replaced, "nothing was converted"
    t_state = teacher.state_dict()
    kept = [k for k in student.state_dict() if not any(k.startswith(p + ".") for p in replaced)]
    for k in kept:  # every parameter outside the replaced layers is the teacher's, exactly
        assert torch.equal(student.state_dict()[k], t_state[k]), k
    assert len(kept) > 0.3 * len(t_state)
    assert [type(m) for m in teacher.modules()] == modules_before, "the teacher's modules changed"
    assert all(torch.equal(snapshot[k], v) for k, v in teacher.state_dict().items()), "the teacher's weights changed"


def test_kv_compress_defaults_keep_teacher_projections(teachers):
    teacher = BUILDERS["pixart"](layers=4)
    student = lindit.convert(teacher, "kv_compress")
    assert student.lindit_config["layers"] == [2, 3]  # the second half, as PixArt-Sigma's layers 14-27 of 28
    assert type(student.transformer_blocks[0].attn1).__name__ == "Attention"
    layer = student.transformer_blocks[3].attn1
    assert isinstance(layer, SoftmaxAttention) and layer.kv_compress.factor == 2
    t = teacher.transformer_blocks[3].attn1
    for name in ("to_q", "to_k", "to_v"):
        assert torch.equal(getattr(layer, name).weight, getattr(t, name).weight)
    assert torch.equal(layer.to_out[0].weight, t.to_out[0].weight)
    custom = lindit.convert(teacher, "kv_compress", layers=[0], factor=3)
    assert custom.lindit_config["layers"] == [0] and custom.transformer_blocks[0].attn1.kv_compress.factor == 3


def test_inherit_selects_projections(teachers):
    teacher = teachers["pixart"]
    fresh = lindit.convert(teacher, "edit").transformer_blocks[0].attn1
    t = teacher.transformer_blocks[0].attn1
    assert not torch.equal(fresh.to_q.weight, t.to_q.weight)
    qv = lindit.convert(teacher, "edit", inherit="qv").transformer_blocks[0].attn1
    assert torch.equal(qv.to_q.weight, t.to_q.weight) and torch.equal(qv.to_v.bias, t.to_v.bias)
    assert not torch.equal(qv.to_k.weight, t.to_k.weight) and not torch.equal(qv.to_out[0].weight, t.to_out[0].weight)
    lit = lindit.convert(teacher, "lit", inherit="all").transformer_blocks[1].attn1
    assert lit.heads == 2 and torch.equal(lit.to_out[0].weight, teacher.transformer_blocks[1].attn1.to_out[0].weight)


def test_mm_edit_keeps_qk_rmsnorm_and_context_pre_only(teachers):
    teacher = teachers["sd3"]
    student = lindit.convert(teacher, "mm_edit", inherit="qk")
    first, last = student.transformer_blocks[0], student.transformer_blocks[-1]
    for block in (first, last):
        layer = block.attn
        assert isinstance(layer.norm_q, torch.nn.RMSNorm) and isinstance(layer.norm_added_k, torch.nn.RMSNorm)
    assert torch.equal(first.attn.norm_q.weight, teacher.transformer_blocks[0].attn.norm_q.weight)
    assert last.context_pre_only and last.attn.to_add_out is None and last.attn.add_q_proj is None
    assert isinstance(first.attn2, LinearAttention)  # SD3.5 dual attention: attn2 becomes EDiT
    assert isinstance(first.attn2.conv_fusion_q, ConvFusion)
    with token_grid(student, (12, 20)):
        x, c = torch.randn(1, 240, 16), torch.randn(1, 5, 16)
        img, ctx = last.attn(x, encoder_hidden_states=c)
    assert ctx is None and img.shape == (1, 240, 16)


def test_bad_methods_and_options_name_the_valid_ones(teachers):
    with pytest.raises(ValueError, match=r"unknown method 'edt'|does not fit.*edit, "):
        lindit.convert(teachers["pixart"], "edt")
    with pytest.raises(ValueError, match=r"'mm_edit' does not fit PixArtTransformer2DModel; valid methods: edit"):
        lindit.convert(teachers["pixart"], "mm_edit")
    with pytest.raises(ValueError, match=r"'edit' does not fit SD3Transformer2DModel; valid methods: mm_edit"):
        lindit.convert(teachers["sd3"], "edit")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['heads'\] for method 'edit'; valid:"):
        lindit.convert(teachers["pixart"], "edit", heads=2)
    with pytest.raises(ValueError, match="out of range"):
        lindit.convert(teachers["pixart"], "edit", layers=[5])
    with pytest.raises(ValueError, match="letters q, k, v, o"):
        lindit.convert(teachers["pixart"], "edit", inherit="qx")
    with pytest.raises(ValueError, match="cannot convert a Linear"):
        lindit.convert(torch.nn.Linear(2, 2), "edit")
    with pytest.raises(ValueError, match="already converted"):
        lindit.convert(lindit.convert(teachers["dit"]), "lit")


def test_default_methods(teachers):
    assert {f: lindit.convert(t).lindit_config["method"] for f, t in teachers.items()} == {
        "pixart": "edit", "sd3": "mm_edit", "dit": "lit"}


def test_methods_listing_names_papers():
    listing = lindit.methods()
    assert set(listing) >= {"edit", "lit", "mm_edit", "mm_edit_exact", "kv_compress", "sana", "linfusion"}
    assert "EDiT Table 1" in listing["edit_cf_qk"] and "LiT" in listing["lit"]


def test_softmax_layers_with_inherited_weights_reproduce_the_teacher(teachers):
    """The inheritance mapping is exact: lindit's softmax layers given the teacher's q, k, v, o (and qk
    norms, prompt projections) compute what diffusers' own attention computes."""
    pix = teachers["pixart"].transformer_blocks[0].attn1
    mine = SoftmaxAttention(16, 2)
    _inherit_layer(pix, mine, "qkvo", "pixart")
    x = torch.randn(2, 9 * 13, 16)
    torch.testing.assert_close(mine(x, (9, 13)), pix(x), rtol=1e-5, atol=1e-6)
    for block in (teachers["sd3"].transformer_blocks[0], teachers["sd3"].transformer_blocks[-1]):
        joint = block.attn
        mine = JointAttention(16, 2, mode="softmax", query="linear", key="linear", value="linear",
                              qk_norm="rms_norm", context_pre_only=joint.context_pre_only)
        _inherit_layer(joint, mine, "qkvo", "sd3")
        c = torch.randn(2, 5, 16)
        ref_x, ref_c = joint(x, encoder_hidden_states=c)
        out_x, out_c = mine(x, (9, 13), c)
        torch.testing.assert_close(out_x, ref_x, rtol=1e-5, atol=1e-6)
        if joint.context_pre_only:
            assert out_c is None
        else:
            torch.testing.assert_close(out_c, ref_c, rtol=1e-5, atol=1e-6)


def test_the_grid_follows_each_forward(teachers):
    student = lindit.convert(teachers["pixart"], "edit")
    seen = []
    student.transformer_blocks[0].attn1.register_forward_pre_hook(lambda m, a: seen.append(m.resolve_grid(None)))
    forward(student, "pixart", 24, 40)
    forward(student, "pixart", 40, 24)  # same token count, transposed grid
    assert seen == [(12, 20), (20, 12)]
    with pytest.raises(RuntimeError, match="token_grid"):
        lindit.convert(teachers["pixart"], "edit").transformer_blocks[0].attn1(torch.randn(1, 4, 16))


def test_deepcopy_keeps_its_own_grid(teachers):
    student = lindit.convert(teachers["pixart"], "lit")
    twin = copy.deepcopy(student)
    forward(twin, "pixart", 24, 40)
    assert twin.lindit_grid.hw == (12, 20) and student.lindit_grid.hw is None
    assert twin.transformer_blocks[1].attn1.grid_source is twin.lindit_grid
    torch.testing.assert_close(forward(twin, "pixart", 24, 40), forward(student, "pixart", 24, 40))


def _attention_flops(model, fam, h, w):
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.no_grad():
        model(**inputs(fam, h, w, batch=1), return_dict=False)
    pattern = re.compile(r"\.transformer_blocks\.\d+\.(attn1|attn|attn2)$")
    return sum(sum(ops.values()) for name, ops in counter.get_flop_counts().items() if pattern.search(name))


@pytest.mark.parametrize("fam, method", [("pixart", "edit"), ("pixart", "lit"), ("sd3", "mm_edit"), ("dit", "lit")])
def test_converted_attention_flops_double_with_tokens(teachers, fam, method):
    student, teacher = lindit.convert(teachers[fam], method), teachers[fam]
    small, large = (32, 32), (64, 32) if fam != "dit" else (46, 46)  # DiT: square only; 46^2 ~ 2 x 32^2
    ratio = _attention_flops(student, fam, *large) / _attention_flops(student, fam, *small)
    tokens = (large[0] * large[1]) / (small[0] * small[1])
    assert ratio == pytest.approx(tokens, rel=0.05), f"{method}: x{ratio:.2f} for x{tokens:.2f} tokens"
    teacher_ratio = _attention_flops(teacher, fam, *large) / _attention_flops(teacher, fam, *small)
    assert teacher_ratio > 1.4 * tokens, f"softmax teacher should grow quadratically, got x{teacher_ratio:.2f}"


def test_sd3_students_run_beyond_the_positional_table(teachers):
    teacher = teachers["sd3"]  # pos_embed_max_size 32: grids up to 32 x 32 tokens
    student = lindit.convert(teacher, "mm_edit")
    with pytest.raises(ValueError, match="cannot be greater than `pos_embed_max_size`"):
        forward(teacher, "sd3", 80, 16)
    out = forward(student, "sd3", 80, 16)  # a 40 x 8 grid
    assert out.shape == (2, 4, 80, 16) and torch.isfinite(out).all()
    inside = inputs("sd3", 24, 40)  # grids that fit keep the teacher's crop exactly
    assert torch.equal(student.pos_embed(inside["hidden_states"]), teacher.pos_embed(inside["hidden_states"]))


@pytest.mark.parametrize("method, fam, attr", [("edit", "pixart", "attn1"), ("linfusion", "pixart", "attn1"),
                                               ("mm_edit", "sd3", "attn")])
def test_inherited_queries_through_residual_maps_start_as_the_teachers(teachers, method, fam, attr):
    """ConvFusion and LinFusion maps add a branch to X before the inherited projection: inheriting q zeroes
    the branch, so the converted queries are the teacher's; without inherit the branch stays random."""
    teacher = teachers[fam]
    t_q = getattr(teacher.transformer_blocks[0], attr).to_q
    student = lindit.convert(teacher, method, inherit="q")
    s_layer = getattr(student.transformer_blocks[0], attr)
    x = torch.randn(2, 5 * 7, t_q.in_features)
    torch.testing.assert_close(s_layer.project("q", x, (5, 7))[0], t_q(x), rtol=1e-5, atol=1e-6)
    fresh = getattr(lindit.convert(teacher, method).transformer_blocks[0], attr)
    with torch.no_grad():
        fresh.to_q.load_state_dict(t_q.state_dict())
    assert not torch.allclose(fresh.project("q", x, (5, 7))[0], t_q(x), atol=1e-4)


def test_every_method_option_has_a_value_rule():
    """check_options looks every option up in OPTION_RULES: an option without a rule would be a KeyError."""
    from lindit.methods import OPTION_RULES, REGISTRY

    missing = {(name, o) for name, m in REGISTRY.items() for o in m.options if o not in OPTION_RULES}
    assert not missing
