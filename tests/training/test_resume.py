"""Interrupt and resume: the resumed run ends in exactly the weights of the uninterrupted one."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from training_helpers import assert_same_weights, teacher_spec, tiny_config, tiny_dict

import lindit
from lindit.training import distill, parse_config
from lindit.training.checkpoint import list_checkpoints

def _cfg():
    """Two stages (the second with its own teacher config, as EDiT's 1024 px stage), gradient accumulation,
    caption dropout, two aspect buckets, warm-up and EMA: everything that carries state across a restart."""
    data = tiny_dict("pixart", "edit", n=12, batch=2)
    data["stages"] = [
        {"steps": 5, "lr": 0.003, "resolution": 16, "trainable": "attention"},
        {"steps": 4, "lr": 0.002, "resolution": 24, "teacher": teacher_spec("pixart", sample_size=12)},
    ]
    data["data"]["aspect_ratios"] = [0.75, 1.333]
    data["training"] = {"gradient_accumulation_steps": 2}
    data["ema"] = {"decay": 0.9, "update_after_step": 1}
    data["optimizer"] = {"warmup_steps": 3}
    data["checkpointing"] = {"every": 3, "keep": 10}
    return parse_config(data)


def test_stopped_and_resumed_run_matches_the_uninterrupted_run(tmp_path, read_metrics):
    full = distill(_cfg(), tmp_path / "full")
    part = tmp_path / "part"
    distill(_cfg(), part, max_steps=4)  # stops in stage 1, after a checkpoint at step 3 and one at 4
    assert [p.name for p in list_checkpoints(part / "checkpoints")] == ["checkpoint-3", "checkpoint-4"]
    distill(_cfg(), part, resume=part / "checkpoints" / "checkpoint-3", max_steps=7)  # lose a step; stop in stage 2
    assert json.loads((part / "checkpoints" / "checkpoint-7" / "trainer_state.json").read_text())["stage"] == 1
    distill(_cfg(), part, resume="latest")
    assert_same_weights(lindit.load(full), lindit.load(part))
    assert_same_weights(lindit.load(full / "ema"), lindit.load(part / "ema"))
    assert lindit.load(part).config.sample_size == 12  # the second stage's teacher config
    losses = lambda out: [(r["step"], r["loss"], r["kd"]) for r in read_metrics(out)]  # noqa: E731
    assert losses(part) == losses(full)  # rows of the lost step were replaced, not duplicated


def test_checkpoints_keep_the_last_k(tmp_path):
    out = distill(tiny_config("pixart", "edit", steps=7, overrides=["checkpointing={every: 2, keep: 2}"]), tmp_path / "run")
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["checkpoint-6", "checkpoint-7"]
    assert not list((out / "checkpoints").glob(".*"))  # no partial folders left behind


def test_resume_latest_without_checkpoints_starts_fresh(tmp_path):
    out = distill(tiny_config("pixart", "edit", steps=2), tmp_path / "run", resume="latest")
    assert lindit.load(out) is not None


@pytest.mark.slow
def test_a_run_killed_with_sigkill_resumes_cleanly(tmp_path):
    """SIGKILL right after a checkpoint appears; ``--resume latest`` then reaches the uninterrupted weights."""
    data = tiny_dict("pixart", "edit", steps=60)
    data["checkpointing"] = {"every": 5, "keep": 3}
    config = tmp_path / "recipe.yaml"
    config.write_text(yaml.safe_dump(data))
    full = distill(tiny_config("pixart", "edit", steps=60, overrides=["checkpointing={every: 5, keep: 3}"]),
                   tmp_path / "full")
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "lindit.cli", "distill", "--config", str(config), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list_checkpoints(out / "checkpoints") and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list_checkpoints(out / "checkpoints"), "no checkpoint was written before the kill"
    assert not (out / "config.json").exists()  # killed before the end
    subprocess.run(cmd + ["--resume", "latest"], check=True, capture_output=True)
    assert_same_weights(lindit.load(full), lindit.load(out))
