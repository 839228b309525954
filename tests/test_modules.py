"""Every attention module: shapes, odd grids, compression, gradients, half precision, bad input."""

import pytest
import torch

from lindit.methods import REGISTRY, LayerSpec
from lindit.modules import (
    ConvFusion,
    JointAttention,
    KVCompress,
    LinearAttention,
    MixFFN,
    SoftmaxAttention,
    SpatialCompressor,
    TokenMapOptions,
)

DIM, HEADS, GRID = 48, 4, (9, 13)  # odd, non-square grid: 117 tokens
SELF_SPEC = LayerSpec(dim=DIM, heads=HEADS, inner_dim=DIM, out_dim=DIM)
JOINT_SPEC = LayerSpec(dim=DIM, heads=HEADS, inner_dim=DIM, out_dim=DIM, qk_norm="rms_norm", context_dim=DIM)


def self_modules():
    """(name, module) for the teacher's attention and every self-attention method of the registry."""
    mods = [("softmax", SoftmaxAttention(DIM, HEADS))]
    mods += [(n, m.build(SELF_SPEC)) for n, m in REGISTRY.items() if m.kind == "self"]
    mods += [("mixffn", MixFFN(DIM))]
    return mods


def joint_modules(context_pre_only=False):
    spec = JOINT_SPEC if not context_pre_only else LayerSpec(**{**JOINT_SPEC.__dict__, "context_pre_only": True})
    teacher = JointAttention(
        DIM, HEADS, mode="softmax", query="linear", key="linear", value="linear", context_pre_only=context_pre_only
    )
    mods = [("softmax", teacher), ("mm_edit eta=learned", REGISTRY["mm_edit"].build(spec, eta="learned"))]
    return mods + [(n, m.build(spec)) for n, m in REGISTRY.items() if m.kind == "joint"]


def _tokens(n, dim=DIM, seed=0, dtype=torch.float32):
    return torch.randn(2, n, dim, generator=torch.Generator().manual_seed(seed)).to(dtype)


def _run(module, x, grid, context=None):
    return module(x, grid) if context is None else module(x, grid, context)


@pytest.mark.parametrize("name, module", self_modules(), ids=lambda v: v if isinstance(v, str) else "")
def test_self_module_shape_and_gradients(name, module):
    torch.manual_seed(0)
    x = _tokens(GRID[0] * GRID[1]).requires_grad_()
    out = module(x, GRID)
    assert out.shape == x.shape and torch.isfinite(out).all()
    out.square().mean().backward()
    assert x.grad.abs().sum() > 0
    for pname, p in module.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}: no gradient reaches {pname}"


@pytest.mark.parametrize("context_pre_only", [False, True])
def test_joint_module_shapes_and_gradients(context_pre_only):
    for name, module in joint_modules(context_pre_only):
        x, c = _tokens(GRID[0] * GRID[1]).requires_grad_(), _tokens(7, seed=1).requires_grad_()
        out_x, out_c = module(x, GRID, c)
        assert out_x.shape == x.shape and torch.isfinite(out_x).all(), name
        if context_pre_only:
            assert out_c is None and module.to_add_out is None and module.add_q_proj is None, name
            loss = out_x.square().mean()
        else:
            assert out_c.shape == c.shape and torch.isfinite(out_c).all(), name
            loss = out_x.square().mean() + out_c.square().mean()
        loss.backward()
        for pname, p in module.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}: no gradient reaches {pname}"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_outputs_are_finite_and_close(dtype):
    x = _tokens(GRID[0] * GRID[1])
    c = _tokens(7, seed=1)
    for name, module in self_modules() + joint_modules():
        ctx = c if isinstance(module, JointAttention) else None
        ref = _run(module, x, GRID, ctx)
        half = _run(module.to(dtype), x.to(dtype), GRID, None if ctx is None else ctx.to(dtype))
        module.float()
        for r, h in zip(*(o if isinstance(o, tuple) else (o,) for o in (ref, half))):
            assert h.dtype == dtype and torch.isfinite(h).all(), name
            assert (h.float() - r).abs().max() < 0.05 * r.abs().max() + 0.05, name


def test_compressed_key_grids_are_ceil_sized():
    x = _tokens(33 * 47, dim=8)
    k, grid = SpatialCompressor(8)(x, (33, 47))
    assert grid == (17, 24) and k.shape == (2, 17 * 24, 8)
    k, grid = KVCompress(8, 2)(x, (33, 47))
    assert grid == (17, 24) and k.shape == (2, 17 * 24, 8)
    k, grid = SpatialCompressor(8, options=TokenMapOptions(sc_stride=4, sc_kernel=5))(x, (33, 47))
    assert grid == (9, 12)


def test_compressed_attention_uses_compressed_keys():
    """The EDiT layer's keys come from the compressed grid: 4x fewer for stride 2."""
    edit = LinearAttention(DIM, HEADS)
    seen = {}
    edit.spatial_compressor_k.register_forward_hook(lambda m, i, o: seen.update(k=o[0].shape))
    edit(_tokens(GRID[0] * GRID[1]), GRID)
    assert seen["k"] == (2, 5 * 7, DIM)


def test_spatial_compressor_starts_as_local_average():
    sc = SpatialCompressor(4)
    x = torch.ones(1, 36, 4)
    y, grid = sc(x, (6, 6))
    assert grid == (3, 3)
    assert torch.allclose(y.view(3, 3, 4)[1:, 1:], torch.ones(2, 2, 4))  # interior: mean of ones


def test_convfusion_mixes_neighbours_and_linear_map_does_not():
    cf = ConvFusion(8)
    x = _tokens(25, dim=8)
    x2 = x.clone()
    x2[:, 12] += 1.0  # change the center token of a 5x5 grid
    diff = (cf(x, (5, 5)) - cf(x2, (5, 5))).abs().sum(-1)[0].view(5, 5)
    assert (diff > 0).all()  # neighbours through the 3x3 conv, all tokens through GroupNorm statistics
    plain = torch.nn.Linear(8, 8)
    diff = (plain(x) - plain(x2)).abs().sum(-1)[0]
    assert diff[12] > 0 and (diff[:12] == 0).all() and (diff[13:] == 0).all()


def test_lit_value_conv_and_few_heads():
    lit = REGISTRY["lit"].build(SELF_SPEC)
    assert lit.heads == 2 and lit.value_conv.kernel_size == (5, 5) and lit.value_conv.groups == DIM


@pytest.mark.parametrize("module", [SoftmaxAttention(DIM, HEADS), LinearAttention(DIM, HEADS), MixFFN(DIM)])
def test_wrong_token_count_names_n_h_w(module):
    with pytest.raises(ValueError, match=r"N=116.*h=9.*w=13"):
        module(_tokens(116), GRID)


def test_joint_wrong_token_count_raises():
    with pytest.raises(ValueError, match=r"N=116"):
        JointAttention(DIM, HEADS)(_tokens(116), GRID, _tokens(7))


def test_invalid_configurations_name_the_problem():
    with pytest.raises(ValueError, match="same token count"):
        LinearAttention(DIM, HEADS, key="compressor", value="linear")
    with pytest.raises(ValueError, match="uncompressed values"):
        LinearAttention(DIM, HEADS, value_conv=5)
    with pytest.raises(ValueError, match="unknown token map 'conv'"):
        LinearAttention(DIM, HEADS, query="conv")
    with pytest.raises(ValueError, match="heads=5"):
        LinearAttention(DIM, 5)
    with pytest.raises(ValueError, match="mode"):
        JointAttention(DIM, HEADS, mode="quadratic")


def test_learned_eta_starts_as_the_papers_eta_and_is_a_parameter():
    paper = REGISTRY["mm_edit"].build(JOINT_SPEC)
    learned = REGISTRY["mm_edit"].build(JOINT_SPEC, eta="learned")
    learned.load_state_dict(paper.state_dict(), strict=False)
    assert learned.eta_logit_bias.shape == (HEADS,) and paper.eta_logit_bias is None
    x, c = _tokens(GRID[0] * GRID[1]), _tokens(7, seed=1)
    torch.testing.assert_close(learned(x, GRID, c)[0], paper(x, GRID, c)[0])
    with torch.no_grad():
        learned.eta_logit_bias.fill_(2.0)
    assert not torch.allclose(learned(x, GRID, c)[0], paper(x, GRID, c)[0])
    with pytest.raises(ValueError, match="eta='learned' needs mode='hybrid'"):
        JointAttention(DIM, HEADS, mode="linear", eta="learned")


def test_softmax_qk_raw_feeds_pre_relu_queries_and_keys_to_the_softmax_pairs():
    """softmax_qk='raw': with eta = 0 the image rows are softmax(Q_I, K_P) on the queries before phi; the
    prompt rows see the image keys before phi. 'phi' (EDiT Eq. 7 as written) uses the ReLU'd ones."""
    raw = JointAttention(DIM, HEADS, mode="hybrid", query="linear", key="linear", value="linear", eta=0.0,
                         softmax_qk="raw")
    paper = JointAttention(DIM, HEADS, mode="hybrid", query="linear", key="linear", value="linear", eta=0.0)
    paper.load_state_dict(raw.state_dict())
    teacher = JointAttention(DIM, HEADS, mode="softmax", query="linear", key="linear", value="linear")
    teacher.load_state_dict(raw.state_dict())
    x, c = _tokens(GRID[0] * GRID[1]), _tokens(7, seed=1)
    q_i, _, _, _ = raw._image_qkv(x, GRID)
    _, k_p, v_p = raw._prompt_qkv(c)
    from lindit.functional import softmax_attention
    from lindit.modules.grid import merge_heads

    expected = raw.to_out[0](merge_heads(softmax_attention(q_i, k_p, v_p)))
    out_i, out_p = raw(x, GRID, c)
    torch.testing.assert_close(out_i, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out_p, teacher(x, GRID, c)[1], rtol=1e-5, atol=1e-5)  # prompt rows: full softmax
    paper_i, paper_p = paper(x, GRID, c)
    assert not torch.allclose(paper_i, out_i, atol=1e-3) and not torch.allclose(paper_p, out_p, atol=1e-3)
    with pytest.raises(ValueError, match=r"softmax_qk must be one of \('phi', 'raw'\), got 'relu'"):
        JointAttention(DIM, HEADS, softmax_qk="relu")
