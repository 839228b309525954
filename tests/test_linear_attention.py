"""Linear attention (EDiT Eq. 3): the normaliser conventions against transcriptions of the published code,
the fast path against the plain reference in every dtype (outputs and gradients, odd token counts), half
precision at 262,144 tokens against float64, and the gradient bound for dead and near-dead queries."""

import pytest
import torch
import torch.nn.functional as F

from lindit.benchmarks.precision import KINDS, TOLERANCE, accuracy_row, query_gradient, structured_inputs, temporaries
from lindit.functional import (
    DEFAULT_NORMALISER,
    NORMALISERS,
    linear_attention,
    linear_attention_apply,
    linear_attention_reference,
    linear_attention_state,
    normaliser,
)


def _features(*shape, dtype=torch.float32, seed=0):
    return torch.relu(torch.randn(*shape, generator=torch.Generator().manual_seed(seed))).to(dtype)


def _values(*shape, dtype=torch.float32, seed=1):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


# Transcriptions of each implementation's code (in (B, H, N, d) layout), in float64.
def sana_code(q, k, v):
    """NVlabs/Sana LiteLA.attn_matmul: values padded with a row of ones, eps=1e-15 on the sum."""
    v1 = F.pad(v, (0, 1), mode="constant", value=1.0)
    out = q @ (k.transpose(-2, -1) @ v1)
    return out[..., :-1] / (out[..., -1:] + 1e-15)


def lit_code(q, k, v):
    """LiT App. G: kernel(q) + 1e-6, kernel(k) + 1e-6, z = 1 / (q . mean(k) + 1e-6), kv scaled by N^-1/2 twice."""
    n = k.shape[-2]
    q, k = q + 1e-6, k + 1e-6
    z = 1 / (q @ k.mean(dim=-2, keepdim=True).transpose(-2, -1) + 1e-6)
    kv = (k.transpose(-2, -1) * (n**-0.5)) @ (v * (n**-0.5))
    return q @ kv * z


def linfusion_code(q, k, v):
    """LinFusion GeneralizedLinearAttention.forward: z = q . mean(k) + 1e-4, kv scaled by N^-1/2 twice."""
    n = k.shape[-2]
    z = q @ k.mean(dim=-2, keepdim=True).transpose(-2, -1) + 1e-4
    kv = (k.transpose(-2, -1) * (n**-0.5)) @ (v * (n**-0.5))
    return q @ kv / z


def lindit_code(q, k, v):
    """EDiT Eq. (2) as an explicit N x M similarity matrix, eps=1e-6 on the sum (lindit's first form)."""
    sim = q @ k.transpose(-2, -1)
    return (sim @ v) / (sim.sum(-1, keepdim=True) + 1e-6)


CODE = {"sana": sana_code, "lit": lit_code, "linfusion": linfusion_code, "lindit": lindit_code}


def _small_features(*shape, seed):
    """Features with near-dead rows (scaled down 1e-3 .. 1e-6), where the conventions differ most."""
    x = _features(*shape, seed=seed)
    x[..., ::3, :] *= torch.logspace(-3, -6, x[..., ::3, :].shape[-2]).unsqueeze(-1)
    return x


@pytest.mark.parametrize("name", list(NORMALISERS))
@pytest.mark.parametrize("impl", [linear_attention, linear_attention_reference])
def test_each_convention_equals_its_published_code(name, impl):
    q, k, v = _small_features(2, 3, 37, 7, seed=0), _features(2, 3, 37, 7, seed=2), _values(2, 3, 37, 5)
    out = impl(q.double(), k.double(), v.double(), eps=name)
    assert out.dtype == torch.float64  # float64 inputs are computed in float64
    torch.testing.assert_close(out, CODE[name](q.double(), k.double(), v.double()), rtol=1e-10, atol=1e-12)


def test_conventions_differ_where_they_should():
    """The four conventions are not one: near-dead queries separate them (a mix-up of names would fail)."""
    q, k, v = _small_features(1, 1, 64, 4, seed=3), _features(1, 1, 64, 4, seed=4), _values(1, 1, 64, 3)
    outs = {n: linear_attention(q.double(), k.double(), v.double(), eps=n) for n in NORMALISERS}
    names = list(outs)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not torch.allclose(outs[a], outs[b], rtol=1e-6, atol=1e-9), (a, b)
    assert normaliser(1e-6) == normaliser(1e-6) and normaliser(1e-6).over == "sum"
    for bad in ("sanaa", -1.0, True):
        with pytest.raises(ValueError, match="normaliser|eps"):
            normaliser(bad)


@pytest.mark.parametrize("name", list(NORMALISERS))
@pytest.mark.parametrize("n, m", [(37, 37), (53, 14), (1, 5)])
def test_fast_path_equals_reference_with_compressed_keys(name, n, m):
    q, k, v = _features(2, 3, n, 7), _features(2, 3, m, 7, seed=2), _values(2, 3, m, 5)
    for dtype in (torch.float32, torch.float64):
        args = [t.to(dtype) for t in (q, k, v)]
        ref = linear_attention_reference(*[t.double() for t in args], eps=name)
        out = linear_attention(*args, eps=name)
        assert out.dtype == dtype
        tol = 1e-6 if dtype == torch.float32 else 1e-13
        torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float16, 2e-3), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("name", ["lindit", "lit", DEFAULT_NORMALISER])
def test_fast_linear_attention_matches_reference_outputs_and_gradients(dtype, tol, name):
    shapes = [(2, 3, 41, 9), (2, 3, 13, 9), (2, 3, 13, 6)]
    q, k, v = (t.to(dtype).requires_grad_() for t in (_features(*shapes[0]), _features(*shapes[1], seed=3), _values(*shapes[2])))
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    out = linear_attention(q, k, v, eps=name)
    ref = linear_attention_reference(q64, k64, v64, eps=name)
    assert out.dtype == dtype
    torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol)
    grad = _values(*out.shape, seed=4)
    out.backward(grad.to(dtype))
    ref.backward(grad.double())
    for mine, theirs in ((q, q64), (k, k64), (v, v64)):
        scale = theirs.grad.abs().max()
        torch.testing.assert_close(mine.grad.double() / scale, theirs.grad / scale, rtol=tol, atol=4 * tol)


def test_states_of_shards_add_up_and_the_lit_feature_shift_is_in_the_state():
    k, v, q = _features(1, 2, 30, 5, seed=5), _values(1, 2, 30, 4), _features(1, 2, 9, 5, seed=6)
    for name in NORMALISERS:
        s1, c1 = linear_attention_state(k[:, :, :11], v[:, :, :11], name)
        s2, c2 = linear_attention_state(k[:, :, 11:], v[:, :, 11:], name)
        whole = linear_attention(q, k, v, eps=name)
        torch.testing.assert_close(linear_attention_apply(q, s1 + s2, c1 + c2, name), whole, rtol=1e-6, atol=1e-6)


# Half precision at the largest size EDiT reports (8192 px: 512 x 512 tokens), with the tolerances documented in
# lindit.functional: |out - out64| <= tol * max|v|, |grad - grad64| <= tol * max|grad64|.
N_8192 = 262_144


def _check_against_float64(dtype_name, kind, n=N_8192, heads=1, dim=8):
    row = accuracy_row(n, heads, dim, dtype_name, kind)
    out_tol, grad_tol = TOLERANCE[dtype_name]
    assert row["finite"] and row["out_err"] <= out_tol, row
    assert max(row[f"grad_{x}_err"] for x in "qkv") <= grad_tol, row


@pytest.mark.parametrize("dtype_name", ["bfloat16", "float16"])
def test_half_precision_at_262144_tokens_matches_float64_forward_and_backward(dtype_name):
    _check_against_float64(dtype_name, "large")
    if dtype_name == "float16":
        k = structured_inputs(N_8192, 1, 8, torch.float16, "large")[1]
        assert torch.isinf(k.sum(dim=-2)).any(), "the naive fp16 key sum must overflow, or this proves nothing"


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype_name", ["bfloat16", "float16", "float32"])
def test_every_dtype_and_input_kind_at_262144_tokens(dtype_name, kind):
    _check_against_float64(dtype_name, kind)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_temporaries_stay_within_about_twice_q(dtype):
    """Batch 2, heads split from (B, N, H*d) tokens as the modules do (a strided q): v padded with ones, the
    (N, d + 1) GEMM output and the output itself, nothing of q's size in float32."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.rand(2, 4096, 4 * 64, generator=g).to(dtype).view(2, 4096, 4, 64).transpose(1, 2) for _ in "qkv")
    used = temporaries(lambda: linear_attention(q, k, v)) / (q.numel() * q.element_size())
    assert 1.0 <= used <= 2.3


def test_temporaries_are_counted():
    """The temporaries measure would see an upcast copy of q (so the 2.3x bound above can fail)."""
    q = torch.rand(1, 2, 4096, 8, dtype=torch.bfloat16)
    assert temporaries(lambda: q.float() * 2) == 2 * 2 * q.numel() * q.element_size()
    assert temporaries(lambda: q[:, :, :100]) == 0  # a view of an input allocates nothing


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_default_convention_bounds_the_query_gradient_of_dead_queries(dtype):
    """|d L / d q_c| <= 2 |g|_1 max|v| mean_j k_jc / eps for eps on the mean (the default, LinFusion's): the
    bound does not grow with N. With eps on the sum (lindit's old form) the gradient grows as N / eps."""
    for n in (256, 4096):
        for delta in (0.0, 1e-9, 1e-6, 1e-3):
            grad, bound = query_gradient(DEFAULT_NORMALISER, n, dtype, delta)
            assert grad <= bound and bound < 1e6, (n, delta, grad, bound)
    old = [query_gradient("lindit", n, dtype, 0.0)[0] for n in (256, 4096)]
    assert old[1] > 1e4 * query_gradient(DEFAULT_NORMALISER, 4096, dtype, 0.0)[0] and old[1] > 4 * old[0]


@pytest.mark.parametrize("family, method", [("pixart", "edit"), ("sd3", "mm_edit"), ("sd3", "sana_mmdit")])
def test_the_convention_is_a_convert_option_that_reaches_every_layer_and_persists(tmp_path, family, method):
    import lindit
    from lindit.integrations.diffusers import converted_layers
    from tiny_models import BUILDERS

    student = lindit.convert(BUILDERS[family](), method, eps="lit")
    layers = [m for m in converted_layers(student, attention_only=True).values()]
    assert layers and all(layer.eps == "lit" for layer in layers)
    lindit.save(student, tmp_path / "s")
    assert all(m.eps == "lit" for m in converted_layers(lindit.load(tmp_path / "s"), attention_only=True).values())
    default = lindit.convert(BUILDERS[family](), method)
    assert all(m.eps == DEFAULT_NORMALISER for m in converted_layers(default, attention_only=True).values())
    with pytest.raises(ValueError, match="option eps='sanaa' of method .*: must be sana, lit, linfusion, lindit"):
        lindit.convert(BUILDERS[family](), method, eps="sanaa")
