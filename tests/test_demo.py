"""``lindit demo``: its plan, metrics and the quick end-to-end run."""

import json

import pytest
import torch

from lindit.demo.evaluate import eval_set
from lindit.eval.quality import class_adherence
from lindit.demo.plan import FAMILIES, DemoSettings, run_config
from lindit.methods import methods
from lindit.training.config import parse_config
from lindit.world.shapes import ShapesClassDataset


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_demo_run_config_is_a_valid_training_config(family):
    valid = set(methods())
    for method in FAMILIES[family].methods:
        assert method in valid
        cfg = parse_config(run_config(family, method, DemoSettings(steps=10)))
        assert sum(s.steps for s in cfg.stages) == 10 and cfg.model.method == method


def test_inherit_setting_reaches_convert_options_except_kv_compress():
    inherit = DemoSettings(steps=10, inherit="qk")
    assert run_config("pixart", "edit", inherit)["model"]["convert"] == {"inherit": "qk"}
    assert "inherit" not in run_config("pixart", "kv_compress", inherit)["model"]["convert"]  # keeps its qkvo
    assert "inherit" not in run_config("pixart", "edit", DemoSettings(steps=10))["model"]["convert"]
    assert run_config("dit", "lit", inherit)["model"]["convert"] == {"inherit": "qk", "heads": 2}


def test_class_adherence_scores_real_images_high_and_wrong_classes_low():
    data = ShapesClassDataset(60, seed=3)
    images = torch.stack([data[i][0] for i in range(60)])
    classes = [data[i][1] for i in range(60)]
    assert class_adherence(images, classes) > 0.95
    assert class_adherence(images, [(c + 1) % 18 for c in classes]) < 0.1


def test_eval_set_prompts_and_reference_come_from_different_streams():
    evals = eval_set("pixart", 20, 1001, 1002)
    assert len(evals.conditions) == 20 and evals.reference.shape == (20, 3, 32, 32)
    again = eval_set("pixart", 20, 1001, 1003)
    assert evals.conditions == again.conditions and not torch.equal(evals.reference, again.reference)


@pytest.mark.slow
def test_quick_demo_writes_the_report_schema_grids_and_plot(tmp_path):
    from lindit.cli import main

    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report["families"]) == {"pixart", "mmdit", "dit"}
    for family, rows in report["families"].items():
        assert list(rows) == ["teacher", *FAMILIES[family].quick_methods]
        for name, row in rows.items():
            assert 0.0 <= row["adherence"] <= 1.0 and row["fid"] > 0 and row["latency_s"] > 0
            assert isinstance(row["train_steps"], int) and row["train_seconds"] >= 0
            if name != "teacher":
                # distilled from the teacher and sampled from the same noise and prompt: closer to the
                # teacher's image than the teacher's images of other prompts and noise are to each other
                assert row["mse_to_teacher"] < 0.5 * rows["teacher"]["mse_unpaired"]
        assert (tmp_path / f"{family}_samples.png").stat().st_size > 1000
    assert (tmp_path / "latency.png").is_file() and "| edit |" in (tmp_path / "report.md").read_text()
    assert report["settings"]["quick"] and report["checks"]
