"""On a CUDA GPU: the half-precision linear attention against float64 at 262,144 tokens, the streaming hybrid
attention against its reference, every converted layer and model against the same computation on the CPU, a
training step, and torch.compile with inductor.

Skipped where no GPU is present (CI has none); run on a GPU machine with ``pytest tests/test_cuda.py``.
docs/BENCHMARKS.md ("Sequence parallelism and GPUs") records the last run. TF32 is switched off so that float32
on the GPU can be held to float32 tolerances.
"""

import pytest
import torch

import lindit
from lindit.benchmarks.precision import KINDS, accuracy_row
from lindit.functional import hybrid_attention, hybrid_attention_reference
from tiny_models import BUILDERS, inputs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

SELF_METHODS = list(lindit.methods("self"))
JOINT_METHODS = list(lindit.methods("joint"))
PAIRS = [(f, m) for f in ("pixart", "dit") for m in SELF_METHODS] + [("sd3", m) for m in JOINT_METHODS]


@pytest.fixture(autouse=True)
def no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype_name", ["bfloat16", "float16", "float32"])
def test_linear_attention_at_262144_tokens_matches_float64(dtype_name, kind):
    """The same tolerances as on the CPU (lindit.benchmarks.precision.TOLERANCE), forward and gradients."""
    row = accuracy_row(262_144, 2, 64, dtype_name, kind, device="cuda")
    assert row["within_tolerance"], row


@pytest.mark.parametrize("image_attention, eta", [("linear", "approx"), ("linear", "exact"), ("softmax", "exact")])
@pytest.mark.parametrize("n_i, m_i, n_p", [(29, 29, 7), (35, 9, 5), (4099, 1025, 77)])
def test_hybrid_attention_matches_its_reference(image_attention, eta, n_i, m_i, n_p):
    """The exact eta reads the log-sum-exp in chunks on the GPU (the fused kernel is the CPU's): float32 on
    the GPU against the float64 reference on the CPU, outputs and gradients."""
    g = torch.Generator().manual_seed(3)
    ins = [torch.randn(2, 3, n, 16, generator=g) for n in (n_i, m_i, m_i, n_p, n_p, n_p)]
    if image_attention == "linear":
        ins[0], ins[1] = torch.relu(ins[0]), torch.relu(ins[1])
    mine = [t.cuda().clone().requires_grad_() for t in ins]
    refs = [t.double().clone().requires_grad_() for t in ins]
    out = hybrid_attention(*mine, image_attention=image_attention, eta=eta)
    ref = hybrid_attention_reference(*refs, image_attention=image_attention, eta=eta)
    ups = [torch.randn(o.shape, generator=g, dtype=torch.float64) for o in ref]
    for o, r in zip(out, ref):
        torch.testing.assert_close(o.double().cpu(), r.detach(), rtol=1e-4, atol=1e-5)
    sum((o * u.cuda().float()).sum() for o, u in zip(out, ups)).backward()
    sum((r * u).sum() for r, u in zip(ref, ups)).backward()
    for m, r in zip(mine, refs):
        scale = r.grad.abs().max()
        assert (m.grad.double().cpu() - r.grad).abs().max() <= 1e-4 * scale


@pytest.mark.parametrize("family, method", PAIRS)
def test_every_converted_model_computes_on_the_gpu_as_on_the_cpu(family, method):
    """Float32 on the GPU equals the CPU; bfloat16 stays finite and close; a training step has finite
    gradients. A non-square latent with an odd side exercises padding and grids."""
    model = lindit.convert(BUILDERS[family](), method).eval()
    h, w = (18, 18) if family == "dit" else (14, 22)
    kw = inputs(family, h, w)
    with torch.no_grad():
        ref = model(**kw, return_dict=False)[0]
        gpu = model.cuda()
        out = gpu(**_to(kw, "cuda"), return_dict=False)[0].cpu()
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
        half = gpu.to(torch.bfloat16)(**_to(kw, "cuda", torch.bfloat16), return_dict=False)[0].float().cpu()
    assert torch.isfinite(half).all()
    assert (half - ref).abs().max() <= 0.1 * ref.abs().max(), f"bf16 off by {(half - ref).abs().max():.3g}"
    model = gpu.float().train()
    model(**_to(kw, "cuda"), return_dict=False)[0].square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("family, method", [("pixart", "edit"), ("sd3", "mm_edit"), ("dit", "lit")])
def test_inductor_compiled_student_matches_eager(family, method):
    """As ``lindit generate --compile`` compiles (``module.compile()``: dynamic after the first recompile),
    two resolutions. (On torch 2.11 + CUDA, ``dynamic=True`` from the first call fails inside inductor's
    code generation for mm_edit; docs/BENCHMARKS.md.)"""
    torch._dynamo.reset()
    model = lindit.convert(BUILDERS[family](), method).eval().cuda()
    compiled = torch.compile(model)
    with torch.no_grad():
        for size in (16, 24):
            kw = _to(inputs(family, size, size), "cuda")
            torch.testing.assert_close(compiled(**kw, return_dict=False)[0], model(**kw, return_dict=False)[0],
                                       rtol=1e-4, atol=1e-4)


def _to(kw, device, dtype=None):
    """Forward keyword arguments on ``device``; floating tensors in ``dtype`` if given."""
    def move(v):
        if isinstance(v, dict):
            return {k: move(x) for k, x in v.items()}
        if isinstance(v, torch.Tensor):
            return v.to(device=device, dtype=dtype if dtype and v.is_floating_point() else v.dtype)
        return v
    return {k: move(v) for k, v in kw.items()}
