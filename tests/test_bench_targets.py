"""`lindit bench targets` reads a bench.json and judges each target from the numbers in it."""

import json

import pytest

from lindit.cli import main
from lindit.benchmarks.targets import report


def _cell(preset, method, px, block_s, gflop=None, peak=None, skipped=None):
    return {"preset": preset, "method": method, "height_px": px, "width_px": px, "block_s": block_s,
            "block_gflop": gflop or {k: 1.0 for k in block_s}, "block_peak_mb": peak or {k: 1.0 for k in block_s},
            "skipped": skipped}


def _write(path, cells, command="lindit bench model"):
    path.write_text(json.dumps({"command": command, "matmul_gflops": 100.0, "cells": cells}))
    return path


def test_ratios_flops_and_memory_are_judged_from_the_run(tmp_path):
    cells = [
        _cell("pixart-sigma", "teacher", 1024, {"block0": 2.0}),
        _cell("pixart-sigma", "edit", 1024, {"block0": 1.0}),  # 2.0x >= 1.3x: met
        _cell("pixart-sigma", "teacher", 2048, {"block0": 2.0}),
        _cell("pixart-sigma", "edit", 2048, {"block0": 1.0}),  # 2.0x < 2.2x: missed
        _cell("pixart-sigma", "teacher", 4096, {}, skipped="predicted 900 s per run > --max-seconds 600"),
        _cell("pixart-sigma", "edit", 4096, {"block0": 1.0}, gflop={"block0": 70.0}),  # 70% of 100: met
        _cell("sd35-medium", "mm_edit", 4096, {"block0": 1.0, "block1": 1.0},
              gflop={"block0": 50.0, "block1": 65.0}),  # 50%: missed, 65%: met
    ]
    memory = [_cell("pixart-sigma", "edit", 8192, {"block0": 30.0}, peak={"block0": 20 * 1024.0})]
    text = report(_write(tmp_path / "a.json", cells), _write(tmp_path / "b.json", memory, "lindit bench 8192"))
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert "2.00x" in rows["pixart-sigma / edit at 1024 px, block0"] and "| met |" in rows[
        "pixart-sigma / edit at 1024 px, block0"]
    assert "**missed**" in rows["pixart-sigma / edit at 2048 px, block0"]
    assert "skipped: predicted 900 s" in rows["pixart-sigma / edit at 4096 px"]
    assert "not in this run" in rows["sd35-medium / mm_edit at 1024 px"]
    assert "70%" in rows["pixart-sigma / edit at 4096 px, block0"]
    assert "**missed**" in rows["sd35-medium / mm_edit at 4096 px, block0"]
    assert "| met |" in rows["sd35-medium / mm_edit at 4096 px, block1"]
    assert "20.00 GB" in rows["pixart-sigma / edit at 8192 px, block0"] and "**missed**" in rows[
        "pixart-sigma / edit at 8192 px, block0"]
    assert "`lindit bench 8192`" in text


def test_cli_and_bad_files(tmp_path, capsys):
    path = _write(tmp_path / "bench.json", [_cell("pixart-sigma", "teacher", 1024, {"block0": 1.0})])
    assert main(["bench", "targets", str(path)]) == 0
    assert "pixart-sigma / edit at 1024 px" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="lindit bench model"):
        report(tmp_path / "missing.json")
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(ValueError, match="no 'cells'"):
        report(tmp_path / "other.json")


def test_a_second_run_fills_the_skipped_size_and_ratios_never_mix_runs(tmp_path):
    first = [_cell("pixart-sigma", "teacher", 4096, {}, skipped="predicted 315 s per run > --max-seconds 300"),
             _cell("pixart-sigma", "edit", 4096, {"block0": 10.0}, gflop={"block0": 400.0})]
    # the 4096 px run: teacher 60 s and EDiT 8 s in the same process -> 7.5x (not 60 / 10 from the first run)
    second = [_cell("pixart-sigma", "teacher", 4096, {"block0": 60.0}),
              _cell("pixart-sigma", "edit", 4096, {"block0": 8.0}, gflop={"block0": 600.0})]
    text = report([_write(tmp_path / "a.json", first, "run a"), _write(tmp_path / "b.json", second, "run b")])
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    speed = [line for line in text.splitlines() if "pixart-sigma / edit at 4096 px, block0 | >= 6x" in line]
    assert len(speed) == 1 and "7.50x (60 s / 8 s); FLOPs 0.00x, GFLOP/s 0 / 75" in speed[0]
    flops = [line for line in text.splitlines() if "of 100 GFLOP/s" in line and "pixart-sigma / edit" in line]
    assert len(flops) == 1 and "(40 GFLOP/s)" in flops[0]  # the first run's measured cell, 400 / 10
    assert "`run a` and `run b`" in text
    assert "not in these runs" in rows["sd35-medium / mm_edit at 1024 px"]


def test_an_interleaved_paired_run_replaces_the_sequential_ratio_for_the_targets_it_covers(tmp_path):
    cells = [_cell("pixart-sigma", "teacher", 1024, {"block0": 1.0}), _cell("pixart-sigma", "edit", 1024, {"block0": 1.0}),
             _cell("pixart-sigma", "teacher", 2048, {"block0": 3.0}), _cell("pixart-sigma", "edit", 2048, {"block0": 1.0})]
    ratio = lambda m, q1, q3: {"q1": q1, "median": m, "q3": q3, "flop_ratio": 1.26}  # noqa: E731
    paired = tmp_path / "paired.json"
    paired.write_text(json.dumps({"command": "lindit bench paired --size 1024", "preset": "pixart-sigma",
                                  "height_px": 1024, "width_px": 1024, "rounds": 15,
                                  "ratios": {"edit": {"block0": ratio(1.41, 1.36, 1.43),
                                                      "all blocks": ratio(1.29, 1.2, 1.5)}}}))
    text = report(_write(tmp_path / "a.json", cells), paired_json=[paired])
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    row = rows["pixart-sigma / edit at 1024 px, block0"]
    assert "1.41x (median of 15 interleaved rounds, quartiles 1.36-1.43x)" in row and "| met |" in row
    assert "**missed**" in rows["pixart-sigma / edit at 1024 px, all blocks"]  # 1.29 < 1.3
    assert "3.00x" in rows["pixart-sigma / edit at 2048 px, block0"]  # not covered: the sequential run's
    assert "`lindit bench paired --size 1024`" in text
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(ValueError, match=r"is not the other.json of .lindit bench paired. \(no 'ratios'"):
        report(_write(tmp_path / "a.json", cells), paired_json=[tmp_path / "other.json"])
