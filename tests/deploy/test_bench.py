"""lindit deploy bench: export, check and time teacher and student, with quantized extras."""

import json

import pytest

import lindit
from lindit.benchmarks import deploy_bench as bench
from tiny_models import BUILDERS


@pytest.mark.slow
def test_bench_writes_a_table_of_checked_latencies(tmp_path, monkeypatch, capsys):
    def tiny(preset, method, blocks=None, dtype=None):
        model = BUILDERS["pixart"](layers=2)
        model = model if method == "teacher" else lindit.convert(model, method)
        model.lindit_depth = 28
        return model

    monkeypatch.setattr(bench, "preset_model", tiny)
    code = bench.main(["--presets", "pixart-sigma", "--sizes", "64", "--blocks", "2", "--repeats", "1",
                       "--extras", "int8-dynamic@torch.ao", "ort-int8", "--out", str(tmp_path)])
    assert code == 0
    report = json.loads((tmp_path / "deploy_latency.json").read_text())
    assert report["command"].startswith("lindit deploy bench --presets pixart-sigma")
    cells = report["cells"]
    assert [(c["method"], c["size_px"], c["tokens"], c["blocks"]) for c in cells] == [
        ("teacher", 64, 16, "2 of 28"), ("edit", 64, 16, "2 of 28")]
    for c in cells:
        assert c["passed"] and c["eager_s"] > 0 and c["onnxruntime_s"] > 0
        assert set(c["extra_s"]) == {"int8-dynamic@torch.ao", "ort-int8"} and all(v > 0 for v in c["extra_s"].values())
    table = (tmp_path / "deploy_latency.md").read_text()
    assert "| pixart-sigma | edit | 64 | 16 | 2 of 28 |" in table and "ort-int8 s (eager / it)" in table
    assert not list(tmp_path.glob("*.onnx"))
