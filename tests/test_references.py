"""Every registry method's layer against its float64 reference from the papers (tests/references/):
outputs and the gradients of the input and of every parameter, on odd and non-square grids."""

import pytest
import torch
from references.layers import JointSpec, MapOptions, joint_attention, mixffn, self_attention
from references.methods import JOINT, SELF, SELF_OF_JOINT
from references.ops import Params

from lindit.methods import REGISTRY, LayerSpec
from lindit.modules import JointAttention, MixFFN, SoftmaxAttention

DIM, HEADS, PROMPT = 16, 4, 3  # 4 heads of 4 channels; 3 prompt tokens
GRIDS = [(5, 7), (7, 5), (9, 4), (1, 6)]
CF_GROUPS = 2  # ConvFusion's 3x3 conv gives 16 / 4 = 4 channels: two GroupNorm groups of two
SPEC = LayerSpec(dim=DIM, heads=HEADS, inner_dim=DIM, out_dim=DIM)
QK_SPEC = LayerSpec(dim=DIM, heads=HEADS, inner_dim=DIM, out_dim=DIM, qk_norm="rms_norm")  # SD3.5's attn2
JOINT_SPEC = LayerSpec(dim=DIM, heads=HEADS, inner_dim=DIM, out_dim=DIM, qk_norm="rms_norm", context_dim=DIM)


def randomise(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter drawn at random (float64), so no initial symmetry (SC's constant 1/9 kernel, zero
    biases, unit norms) can hide a transposed grid, a flipped kernel or a missing term."""
    g = torch.Generator().manual_seed(seed)
    module.double()
    with torch.no_grad():
        for p in module.parameters():
            fan_in = p[0].numel() if p.dim() > 1 else 4
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) / fan_in**0.5)
    return module


def _tokens(n, seed, dim=DIM):
    return torch.randn(2, n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def close(mine, ref, what):
    scale = ref.abs().max().item()
    torch.testing.assert_close(mine, ref, rtol=1e-4, atol=2e-5 * max(scale, 1e-3), msg=lambda m: f"{what}: {m}")


def compare(module, run, reference, inputs, what):
    """``run(*inputs)`` (a call of ``module``) and ``reference(Params.of(module), *inputs)`` on the same inputs
    and weights: outputs and the gradients of every input and parameter agree."""
    params = Params.of(module)
    mine_in = [t.clone().requires_grad_() for t in inputs]
    ref_in = [t.clone().requires_grad_() for t in inputs]
    mine, ref = run(*mine_in), reference(params, *ref_in)
    mine, ref = (mine, ref) if isinstance(mine, tuple) else ((mine,), (ref,))
    assert [m is None for m in mine] == [r is None for r in ref], what
    g = torch.Generator().manual_seed(7)
    upstream = [torch.randn(r.shape, generator=g, dtype=torch.float64) for r in ref if r is not None]
    pairs = [(m, r) for m, r in zip(mine, ref) if r is not None]
    for i, (m, r) in enumerate(pairs):
        close(m, r, f"{what}: output {i}")
    names = [n for n, _ in module.named_parameters()]
    grads = torch.autograd.grad(sum((m * u).sum() for (m, _), u in zip(pairs, upstream)),
                                mine_in + list(module.parameters()))
    ref_grads = torch.autograd.grad(sum((r * u).sum() for (_, r), u in zip(pairs, upstream)),
                                    ref_in + [params.tensors[n] for n in names])
    assert not params.unread(), f"{what}: the reference never used {sorted(params.unread())}"
    for name, m, r in zip([f"input {i}" for i in range(len(inputs))] + names, grads, ref_grads):
        close(m, r, f"{what}: gradient of {name}")


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
    compare(layer, lambda x: layer(x, grid), _self_reference(SELF[name], layer.heads, grid, getattr(layer, "eps", 0.0)),
            [_tokens(grid[0] * grid[1], seed=1)], f"{name} on {grid}")


@pytest.mark.parametrize("grid", [(5, 7), (9, 4)], ids=lambda g: f"{g[0]}x{g[1]}")
@pytest.mark.parametrize("joint", list(SELF_OF_JOINT))
def test_sd35_image_only_attn2_replacement_matches_its_reference(joint, grid):
    """SD3.5's dual-attention attn2 (image-only, RMS qk norms) gets the joint method's self method."""
    name = REGISTRY[joint].self_method
    assert name == SELF_OF_JOINT[joint]
    layer = randomise(REGISTRY[name].build(QK_SPEC, **_options(name)))
    compare(layer, lambda x: layer(x, grid), _self_reference(SELF[name], HEADS, grid, layer.eps),
            [_tokens(grid[0] * grid[1], seed=1)], f"{joint}'s attn2 on {grid}")


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
            [_tokens(grid[0] * grid[1], seed=1), _tokens(PROMPT, seed=2)], f"{name} {opts} on {grid}")


@pytest.mark.parametrize("grid", GRIDS, ids=lambda g: f"{g[0]}x{g[1]}")
def test_mixffn_matches_sanas_glumbconv(grid):
    ffn = randomise(MixFFN(DIM, mlp_ratio=1.5))
    compare(ffn, lambda x: ffn(x, grid), lambda p, x: mixffn(p, x, grid),
            [_tokens(grid[0] * grid[1], seed=1)], f"Mix-FFN on {grid}")
