"""Each recipe trains: the total loss falls on a small fixed batch, and every weighted term is live."""

import math

import pytest
from training_helpers import tiny_config

import lindit
from lindit.training import distill
from lindit.training.losses import TERMS

CASES = {  # recipe -> (family, the terms whose weight is non-zero by default)
    "edit": ("pixart", {"task", "kd", "feature"}),
    "mm_edit": ("sd3", {"task", "kd", "feature"}),
    "lit": ("dit", {"task", "kd", "variance"}),
    "finetune": ("pixart", {"task"}),
}


@pytest.mark.parametrize("recipe", list(CASES))
def test_recipe_loss_falls_and_every_weighted_term_is_live(recipe, tmp_path, read_metrics):
    family, live = CASES[recipe]
    cfg = tiny_config(family, recipe, steps=40)
    out = distill(cfg, tmp_path / "run")
    rows = read_metrics(out)
    assert [int(r["step"]) for r in rows] == list(range(1, 41))
    for term in TERMS:
        values = [r[term] for r in rows]
        if term in live:
            assert all(math.isfinite(float(v)) and float(v) > 0 for v in values), f"{term}: {values[:5]}"
        else:
            assert all(v == "" for v in values), f"{term} was computed with weight 0"
    loss = [float(r["loss"]) for r in rows]
    first, last = sum(loss[:8]) / 8, sum(loss[-8:]) / 8
    assert last < 0.9 * first, f"{recipe}: loss {first:.4f} -> {last:.4f}"
    assert lindit.load(out).lindit_config["method"] == cfg.model.method or cfg.model.method is None


def test_total_loss_is_the_weighted_sum_of_the_terms(tmp_path, read_metrics):
    cfg = tiny_config("pixart", "edit", steps=3, overrides=["stages[0].loss={task: 1.0, kd: 2.0, feature: 3.0}"])
    rows = read_metrics(distill(cfg, tmp_path / "run"))
    for r in rows:
        expected = float(r["task"]) + 2 * float(r["kd"]) + 3 * float(r["feature"])
        assert float(r["loss"]) == pytest.approx(expected, rel=1e-4)
