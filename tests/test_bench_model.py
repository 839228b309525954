"""``lindit bench model`` on tiny presets of the real classes: structure of the results, not timings."""

import json

import pytest
import torch

from lindit.cli import main
from lindit.benchmarks import model_forward as bm
from lindit.benchmarks.model_report import fitted_slope
from lindit.benchmarks.presets import PRESETS, Preset
from tiny_models import tiny_pixart, tiny_sd3

TINY = {
    "tiny-pixart": Preset("tiny-pixart", "pixart", type(tiny_pixart()), dict(tiny_pixart(layers=4).config),
                          ("teacher", "edit", "kv_compress"), prompt_tokens=5),
    "tiny-sd3": Preset("tiny-sd3", "sd3", type(tiny_sd3()), {**tiny_sd3(layers=4).config, "pos_embed_max_size": 8},
                       ("teacher", "mm_edit"), prompt_tokens=5),
}


@pytest.fixture
def tiny_presets(monkeypatch):
    for name, preset in TINY.items():
        monkeypatch.setitem(PRESETS, name, preset)


def test_bench_model_writes_tables_json_and_plot(tmp_path, tiny_presets, capsys):
    code = main(["bench", "model", "--presets", "tiny-pixart", "tiny-sd3", "--resolutions", "64", "128", "160",
                 "--non-square", "64x96", "--repeats", "3", "--device", "cpu", "--no-attention", "--out", str(tmp_path)])
    assert code == 0
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["command"].startswith("lindit bench model --presets tiny-pixart")
    assert not (tmp_path / "bench.partial.json").exists(), "the partial record is removed once the run is whole"
    cells = {(c["preset"], c["method"], c["height_px"], c["width_px"]): c for c in data["cells"]}
    assert len(cells) == (3 + 2) * 4
    kv = cells[("tiny-pixart", "kv_compress", 128, 128)]
    assert len(kv["block_s"]) == 2, "kv_compress has plain and compressed blocks: two block types"
    sd3 = cells[("tiny-sd3", "teacher", 64, 64)]
    assert len(sd3["block_s"]) == 3, "SD3.5: dual-attention, plain and context-pre-only blocks"
    for c in data["cells"]:
        if not c["skipped"]:  # 4 blocks: the estimate covers every block type at least once, plus overhead
            assert c["estimate"] and c["forward_s"] >= sum(c["block_s"].values()) and c["overhead_s"] >= 0
            assert all(v > 0 for v in c["block_gflop"].values())
    skipped = cells[("tiny-sd3", "teacher", 160, 160)]["skipped"]
    assert "positional-embedding table 8x8 < grid 10x10" in skipped
    assert cells[("tiny-sd3", "mm_edit", 160, 160)]["forward_s"] > 0  # converted: table interpolated
    md = (tmp_path / "bench.md").read_text()
    assert "~" in md and "estimate" in md and "EDiT Table 3" in md and "skipped, positional" in md
    assert (tmp_path / "bench.png").stat().st_size > 10_000


def test_max_seconds_skips_with_reason(tmp_path, tiny_presets):
    main(["bench", "model", "--presets", "tiny-pixart", "--methods", "teacher", "--resolutions", "64", "512",
          "--non-square", "none", "--max-seconds", "1e-9", "--no-attention", "--device", "cpu", "--out", str(tmp_path)])
    cells = json.loads((tmp_path / "bench.json").read_text())["cells"]
    # no smaller cell to scale from: predicted from the block's FLOPs and this run's matmul rate
    assert all("(from FLOPs) > --max-seconds 1e-09" in c["skipped"] for c in cells)
    main(["bench", "model", "--presets", "tiny-pixart", "--methods", "teacher", "--resolutions", "64", "512",
          "--non-square", "none", "--max-seconds", "1e5", "--no-attention", "--device", "cpu", "--out", str(tmp_path)])
    cells = json.loads((tmp_path / "bench.json").read_text())["cells"]
    # a generous budget skips nothing (the 512 px prediction scales the 64 px time by 64^2, so a loaded
    # machine once predicted 131 s for a block that runs in well under one)
    assert all(c["skipped"] is None and c["block_s"] for c in cells)


def test_bad_sizes_and_methods_are_clear_errors(tmp_path, tiny_presets, capsys):
    assert main(["bench", "model", "--presets", "tiny-pixart", "--resolutions", "100", "--out", str(tmp_path)]) == 2
    assert "multiples of 16" in capsys.readouterr().err
    assert main(["bench", "model", "--presets", "tiny-pixart", "--methods", "edt", "--out", str(tmp_path)]) == 2
    assert "unknown method(s) ['edt']" in capsys.readouterr().err


def test_one_block_stub_is_materialised_and_wired_to_its_own_grid():
    full = bm.meta_model(TINY["tiny-sd3"], "mm_edit")
    assert all(p.is_meta for p in full.parameters())
    stub = bm.one_block_model(full, 0, torch.device("cpu"), torch.float32)
    assert len(stub.transformer_blocks) == 1 and len(full.transformer_blocks) == 4
    assert all(torch.isfinite(p).all() and not p.is_meta for p in stub.parameters())
    assert stub.transformer_blocks[0].attn.grid_source is stub.lindit_grid is not full.lindit_grid
    calls = []
    stub.transformer_blocks[0].register_forward_hook(lambda *a: calls.append(1))
    args, kwargs = bm.capture_block_inputs(stub, TINY["tiny-sd3"].inputs(16, 12, "cpu", torch.float32))
    assert kwargs["hidden_states"].shape == (1, 8 * 6, 16)
    assert calls == [], "capturing the block's inputs stops before the block runs"


def test_fitted_slope_recovers_power_laws():
    assert fitted_slope([(x, 3 * x) for x in (1e6, 4e6, 16e6)]) == pytest.approx(1.0)
    assert fitted_slope([(x, 2 * x**2) for x in (1e6, 4e6, 16e6)]) == pytest.approx(2.0)


def test_dit_non_square_cells_are_skipped_with_the_reason():
    """DiTTransformer2DModel reshapes to a square grid: a non-square cell must be skipped, not crash the run."""
    from lindit.benchmarks.model_forward import _too_small_table
    from lindit.benchmarks.presets import PRESETS

    reason = _too_small_table(PRESETS["dit-xl-2"], None, 96, 168)
    assert reason is not None and "square" in reason and "96x168" in reason
    assert _too_small_table(PRESETS["dit-xl-2"], None, 64, 64) is None


def test_budget_prediction_uses_the_same_preset_and_method():
    # The 4096 px SD3.5 teacher was once predicted from PixArt's teacher at 2048 px (315 s instead of ~1,490 s).
    pixart = bm.ModelCell("pixart-sigma", "teacher", 2048, 2048, 16384, block_s={"block0": 20.0})
    sd35 = bm.ModelCell("sd35-medium", "teacher", 2048, 2048, 16384, block_s={"block0": 43.0, "block1": 26.0})
    edit = bm.ModelCell("pixart-sigma", "edit", 2048, 2048, 16384, block_s={"block0": 10.0})
    done = [pixart, sd35, edit]
    assert bm._predict(done, "sd35-medium", "teacher", 65536) == pytest.approx(69.0 * 16)  # softmax: x4^2
    assert bm._predict(done, "pixart-sigma", "teacher", 65536) == pytest.approx(20.0 * 16)
    assert bm._predict(done, "pixart-sigma", "edit", 65536) == pytest.approx(10.0 * 4)  # linear: x4
    assert bm._predict(done, "sd35-medium", "mm_edit", 65536) is None


def test_method_variants_are_timed_as_their_own_rows(tmp_path, tiny_presets, capsys):
    """NAME:KEY=VALUE builds the method with those lindit.convert options; a smaller ConvFusion costs fewer FLOPs."""
    code = main(["bench", "model", "--presets", "tiny-pixart", "--methods", "edit", "edit:cf_reduction=4",
                 "edit:cf_reduction=1", "--resolutions", "64", "--non-square", "none", "--repeats", "1", "--device",
                 "cpu", "--no-attention", "--out", str(tmp_path)])
    assert code == 0
    cells = {c["method"]: c for c in json.loads((tmp_path / "bench.json").read_text())["cells"]}
    assert set(cells) == {"edit", "edit:cf_reduction=4", "edit:cf_reduction=1"}
    gflop = {m: sum(c["block_gflop"].values()) for m, c in cells.items()}
    assert gflop["edit:cf_reduction=4"] == pytest.approx(gflop["edit"])  # 4 is the default
    assert gflop["edit:cf_reduction=1"] > gflop["edit"]  # a full-width 3x3 conv
    assert "edit:cf_reduction=1" in (tmp_path / "bench.md").read_text()
    assert main(["bench", "model", "--presets", "tiny-pixart", "--methods", "kv_compress:cf_reduction=8",
                 "--resolutions", "64", "--device", "cpu", "--no-attention", "--out", str(tmp_path / "bad")]) == 2
    assert "unknown option(s) ['cf_reduction'] for method 'kv_compress'" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_published_presets_inputs_keep_their_shapes_dtypes_and_fixed_values():
    # Family.example_inputs builds them: the timed forwards (and so the ratios) are those of before.
    shapes = {
        "pixart-sigma": {"hidden_states": (1, 4, 16, 24), "encoder_hidden_states": (1, 300, 4096), "timestep": (1,)},
        "sd35-medium": {"hidden_states": (1, 16, 16, 24), "encoder_hidden_states": (1, 333, 4096),
                        "pooled_projections": (1, 2048), "timestep": (1,)},
        "dit-xl-2": {"hidden_states": (1, 4, 16, 24), "timestep": (1,), "class_labels": (1,)},
    }
    for name, want in shapes.items():
        inputs = PRESETS[name].inputs(16, 24, "cpu", torch.bfloat16)
        tensors = {k: v for k, v in inputs.items() if torch.is_tensor(v)}
        assert {k: tuple(v.shape) for k, v in tensors.items()} == want, name
        assert inputs["hidden_states"].dtype == torch.bfloat16 and inputs["timestep"].tolist() == [500]
        assert inputs["timestep"].dtype == torch.int64
    assert PRESETS["dit-xl-2"].inputs(8, 8, "cpu", torch.float32)["class_labels"].tolist() == [207]
    assert PRESETS["pixart-sigma"].inputs(8, 8, "cpu", torch.float32)["added_cond_kwargs"] == {
        "resolution": None, "aspect_ratio": None}
