"""torch.compile of converted layers and models: one graph, no recompiles across resolutions, same outputs.

Dynamo's own checks (graph breaks, guards, recompiles) run with the ``eager`` backend, which skips code
generation: seconds instead of minutes on two cores. One slow test compiles with inductor, the default.
"""

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

import lindit
from lindit.methods import REGISTRY, LayerSpec
from tiny_models import BUILDERS, inputs


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def _graphs() -> int:
    return counters["stats"]["unique_graphs"]


QUICK = ("edit", "lit", "mm_edit_exact")  # CI: one of each kind; every registry entry runs with -m slow


@pytest.mark.parametrize("name", [n if n in QUICK else pytest.param(n, marks=pytest.mark.slow) for n in REGISTRY])
def test_every_converted_layer_is_one_graph_at_any_grid(name):
    """fullgraph=True fails on any graph break; dynamic shapes: a second, non-square grid reuses the graph
    (kv_compress, PixArt-Sigma's baseline, pads odd grids: it guards on their parity)."""
    joint = REGISTRY[name].kind == "joint"
    spec = LayerSpec(32, 2, 32, 32, qk_norm="rms_norm" if joint else None, context_dim=32 if joint else None)
    torch.manual_seed(0)
    layer = REGISTRY[name].build(spec).eval()
    compiled = torch.compile(layer, fullgraph=True, dynamic=True, backend="eager")
    context = torch.randn(2, 5, 32)
    for grid in ((6, 10), (10, 14)):
        x = torch.randn(2, grid[0] * grid[1], 32)
        with torch.no_grad():
            args = (x, grid, context) if joint else (x, grid)
            torch.testing.assert_close(compiled(*args), layer(*args), rtol=1e-5, atol=1e-5)
    assert _graphs() == 1, f"{name}: {_graphs()} graphs (a recompile)"


@pytest.mark.parametrize("family, method", [("pixart", "edit"), pytest.param("sd3", "mm_edit_exact", marks=pytest.mark.slow),
                                            pytest.param("dit", "lit", marks=pytest.mark.slow)])
def test_a_converted_model_does_not_recompile_across_resolutions(family, method):
    """The grid reaches the layers as a tensor's shape (TokenGrid), so sizes stay symbolic: two square
    resolutions share one set of graphs. (diffusers' positional embedding guards square vs non-square.)"""
    model = lindit.convert(BUILDERS[family](), method).eval()
    compiled = torch.compile(model, dynamic=True, backend="eager")
    with torch.no_grad():
        for size in (16, 24):
            ref = model(**inputs(family, size, size), return_dict=False)[0]
            out = compiled(**inputs(family, size, size), return_dict=False)[0]
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
            graphs = _graphs() if size == 16 else graphs
    assert _graphs() == graphs, "the second resolution recompiled"
    assert not counters["graph_break"] or all("lindit" not in str(k) for k in counters["graph_break"])


@pytest.mark.slow
def test_inductor_compiled_block_matches_eager():
    """The default backend (inductor, C++ code generation) on one EDiT layer, fp32 and bf16."""
    spec = LayerSpec(32, 2, 32, 32)
    torch.manual_seed(0)
    layer = REGISTRY["edit"].build(spec).eval()
    for dtype, tol in ((torch.float32, 1e-4), (torch.bfloat16, 3e-2)):
        layer = layer.to(dtype)
        compiled = torch.compile(layer)
        x = torch.randn(2, 48, 32).to(dtype)
        with torch.no_grad():
            torch.testing.assert_close(compiled(x, (6, 8)).float(), layer(x, (6, 8)).float(), rtol=tol, atol=tol)
