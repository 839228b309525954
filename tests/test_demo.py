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
    from lindit.cli.demo import settings_from
    from lindit.training.config import RECIPES

    for family, recipe in (("pixart", "edit"), ("sd3", "mm_edit"), ("dit", "lit")):
        method, plan = FAMILIES[family].methods[0], FAMILIES[family]
        default = parse_config(run_config(family, method, DemoSettings(steps=10)))
        paper = parse_config(run_config(family, method, DemoSettings(steps=10, task_weight=1.0, feature_weight=0.0)))
        # the family's own weights over the recipe's, no task term unless the family names one
        assert default.stages[0].loss.task == plan.loss.get("task", 0.0)
        assert default.stages[0].loss.feature == plan.loss.get("feature", RECIPES[recipe].feature)
        first = paper.stages[0].loss
        assert (first.task, first.kd, first.feature, first.variance) == (1.0, RECIPES[recipe].kd, 0.0,
                                                                         RECIPES[recipe].variance)
        assert default.stages[0].loss.kd == RECIPES[recipe].kd
    assert FAMILIES["dit"].loss == {"task": 1.0, "feature": 0.5}  # LiT's L_simple, EDiT's feature term
    mm = parse_config(run_config("sd3", "mm_edit", DemoSettings(steps=10, task_weight=1.0)))
    assert (mm.stages[1].loss.task, mm.stages[1].loss.kd) == (0.0, 1.0)  # MM-EDiT stage 2: KD only, as before
    args = build_parser(only="demo").parse_args(["demo", "--task-weight", "-1"])
    with pytest.raises(ValueError, match="--task-weight must be >= 0, got -1.0"):
        settings_from(args)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_feature_inputs_teacher_makes_the_first_half_a_layerwise_attention_transfer(family):
    from lindit.cli import build_parser
    from lindit.cli.demo import settings_from

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
    from lindit.cli.demo import settings_from

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
    from lindit.cli.demo import settings_from
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
    assert set(report["families"]) == {"pixart", "sd3", "dit"}
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
@pytest.mark.parametrize("family", ["pixart", "sd3", "dit"])
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
    assert FAMILIES["pixart"].steps != FAMILIES["sd3"].steps  # the words below cover the mixed case
    words = _steps_words({"steps_by_family": {"pixart": 720, "sd3": 240, "dit": 240}})
    assert words == "720 steps (pixart), 240 steps (sd3, dit)"
    assert _steps_words({"steps_by_family": {"pixart": 120, "dit": 120}}) == "120 steps"


def test_students_read_the_familys_encoded_world_when_given_a_cache():
    cfg = run_config("pixart", "edit", DemoSettings(steps=10), cache="out/cache/pixart")
    assert cfg["data"]["source"] == {"cache": "out/cache/pixart"}
    assert parse_config(cfg).data.source.cache == "out/cache/pixart"
    assert "world" in run_config("pixart", "edit", DemoSettings(steps=10))["data"]["source"]


def test_seeds_combine_rows_into_means_with_their_sample_standard_deviation():
    from lindit.demo.seeds import combine

    runs = [{"fid": 500.0, "adherence": 0.90, "mse_to_teacher": 0.01, "psnr_to_teacher": 20.0, "train_seconds": 10.0,
             "latency_s": 0.003, "train_steps": 240},
            {"fid": 520.0, "adherence": 0.96, "mse_to_teacher": 0.03, "psnr_to_teacher": 16.0, "train_seconds": 12.0,
             "latency_s": None, "train_steps": 240}]
    row = combine(runs, [4, 5])
    assert row["fid"] == 510.0 and row["adherence"] == pytest.approx(0.93) and row["train_seconds"] == 11.0
    assert row["sd"]["fid"] == pytest.approx(14.142136) and row["sd"]["adherence"] == pytest.approx(0.042426)
    assert row["latency_s"] == 0.003 and row["seeds"] == [4, 5] and row["per_seed"][1]["fid"] == 520.0
    assert "sd" not in combine(runs[:1], [4]) and combine(runs[:1], [4])["fid"] == 500.0


def test_claims_get_reproduced_not_reproduced_or_within_noise_by_the_stated_rule():
    from lindit.demo.report import checks

    def row(fid, adherence, fid_sd, adherence_sd):
        return {"fid": fid, "adherence": adherence, "sd": {"fid": fid_sd, "adherence": adherence_sd}}

    rows = {"teacher": row(500.0, 0.95, 10.0, 0.01),
            "edit": row(540.0, 0.93, 20.0, 0.01),  # bar 550: margin 10 < noise sqrt(20^2 + 11^2): within noise
            "sana": row(600.0, 0.80, 5.0, 0.02),  # 60 FID worse than edit, noise 20.6: reproduced
            "linfusion": row(545.0, 0.95, 5.0, 0.01)}  # 5 FID worse than edit: within noise; adherence 2 pts better
    found = {c["claim"]: c for c in checks({"pixart": rows})}
    verdicts = {claim: c["verdict"] for claim, c in found.items()}
    assert verdicts["edit classifier-FID within 10% of the teacher's"] == "within noise"
    assert found["edit classifier-FID within 10% of the teacher's"]["noise"] == pytest.approx((20**2 + 11**2) ** 0.5)
    assert verdicts["edit adherence within 3 points of the teacher's"] == "within noise"  # margin 0.01, noise 0.014
    assert verdicts["edit better than sana (FID)"] == "reproduced"
    assert verdicts["edit better than sana (adherence)"] == "reproduced"  # 13 points against a 2.2-point noise
    assert verdicts["edit better than linfusion (FID)"] == "within noise"
    assert verdicts["edit better than linfusion (adherence)"] == "not reproduced"  # -2 points, noise 1.4
    assert verdicts["pixart teacher adherence >= 80%"] == "reproduced"
    assert all(c["reproduced"] == (c["verdict"] == "reproduced") for c in found.values())


def test_seeds_option_reaches_the_settings_and_must_be_positive():
    from lindit.cli import build_parser
    from lindit.cli.demo import settings_from

    parser = build_parser(only="demo")
    settings = settings_from(parser.parse_args(["demo", "--seeds", "3", "--seed", "4"]))
    assert settings.seed_list() == [4, 5, 6] and DemoSettings().seeds == 1
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "--seeds", "0"])


@pytest.mark.slow
def test_two_seed_demo_reports_means_spreads_and_per_seed_students(tmp_path):
    from lindit.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--families", "dit", "--seeds", "2", "--steps", "4", "--n-eval", "16",
                 "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    lit = report["families"]["dit"]["lit"]
    assert lit["seeds"] == [0, 1] and len(lit["per_seed"]) == 2 and lit["sd"]["fid"] > 0
    assert lit["fid"] == pytest.approx(sum(r["fid"] for r in lit["per_seed"]) / 2, abs=1e-3)
    assert (out / "seed-0" / "students" / "dit" / "lit").is_dir() and (out / "seed-1" / "students" / "dit" / "lit").is_dir()
    assert not (out / "cache").exists() and (out / "dit_samples.png").is_file()
    text = (out / "report.md").read_text()
    assert "2 seeds (0-1)" in text and "sample standard deviation" in text and "| seed 0 | seed 1 |" in text
    assert all(c["verdict"] in ("reproduced", "not reproduced", "within noise") for c in report["checks"])


def test_sd3_students_keep_the_last_block_in_softmax_and_mm_edit_uses_the_moment_eta():
    for method in FAMILIES["sd3"].methods:
        convert = run_config("sd3", method, DemoSettings(steps=10))["model"]["convert"]
        assert convert["keep_softmax"] == [-1] and convert["inherit"] == "qkvo"
    assert run_config("sd3", "mm_edit", DemoSettings(steps=10))["model"]["convert"] == {
        "inherit": "qkvo", "keep_softmax": [-1], "eta": "moments", "softmax_qk": "raw"}
    paper = run_config("sd3", "mm_edit:eta=approx,softmax_qk=phi,keep_softmax=[]", DemoSettings(steps=10))
    assert paper["model"]["convert"] == {"inherit": "qkvo", "keep_softmax": [], "eta": "approx", "softmax_qk": "phi"}
    assert parse_config(paper).model.convert["keep_softmax"] == []


def test_feature_and_guidance_weights_reach_every_stage_of_the_recipe():
    from lindit.cli import build_parser
    from lindit.cli.demo import settings_from

    parser = build_parser(only="demo")
    settings = settings_from(parser.parse_args(["demo", "--steps", "10", "--feature-weight", "0.5", "--guidance-kd", "2"]))
    lit = parse_config(run_config("dit", "lit", settings))
    assert [(s.loss.feature, s.loss.guidance) for s in lit.stages] == [(0.5, 2.0)]
    mm = parse_config(run_config("sd3", "mm_edit", settings))
    assert [(s.loss.feature, s.loss.guidance) for s in mm.stages] == [(0.5, 2.0), (0.0, 2.0)]  # stage 2: KD only
    assert parse_config(run_config("sd3", "mm_edit", DemoSettings(steps=10))).stages[0].loss.feature == 0.5
    with pytest.raises(ValueError, match="--feature-weight must be >= 0, got -1.0"):
        settings_from(parser.parse_args(["demo", "--feature-weight", "-1"]))


def test_a_paper_row_follows_its_papers_recipe_and_the_rest_the_demos():
    """NAME@paper: the recipe's full loss (task term on), the teacher's caption dropout, the paper's convert
    options (LiT Guideline 4: no projection inherited; MM-EDiT: eta by token counts, no softmax block kept)."""
    from lindit.training.config import RECIPES

    settings = DemoSettings(steps=10)
    for family, student in (("dit", "lit"), ("sd3", "mm_edit"), ("pixart", "edit")):
        ours = parse_config(run_config(family, student, settings))
        paper = parse_config(run_config(family, f"{student}@paper", settings))
        recipe = RECIPES[FAMILIES[family].recipe]
        assert paper.stages[0].loss.task == recipe.task == 1.0 and paper.stages[0].loss.kd == recipe.kd
        assert ours.data.caption_dropout == 0.3 and paper.data.caption_dropout == settings_of(FAMILIES[family].teacher).caption_dropout
        assert [s.steps for s in paper.stages] == [s.steps for s in ours.stages]
    lit = run_config("dit", "lit@paper", settings)["model"]["convert"]
    assert lit == {"heads": 2}, "Guideline 4: the attention projections start fresh"
    assert run_config("sd3", "mm_edit@paper", settings)["model"]["convert"] == {"inherit": "qkvo"}
    assert run_config("dit", "lit:heads=4@paper", settings)["model"]["convert"] == {"heads": 4}


def test_paper_recipes_adds_each_familys_paper_row_once():
    """--paper-recipes: every family's list plus its paper student distilled with the paper's recipe."""
    from lindit.cli import build_parser
    from lindit.cli.demo import settings_from

    parser = build_parser(only="demo")
    settings = settings_from(parser.parse_args(["demo", "--paper-recipes"]))
    assert settings.methods("pixart") == FAMILIES["pixart"].methods + ("edit@paper",)
    assert settings.methods("sd3")[-1] == "mm_edit@paper" and settings.methods("dit") == ("lit", "lit@paper")
    chosen = settings_from(parser.parse_args(["demo", "--paper-recipes", "--methods", "lit", "lit@paper"]))
    assert chosen.methods("dit") == ("lit", "lit@paper"), "a row already asked for is not distilled twice"
    assert settings_from(parser.parse_args(["demo"])).methods("dit") == ("lit",)
    assert settings_from(parser.parse_args(["demo", "--task-weight", "0"])).task_weight == 0.0


def test_the_report_says_what_the_demos_departures_from_the_paper_buy():
    from lindit.demo.report import checks

    def row(fid, adherence):
        return {"fid": fid, "adherence": adherence, "sd": {"fid": 5.0, "adherence": 0.01}}

    rows = {"teacher": row(500.0, 0.90), "lit": row(520.0, 0.88), "lit@paper": row(600.0, 0.875)}
    verdicts = {c["claim"]: c["verdict"] for c in checks({"dit": rows})}
    assert verdicts["lit: the demo's recipe better than the paper's (FID)"] == "reproduced"
    assert verdicts["lit: the demo's recipe better than the paper's (adherence)"] == "within noise"
    assert not any(claim.startswith("lit@paper") for claim in verdicts)


def test_worker_split_takes_one_process_per_thread_and_never_more_than_the_students():
    from lindit.demo.runner import worker_split

    assert worker_split(None, 5, 2) == (2, 1)  # make demo on 2 cores: two models at a time, one thread each
    assert worker_split(None, 1, 2) == (1, 2)  # one model keeps every thread
    assert worker_split(None, 5, 16) == (5, 3)
    assert worker_split(1, 5, 2) == (1, 2) and worker_split(4, 2, 8) == (2, 4) and worker_split(3, 5, 2) == (3, 1)


def test_the_pool_takes_every_familys_longest_distillations_first_and_the_teachers_last():
    from types import SimpleNamespace

    from lindit.demo.runner import _Job, queue

    settings = DemoSettings()
    jobs = [_Job(SimpleNamespace(family=f), m, settings.steps_for(f) if m else 0)
            for f in settings.families for m in (None, *settings.methods(f))]
    order = [(j.world.family, j.method) for j in queue(jobs)]
    assert order == ([("pixart", m) for m in FAMILIES["pixart"].methods] + [("dit", "lit")]
                     + [("sd3", m) for m in FAMILIES["sd3"].methods] + [(f, None) for f in settings.families])


@pytest.mark.slow
def test_students_distilled_side_by_side_equal_those_distilled_one_after_another(tmp_path):
    """--jobs 2 runs the same configs in worker processes: the students' weights and report rows agree with
    --jobs 1 up to float summation order (the workers use one thread each)."""
    from safetensors.torch import load_file

    from lindit.cli import main

    runs = {}
    for jobs in (1, 2):
        out = tmp_path / f"jobs{jobs}"
        assert main(["demo", "--quick", "--families", "pixart", "--methods", "edit", "lit", "--steps", "4",
                     "--n-eval", "8", "--jobs", str(jobs), "--out", str(out)]) == 0
        runs[jobs] = out, json.loads((out / "report.json").read_text())
    for method in ("edit", "lit"):
        weights = [load_file(next((runs[j][0] / "students" / "pixart" / method).glob("*.safetensors"))) for j in (1, 2)]
        assert weights[0].keys() == weights[1].keys()
        for name, tensor in weights[0].items():
            torch.testing.assert_close(weights[1][name], tensor, rtol=1e-4, atol=1e-5, msg=name)
        rows = [runs[j][1]["families"]["pixart"][method] for j in (1, 2)]
        assert rows[1]["mse_to_teacher"] == pytest.approx(rows[0]["mse_to_teacher"], rel=1e-2)
    assert runs[2][1]["settings"]["jobs"] == 2
    assert "2 models distilled and sampled side by side" in (runs[2][0] / "report.md").read_text()


def test_demo_families_are_model_families_and_mmdit_is_a_deprecated_alias_of_sd3(capsys):
    from lindit.demo.plan import check_families
    from lindit.integrations.diffusers.families import FAMILIES as MODEL_FAMILIES

    assert set(FAMILIES) == set(MODEL_FAMILIES) and FAMILIES["sd3"].teacher == "mmdit"
    assert check_families(["mmdit", "dit"]) == ("sd3", "dit")
    assert "'mmdit' is now called 'sd3'" in capsys.readouterr().err
    assert check_families(["sd3", "mmdit"]) == ("sd3",)
    with pytest.raises(ValueError, match="unknown demo family 'sdx'; choose from pixart, sd3, dit"):
        check_families(["sdx"])


def test_latency_inputs_are_the_teachers_own_with_a_real_prompt():
    # Family.example_inputs builds them: the same tensors as the demo's own builder before it (seed 0 latent,
    # timestep 500, the world's text encoder on one prompt, class 0).
    from lindit.demo.evaluate import forward_inputs
    from lindit.world.teachers import settings_of
    from lindit.world.text import TextEncoder

    embeds, mask, pooled = TextEncoder.builtin().encode(["a red circle at the center"])
    want = {"pixart": {"encoder_hidden_states": embeds, "encoder_attention_mask": mask},
            "mmdit": {"encoder_hidden_states": embeds, "pooled_projections": pooled},
            "dit": {"class_labels": torch.tensor([0])}}
    for teacher, conditions in want.items():
        s = settings_of(teacher)
        got = forward_inputs(teacher, None, 64)
        side = 64 * s.latent_size // s.size
        x = torch.randn(1, s.config["in_channels"], side, side, generator=torch.Generator().manual_seed(0))
        assert torch.equal(got.pop("hidden_states"), x) and torch.equal(got.pop("timestep"), torch.tensor([500]))
        assert got.pop("return_dict") is False
        assert got.pop("added_cond_kwargs", None) == ({"resolution": None, "aspect_ratio": None}
                                                      if teacher == "pixart" else None)
        assert got.keys() == conditions.keys() and all(torch.equal(got[k], v) for k, v in conditions.items())
