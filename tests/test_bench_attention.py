"""The attention benchmark runs end to end on tiny sizes and reports what it skipped (no timing asserts)."""

import json

import torch

from lindit.cli import main
from lindit.eval import measure
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


def test_the_matmul_ceiling_shrinks_its_matrices_to_fit_its_budget(monkeypatch):
    # bf16 on a CPU without bf16 instructions: a 256 product in 33 ms (~1 GFLOP/s); five 2048 products would
    # take 85 s, five 512 ones 1.3 s, five 1024 ones 10.6 s: with 3 s the ceiling is timed at 512.
    monkeypatch.setattr(measure, "timed", lambda fn, device: 0.033)
    cpu = torch.device("cpu")
    assert measure._matmul_size(cpu, torch.float32, 2048, budget_s=3.0) == 512
    monkeypatch.setattr(measure, "timed", lambda fn, device: 2e-4)  # a fast machine keeps the full size
    assert measure._matmul_size(cpu, torch.float32, 2048, budget_s=3.0) == 2048
    assert measure._matmul_size(cpu, torch.float32, 1000, budget_s=3.0) == 1000  # capped at n, not a power of 2
    assert measure._matmul_size(cpu, torch.float32, 128, budget_s=3.0) == 128
