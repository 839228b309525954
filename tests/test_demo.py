"""``lindit demo``: its plan, metrics and the quick end-to-end run."""

import json

import pytest
import torch

from lindit.demo.evaluate import eval_set
from lindit.eval.quality import class_adherence
from lindit.demo.plan import FAMILIES, DemoSettings, run_config
from lindit.methods import methods
from lindit.training.config import parse_config
from lindit.training.data import make_buckets
from lindit.world.teachers import settings_of
from lindit.world.shapes import ShapesClassDataset


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_demo_run_config_is_a_valid_training_config(family):
    valid = set(methods())
    for method in FAMILIES[family].methods:
        assert method in valid
        cfg = parse_config(run_config(family, method, DemoSettings(steps=10)))
        assert sum(s.steps for s in cfg.stages) == 10 and cfg.model.method == method
        size = settings_of(FAMILIES[family].teacher).size  # students learn at the size their teacher knows
        for stage in cfg.stages:
            assert make_buckets(stage.resolution, cfg.data.aspect_ratios, cfg.data.bucket_multiple) == [(size, size)]


def test_inherit_setting_reaches_convert_options_except_kv_compress():
    inherit = DemoSettings(steps=10, inherit="qk")
    assert run_config("pixart", "edit", inherit)["model"]["convert"] == {"inherit": "qk"}
    assert "inherit" not in run_config("pixart", "kv_compress", inherit)["model"]["convert"]  # keeps its qkvo
    assert "inherit" not in run_config("pixart", "edit", DemoSettings(steps=10, inherit="none"))["model"]["convert"]
    assert run_config("dit", "lit", inherit)["model"]["convert"] == {"inherit": "qk", "heads": 2}


def test_task_weight_sets_the_noise_loss_of_every_stage_and_keeps_the_recipes_other_terms():
    from lindit.cli import build_parser
    from lindit.demo.cli import settings_from
    from lindit.training.config import RECIPES

    for family, recipe in (("pixart", "edit"), ("mmdit", "mm_edit"), ("dit", "lit")):
        method = FAMILIES[family].methods[0]
        default = parse_config(run_config(family, method, DemoSettings(steps=10)))
        paper = parse_config(run_config(family, method, DemoSettings(steps=10, task_weight=1.0)))
        assert all(s.loss.task == 0.0 for s in default.stages)
        first = paper.stages[0].loss
        assert (first.task, first.kd, first.feature, first.variance) == (1.0, RECIPES[recipe].kd,
                                                                         RECIPES[recipe].feature, RECIPES[recipe].variance)
        assert default.stages[0].loss.kd == RECIPES[recipe].kd
    mm = parse_config(run_config("mmdit", "mm_edit", DemoSettings(steps=10, task_weight=1.0)))
    assert (mm.stages[1].loss.task, mm.stages[1].loss.kd) == (0.0, 1.0)  # MM-EDiT stage 2: KD only, as before
    args = build_parser(only="demo").parse_args(["demo", "--task-weight", "-1"])
    with pytest.raises(ValueError, match="--task-weight must be >= 0, got -1.0"):
        settings_from(args)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_feature_inputs_teacher_makes_the_first_half_a_layerwise_attention_transfer(family):
    from lindit.cli import build_parser
    from lindit.demo.cli import settings_from

    args = build_parser(only="demo").parse_args(["demo", "--steps", "10", "--feature-inputs", "teacher"])
    cfg = parse_config(run_config(family, FAMILIES[family].methods[0], settings_from(args)))
    first, second = cfg.stages  # LiT's single stage, too, gets the transfer in front
    assert (first.feature_inputs, first.trainable, first.steps, second.steps) == ("teacher", "attention", 5, 5)
    assert (first.loss.task, first.loss.kd, first.loss.feature, first.loss.variance) == (0.0, 0.0, 1.0, 0.0)
    assert second.feature_inputs == "student" and second.trainable == "all" and second.loss.kd > 0
    default = parse_config(run_config(family, FAMILIES[family].methods[0], DemoSettings(steps=10)))
    assert all(s.feature_inputs == "student" for s in default.stages)


def test_schedule_ema_and_caption_dropout_options_reach_the_training_config():
    from lindit.cli import build_parser
    from lindit.demo.cli import settings_from

    parser = build_parser(only="demo")
    args = parser.parse_args(["demo", "--steps", "10", "--lr-schedule", "cosine", "--ema", "warmup",
                              "--caption-dropout", "0.3"])
    cfg = parse_config(run_config("pixart", "edit", settings_from(args)))
    assert cfg.optimizer.schedule == "cosine" and cfg.ema.use_warmup and cfg.data.caption_dropout == 0.3
    assert parse_config(run_config("pixart", "edit", DemoSettings(caption_dropout=None))).data.caption_dropout == 0.1
    cfg = parse_config(run_config("pixart", "edit", settings_from(parser.parse_args(["demo", "--lr", "0.002",
                                                                                       "--batch-size", "32"]))))
    assert [s.lr for s in cfg.stages] == [0.002, 0.002 / 5] and cfg.data.batch_size == 32
    with pytest.raises(SystemExit):  # refused while parsing: --lr: must be a positive number
        parser.parse_args(["demo", "--lr", "0"])
    with pytest.raises(ValueError, match=r"--caption-dropout must be in \[0, 1\), got 1.0"):
        settings_from(parser.parse_args(["demo", "--caption-dropout", "1"]))
    cfg = parse_config(run_config("pixart", "edit", settings_from(parser.parse_args(["demo", "--ema", "0.99"]))))
    assert cfg.ema.decay == 0.99 and not cfg.ema.use_warmup
    assert parse_config(run_config("dit", "lit", DemoSettings(steps=10))).ema is None
    for bad in ("1.5", "often"):
        with pytest.raises(SystemExit):
            parser.parse_args(["demo", "--ema", bad])


def test_methods_option_picks_the_students_and_passes_variant_options_to_convert(tmp_path):
    from lindit.cli import build_parser
    from lindit.demo.cli import settings_from
    from lindit.demo.runner import run_demo

    args = build_parser(only="demo").parse_args(["demo", "--families", "pixart",
                                                 "--methods", "edit_cf_q", "edit:cf_reduction=8"])
    settings = settings_from(args)
    assert settings.methods("pixart") == ("edit_cf_q", "edit:cf_reduction=8")
    cfg = parse_config(run_config("pixart", "edit:cf_reduction=8", settings))
    assert cfg.model.method == "edit" and cfg.model.convert == {"inherit": "qkvo", "cf_reduction": 8}
    assert DemoSettings().methods("pixart") == FAMILIES["pixart"].methods
    # A student that does not fit a family fails before any work and writes nothing.
    for bad, words in (("mm_edit", "does not fit the pixart family"), ("edit:bogus=1", r"unknown option\(s\) \['bogus'\]")):
        with pytest.raises(ValueError, match=words):
            run_demo(DemoSettings(families=("pixart",), students=(bad,)), tmp_path / "out")
        assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="unknown learning-rate schedule 'cosin'"):
        run_demo(DemoSettings(families=("pixart",), schedule="cosin"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_report_checks_the_teacher_bar_and_the_ablation_claims_only_for_students_that_ran():
    from lindit.demo.report import checks

    row = lambda fid, adherence: {"fid": fid, "adherence": adherence}  # noqa: E731
    rows = {"teacher": row(100.0, 0.95), "edit": row(109.0, 0.93), "edit_cf_q": row(98.0, 0.97),
            "edit_sc_only": row(120.0, 0.93)}
    found = {c["claim"]: c["reproduced"] for c in checks({"pixart": rows})}
    assert found["edit classifier-FID within 10% of the teacher's"]  # 109 <= 110
    assert found["edit adherence within 3 points of the teacher's"]  # 93 >= 92
    assert not found["edit classifier-FID within 10% of edit_cf_q's"]  # 109 > 1.1 * 98
    assert not found["edit adherence within 3 points of edit_cf_q's"]  # 93 < 94
    assert found["edit better than edit_sc_only (FID)"]
    assert not found["edit better than edit_sc_only (adherence)"]  # equal is not better
    assert not any("sana" in c or "linfusion" in c for c in found), "pairs whose students did not run are left out"


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


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    from lindit.cli import main

    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    return out, json.loads((out / "report.json").read_text())


@pytest.mark.slow
def test_quick_demo_writes_the_report_schema_grids_and_plot(quick_demo):
    out, report = quick_demo
    assert set(report["families"]) == {"pixart", "mmdit", "dit"}
    for family, rows in report["families"].items():
        assert list(rows) == ["teacher", *FAMILIES[family].quick_methods]
        for row in rows.values():
            assert 0.0 <= row["adherence"] <= 1.0 and row["fid"] > 0 and row["latency_s"] > 0
            assert isinstance(row["train_steps"], int) and row["train_seconds"] >= 0
        assert (out / f"{family}_samples.png").stat().st_size > 1000
    text = (out / "report.md").read_text()
    assert (out / "latency.png").is_file() and "| edit |" in text
    assert "120 steps (batch 16, lr 0.001, cosine schedule, 30% of prompts dropped)" in text
    assert report["settings"]["quick"] and report["checks"]


@pytest.mark.slow
@pytest.mark.parametrize("family", ["pixart", "mmdit", "dit"])
def test_quick_demo_students_beat_the_mean_image(quick_demo, family):
    # From the same noise and prompt, a distilled student is closer to its teacher's image than the dataset's
    # mean image is: E|a - mean|^2 is half of E|a - b|^2 for independent a, b, i.e. half the teacher's
    # unpaired MSE (its images of other prompts and noise).
    rows = quick_demo[1]["families"][family]
    for name, row in rows.items():
        if name != "teacher":
            assert row["mse_to_teacher"] < 0.5 * rows["teacher"]["mse_unpaired"], name


def test_default_steps_are_each_familys_and_steps_overrides_them_all():
    from lindit.demo.report import _steps_words

    for family, plan in FAMILIES.items():
        default = parse_config(run_config(family, plan.methods[0], DemoSettings()))
        assert sum(s.steps for s in default.stages) == plan.steps
        assert sum(s.steps for s in parse_config(run_config(family, plan.methods[0], DemoSettings(steps=30))).stages) == 30
        assert DemoSettings.quick_settings().steps_for(family) == 120
    assert FAMILIES["pixart"].steps != FAMILIES["mmdit"].steps  # the words below cover the mixed case
    words = _steps_words({"steps_by_family": {"pixart": 720, "mmdit": 240, "dit": 240}})
    assert words == "720 steps (pixart), 240 steps (mmdit, dit)"
    assert _steps_words({"steps_by_family": {"pixart": 120, "dit": 120}}) == "120 steps"


def test_students_read_the_familys_encoded_world_when_given_a_cache():
    cfg = run_config("pixart", "edit", DemoSettings(steps=10), cache="out/cache/pixart")
    assert cfg["data"]["source"] == {"cache": "out/cache/pixart"}
    assert parse_config(cfg).data.source.cache == "out/cache/pixart"
    assert "world" in run_config("pixart", "edit", DemoSettings(steps=10))["data"]["source"]
