"""diffusers' memory and speed features on teachers and students: group offloading, layerwise casting,
torch.compile(fullgraph=True)."""

import pytest
import torch
from torch import nn

from diffusers_cases import ATOL, CASES, REPRESENTATIVES, Case, cases, converted_names

CPU = torch.device("cpu")
NO_GROUP_OFFLOAD = pytest.mark.xfail(
    strict=True, raises=ValueError,
    reason="diffusers 0.42: DiTTransformer2DModel does not support group offloading; the teacher neither")


def _fp8(model: nn.Module) -> nn.Module:
    model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.float32)
    return model


@pytest.mark.parametrize("case", cases(marks={"dit": NO_GROUP_OFFLOAD}))
@pytest.mark.parametrize("offload", ["block_level", "leaf_level_on_disk"])
def test_group_offloading_gives_the_plain_output(tmp_path, case, offload):
    """On CPU (diffusers allows neither streams nor non-blocking copies there): each group's weights are moved
    in just before it runs, from memory (block level) or from safetensors files (leaf level, on disk)."""
    expected = case.run(case.build())
    model = case.build()
    if offload == "block_level":
        model.enable_group_offload(CPU, offload_device=CPU, offload_type="block_level", num_blocks_per_group=1)
    else:
        model.enable_group_offload(CPU, offload_device=CPU, offload_type="leaf_level", offload_to_disk_path=tmp_path)
        assert list(tmp_path.glob("*.safetensors"))
    hooked = [m for m in model.modules() if getattr(m, "_diffusers_hook", None) is not None]
    assert hooked and all(m._diffusers_hook.get_hook("group_offloading") for m in hooked)
    torch.testing.assert_close(case.run(model), expected, rtol=0, atol=ATOL)
    if offload == "block_level":  # with layerwise casting on top (on disk, diffusers keeps the float32 copies)
        torch.testing.assert_close(case.run(_fp8(model)), case.run(_fp8(case.build())), rtol=0, atol=ATOL)


@pytest.mark.parametrize("case", cases())
def test_layerwise_casting_stores_fp8_and_stays_close(case):
    expected = case.run(case.build())
    model = _fp8(case.build())
    for name in converted_names(model):  # the lindit layers' projections and conv branches are stored in fp8
        for sub_name, sub in model.get_submodule(name).named_modules():
            if isinstance(sub, (nn.Linear, nn.Conv2d)):
                assert sub.weight.dtype == torch.float8_e4m3fn, f"{name}.{sub_name}"
    out = case.run(model)
    assert out.dtype == torch.float32
    assert ((out - expected).norm() / expected.norm()) < 0.1  # 3-bit mantissas: about 6% per weight
    model.train()
    model(**case.inputs(), return_dict=False)[0].pow(2).mean().backward()  # and it trains
    assert all(p.grad is not None for p in model.parameters())


def _compiled_runs(case: Case, model: nn.Module) -> None:
    expected = case.run(model)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")  # a graph break is an error
    with torch._dynamo.config.patch(error_on_recompile=True):
        first, second = case.run(compiled), case.run(compiled)
    torch.testing.assert_close(first, expected, rtol=0, atol=ATOL)
    assert torch.equal(first, second)


@pytest.mark.slow
@pytest.mark.parametrize("case", cases(REPRESENTATIVES + [c for c in CASES if c.method == "sana"]))
def test_torch_compile_fullgraph_equals_eager(case):
    """Dynamo traces the whole student in one graph (the token grid included) and AOTAutograd's graph gives
    eager's outputs; a second call reuses it. (Inductor's C++ kernels take minutes per model on 2 cores:
    checked by hand, see docs/DIFFUSERS.md.)"""
    torch.compiler.reset()
    try:
        _compiled_runs(case, case.build())
    finally:
        torch.compiler.reset()
