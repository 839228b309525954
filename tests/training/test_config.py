"""Recipes as YAML: typed, checked, and every error names its key."""

from pathlib import Path

import pytest
import yaml
from training_helpers import tiny_dict

from lindit.training import RECIPES, LossWeights, dump_config, load_config, parse_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def _error(data, overrides=()):
    with pytest.raises(ValueError) as err:
        parse_config(data, list(overrides))
    return str(err.value)


def test_a_wrong_type_names_the_key_path():
    data = tiny_dict()
    data["stages"].append({"steps": 5, "lr": "fast", "resolution": 16})
    assert _error(data) == "stages[1].lr: expected float, got 'fast'"


@pytest.mark.parametrize("key, value, message", [
    ("training.gradient_accumulation_steps", 1.5, "training.gradient_accumulation_steps: expected int, got float 1.5"),
    ("training.mixed_precision", "fp8", "training.mixed_precision: expected one of 'no', 'fp16', 'bf16', got 'fp8'"),
    ("data.source.world.kind", "video", "data.source.world.kind: expected one of"),
    ("logging.progress_bar", "yes", "logging.progress_bar: expected bool, got 'yes'"),
    ("stages[0].trainable", "mlp", "stages[0].trainable: expected one of 'attention', 'lora', 'all'"),
    ("data.aspect_ratios", 1.0, "data.aspect_ratios: expected a list, got float 1.0"),
])  # fmt: skip
def test_wrong_values_name_their_key(key, value, message):
    assert _error(tiny_dict(), [f"{key}={yaml.safe_dump(value).strip().removesuffix('...').strip()}"]).startswith(message)


def test_unknown_keys_are_rejected_with_the_valid_ones():
    data = tiny_dict()
    data["optimizer"]["lr_warmup"] = 10
    assert _error(data).startswith("optimizer.lr_warmup: unknown key; valid keys: betas, weight_decay")
    data = tiny_dict()
    data["stages"][0]["loss"] = {"task": 1.0, "distill": 0.5}
    assert _error(data).startswith("stages[0].loss.distill: unknown key")
    assert _error({**tiny_dict(), "seeed": 1}).startswith("seeed: unknown key")


def test_missing_required_keys_are_named():
    data = tiny_dict()
    del data["stages"][0]["lr"]
    assert _error(data) == "stages[0].lr: missing required key"
    assert _error({k: v for k, v in tiny_dict().items() if k != "data"}) == "data: missing required key"


def test_cross_field_rules():
    data = tiny_dict()
    data["data"]["source"]["folder"] = "/x"
    assert "exactly one of folder, hf, cache, world" in _error(data)
    data = tiny_dict()
    data["stages"][0]["loss"] = {"task": 0.0, "kd": 0.0, "feature": 0.0}
    assert "stages[0].loss: every weight is zero" in _error(data)
    data = tiny_dict()
    del data["model"]["teacher"]
    assert "needs a teacher" in _error(data)
    assert "caption_dropout" in _error(tiny_dict(), ["data.caption_dropout=1.5"])
    # A resolution that is no multiple of the bucket multiple would silently train at another size.
    assert "stages[0].resolution: 32 is not a multiple of data.bucket_multiple (64), so its square bucket would " \
        "be 64 px" in _error(tiny_dict(resolution=32), ["data.bucket_multiple=64"])
    data = tiny_dict()  # layer-wise attention transfer: the feature term alone, on the replaced layers
    data["stages"][0].update(feature_inputs="teacher", trainable="attention")
    assert "other loss terms: {'task': 1.0, 'kd': 0.5}" in _error(data)
    data["stages"][0]["loss"] = {"task": 0.0, "kd": 0.0}
    parse_config(data)
    data["stages"][0]["trainable"] = "all"
    assert "stages[0].feature_inputs: teacher fits each replaced layer" in _error(data)
    # The schedule and EMA decay are checked before any model is built.
    assert _error(tiny_dict(), ["optimizer.schedule=cosin"]).startswith(
        "optimizer.schedule: unknown learning-rate schedule 'cosin'; choose from linear, cosine")
    assert parse_config(tiny_dict(), ["optimizer.schedule=cosine"]).optimizer.schedule == "cosine"
    assert _error(tiny_dict(), ["ema={decay: 1.0}"]) == "ema.decay: must be in (0, 1), got 1.0"


def test_the_recipe_fills_the_weights_a_stage_leaves_out():
    cfg = parse_config(tiny_dict(recipe="lit"), ["stages[0].loss={kd: 1.0}"])
    assert cfg.stages[0].loss == LossWeights(task=1.0, kd=1.0, feature=0.0, variance=0.05, guidance=0.0)
    assert RECIPES["lit"] == LossWeights(task=1.0, kd=0.5, feature=0.0, variance=0.05, guidance=0.0)  # LiT Eq. 7


def test_overrides_and_shorthands():
    cfg = parse_config(tiny_dict(), ["stages[0].steps=7", "optimizer.warmup_steps=2", "stages[0].lr=1e-4"])
    assert cfg.stages[0].steps == 7 and cfg.optimizer.warmup_steps == 2 and cfg.stages[0].lr == 1e-4
    cfg = parse_config(tiny_dict(), ["stages[0].teacher=some/folder"])
    assert cfg.stages[0].teacher.path == "some/folder"
    assert parse_config(tiny_dict()).stages[0].teacher.same
    assert "override 'oops'" in _error(tiny_dict(), ["oops"])
    assert "index 3 out of range" in _error(tiny_dict(), ["stages[3].lr=1.0"])


def test_a_dumped_config_reads_back_identically():
    cfg = parse_config(tiny_dict())
    assert parse_config(yaml.safe_load(dump_config(cfg))) == cfg


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_is_valid(path):
    cfg = load_config(path)
    assert cfg.stages and cfg.total_steps() > 0


def test_the_tiny_miniatures_exist():
    names = {p.name for p in CONFIGS}
    assert {"tiny-edit.yaml", "tiny-mm-edit.yaml", "tiny-lit.yaml", "edit-pixart-sigma.yaml",
            "mm-edit-sd35-medium.yaml", "lit-dit-xl-2-256.yaml", "lit-pixart-sigma.yaml", "finetune-edit.yaml"} <= names
