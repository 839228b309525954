"""``lindit bench paired`` on tiny presets of the real classes: the interleaving and the ratio arithmetic."""

import json
import re
import statistics

import pytest

from lindit.cli import main
from lindit.benchmarks import paired as bp
from test_bench_model import TINY, tiny_presets  # noqa: F401  (fixture)


def test_paired_rounds_give_median_per_round_ratios_and_flop_ratios(tmp_path, tiny_presets):  # noqa: F811
    code = main(["bench", "paired", "--preset", "tiny-sd3", "--methods", "teacher", "mm_edit", "mm_edit:cf_reduction=1",
                 "--size", "64", "--rounds", "5", "--device", "cpu", "--out", str(tmp_path)])
    assert code == 0
    data = json.loads((tmp_path / "paired.json").read_text())
    assert data["command"].startswith("lindit bench paired --preset tiny-sd3")
    by = {m["method"]: m for m in data["methods"]}
    teacher, student = by["teacher"], by["mm_edit"]
    assert len(teacher["block_s"]) == 3, "SD3.5: dual-attention, plain and context-pre-only blocks"
    assert all(len(times) == 5 for m in by.values() for times in m["block_s"].values())
    # every ratio is the median of the per-round ratios, recomputed here from the recorded times
    for label, r in data["ratios"]["mm_edit"].items():
        if label == bp.ALL:
            t = [sum(teacher["block_s"][k][i] * n for k, n in teacher["counts"].items()) for i in range(5)]
            s = [sum(student["block_s"][k][i] * n for k, n in student["counts"].items()) for i in range(5)]
        else:
            t, s = teacher["block_s"][label], student["block_s"][label]
        assert r["median"] == pytest.approx(statistics.median(a / b for a, b in zip(t, s)))
        assert r["q1"] <= r["median"] <= r["q3"]
    # a full-width ConvFusion costs more FLOPs than the default, so its FLOP ratio is lower
    assert data["ratios"]["mm_edit:cf_reduction=1"][bp.ALL]["flop_ratio"] < data["ratios"]["mm_edit"][bp.ALL]["flop_ratio"]
    md = (tmp_path / "paired.md").read_text()
    assert "5 rounds" in md and "mm_edit:cf_reduction=1" in md and bp.ALL in md


def test_rounds_rotate_which_method_goes_first(tiny_presets, monkeypatch):  # noqa: F811
    order = []
    real = bp._once
    monkeypatch.setattr(bp, "_once", lambda fn, device: order.append(fn.__self__) or real(fn, device))
    results = bp.run_rounds(TINY["tiny-pixart"], ["teacher", "edit"], 64, 64, 4, bp.ModelSettings())
    firsts = [order[i * len(order) // 4] for i in range(4)]  # the first block timed in each round
    assert firsts[0] is not firsts[1] and firsts[0] is firsts[2], "round r starts with method r mod 2"
    assert [r.method for r in results] == ["teacher", "edit"]


@pytest.mark.parametrize("argv, words", [
    (["--methods", "edit"], "must include 'teacher'"),
    (["--methods", "teacher", "edit:bogus=2"], r"unknown option\(s\) \['bogus'\]"),
    (["--size", "1000"], "multiples of 16"),
    (["--size", "64xabc"], "PX or HxW"),
])
def test_bad_arguments_fail_before_any_work(tmp_path, tiny_presets, capsys, argv, words):  # noqa: F811
    code = main(["bench", "paired", "--preset", "tiny-pixart", "--device", "cpu", "--out", str(tmp_path / "x"), *argv])
    assert code == 2
    assert re.search(words, capsys.readouterr().err)
    assert not (tmp_path / "x").exists()


def test_paired_dtypes_interleave_and_give_per_round_dtype_ratios(tmp_path, tiny_presets):  # noqa: F811
    code = main(["bench", "paired", "--preset", "tiny-pixart", "--methods", "teacher", "edit", "--size", "64",
                 "--rounds", "3", "--dtype", "fp32", "bf16", "--device", "cpu", "--out", str(tmp_path)])
    assert code == 0
    data = json.loads((tmp_path / "paired.json").read_text())
    assert data["dtypes"] == ["float32", "bfloat16"]
    by = {(m["method"], m["dtype"]): m for m in data["methods"]}
    assert set(by) == {(m, d) for m in ("teacher", "edit") for d in ("float32", "bfloat16")}
    for method in ("teacher", "edit"):
        r = data["dtype_ratios"][method]["bfloat16"][bp.ALL]
        fp32, bf16 = (by[(method, d)]["block_s"]["block0"] for d in ("float32", "bfloat16"))
        assert r["median"] == pytest.approx(statistics.median(a / b for a, b in zip(fp32, bf16)))
    assert set(data["ratios_by_dtype"]) == {"float32", "bfloat16"}
    assert data["ratios"] == data["ratios_by_dtype"]["float32"]  # what bench targets reads: float32
    md = (tmp_path / "paired.md").read_text()
    assert "float32 / bfloat16" in md


def test_stubs_share_equal_large_buffers_only():
    import torch

    def module(value):
        m = torch.nn.Module()
        m.register_buffer("table", torch.full((1 << 16,), value))
        m.register_buffer("small", torch.zeros(4))
        return m

    shared, a, b, c = {}, module(1.0), module(1.0), module(2.0)
    for m in (a, b, c):
        bp.share_buffers(m, shared)
    assert b.table is a.table and c.table is not a.table  # equal values: one tensor; different: kept apart
    assert b.small is not a.small  # small buffers are not worth a comparison
