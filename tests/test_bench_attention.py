"""The attention benchmark runs end to end on tiny sizes and reports what it skipped (no timing asserts)."""

import json

import torch

from lindit.cli import main
from lindit.eval.measure import peak_memory_bytes, time_call


def test_bench_attention_cli_writes_json_and_markdown(tmp_path, capsys):
    code = main(["bench", "attention", "--mechanisms", "softmax", "edit", "mm_edit", "--tokens", "64", "256",
                 "--dim", "32", "--heads", "4", "--prompt-tokens", "5", "--repeats", "3", "--device", "cpu",
                 "--out", str(tmp_path)])
    assert code == 0
    data = json.loads((tmp_path / "attention.json").read_text())
    cells = {(c["mechanism"], c["tokens"]): c for c in data["cells"]}
    assert set(cells) == {(m, n) for m in ("softmax", "edit", "mm_edit") for n in (64, 256)}
    assert all(c["latency_s"] > 0 and c["runs"] >= 3 for c in cells.values())
    assert data["machine"]["torch"] == torch.__version__
    assert "| edit |" in (tmp_path / "attention.md").read_text()


def test_bench_skips_cells_over_budget_and_says_why(tmp_path, capsys):
    main(["bench", "attention", "--mechanisms", "softmax", "--tokens", "64", "16384", "--dim", "32", "--heads", "4",
          "--max-seconds", "1e-9", "--device", "cpu", "--out", str(tmp_path)])
    cells = json.loads((tmp_path / "attention.json").read_text())["cells"]
    assert cells[0]["skipped"] is None and "max-seconds" in cells[1]["skipped"]
    assert "skipped" in capsys.readouterr().out


def test_bench_rejects_bad_input(tmp_path, capsys):
    assert main(["bench", "attention", "--tokens", "1000", "--mechanisms", "edit", "--out", str(tmp_path)]) == 2
    assert "square" in capsys.readouterr().err


def test_peak_memory_sees_a_large_allocation():
    def allocate():
        t = torch.ones(50 * 2**20)  # 200 MB
        return t.sum()

    assert peak_memory_bytes(allocate, torch.device("cpu")) > 150 * 2**20


def test_time_call_runs_at_least_three_times():
    calls = []
    timing = time_call(lambda: calls.append(1), torch.device("cpu"), warmup=2, repeats=4)
    assert timing.runs == 4 and len(calls) == 6 and timing.median_s >= 0
