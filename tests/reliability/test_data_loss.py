"""Nothing lost (docs/RELIABILITY.md): every data-loss path of issue 20, through the real ``lindit`` command.

Each test here failed on the code before the fix (checked against main at bee2d4e).
"""

import csv
import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from reliability_helpers import write_recipe
from safetensors.torch import load_file

import lindit
from lindit.cli import main
from lindit.world.teachers import teacher_dir

LOCK_NAME = ".lindit.lock"


def snapshot(folder):
    """relative path -> bytes of every file under ``folder``."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_error_line(capsys, *fragments, progress=False):
    """The single line on stderr (with ``progress``, tqdm's bars of the work before the error aside)."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not (progress and "it/s]" in line)]
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# ----------------------------------------------------------------- lindit demo --out
@pytest.fixture
def quick_demo(monkeypatch):
    """The demo with its work and reports stubbed out (they are not what is tested here): the stub writes
    report.md into the folder the demo works in."""
    import lindit.demo.runner as runner

    calls = []

    def run(settings, out, command, start):
        calls.append(out)
        (out / "report.md").write_text("new")
        return {"checks": []}

    monkeypatch.setattr(runner, "_run", run)
    return calls


def test_demo_refuses_an_existing_folder_and_deletes_nothing(tmp_path, quick_demo, capsys):
    folder = tmp_path / "saved-model"  # e.g. a lindit model folder, with a cache/ of the user's
    (folder / "cache").mkdir(parents=True)
    (folder / "cache" / "keep.bin").write_bytes(b"user data")
    (folder / "config.json").write_text("{}")
    (folder / "report.md").write_text("old report")
    before = snapshot(folder)
    assert main(["demo", "--quick", "--families", "dit", "--out", str(folder)]) == 2
    one_error_line(capsys, "already exists", "--overwrite")
    assert snapshot(folder) == before and not quick_demo
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved-model"]  # no temporary siblings either


def test_demo_overwrite_replaces_the_old_folder_only_once_the_new_one_is_complete(tmp_path, quick_demo):
    folder = tmp_path / "demo-output"
    (folder / "cache").mkdir(parents=True)
    (folder / "cache" / "old.bin").write_bytes(b"old")
    assert main(["demo", "--quick", "--families", "dit", "--out", str(folder), "--overwrite"]) == 0
    (working,) = quick_demo
    assert working != folder and working.parent == tmp_path  # it worked beside the old folder, not in it
    assert snapshot(folder) == {"report.md": b"new"}  # the old folder is gone only now, replaced whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo-output"]


# ----------------------------------------------------------------- lindit distill: one run per folder
def distill_argv(recipe, out, *extra):
    return ["distill", "--config", str(recipe), "--out", str(out), *extra]


def test_a_fresh_distill_into_an_existing_run_folder_is_refused_and_changes_nothing(tmp_path, recipe, capsys):
    run = tmp_path / "run"
    assert main(distill_argv(recipe, run)) == 0
    capsys.readouterr()
    before = snapshot(run)
    assert main(distill_argv(recipe, run, "stages[0].steps=2")) == 2
    one_error_line(capsys, "already holds a run", "--resume latest")
    assert snapshot(run) == before  # metrics, checkpoints and the final student untouched


def test_resume_with_another_config_says_what_differs_and_continues_only_when_told(tmp_path, recipe, capsys):
    run = tmp_path / "run"
    assert main(distill_argv(recipe, run, "--max-steps", "2")) == 0
    capsys.readouterr()
    before = snapshot(run)
    assert main(distill_argv(recipe, run, "--resume", "latest", "seed=1", "stages[0].lr=0.001")) == 2
    one_error_line(capsys, "seed: 0 -> 1", "stages[0].lr: 0.002 -> 0.001", "--accept-config-changes")
    assert snapshot(run) == before
    assert main(distill_argv(recipe, run, "--resume", "latest", "seed=1", "--accept-config-changes")) == 0
    assert "seed: 0 -> 1" in capsys.readouterr().err
    (kept,) = run.glob("run.replaced-*.yaml")  # the run's old config is kept beside the new one
    assert "seed: 0" in kept.read_text() and "seed: 1" in (run / "run.yaml").read_text()


def test_two_runs_on_one_folder_the_second_is_refused_naming_the_holder(tmp_path, recipe, capsys):
    run = tmp_path / "run"
    run.mkdir()
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": "lindit distill --out run", "started": "t"}
    (run / LOCK_NAME).write_text(json.dumps(holder))  # another lindit run holds it (this pid: alive)
    assert main(distill_argv(recipe, run)) == 2
    one_error_line(capsys, "in use by another lindit run", f"pid {os.getpid()}", socket.gethostname(),
                   "lindit distill --out run", str(run / LOCK_NAME))
    assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME]


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path, recipe):
    run = tmp_path / "run"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run.mkdir()
    (run / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "command": "x"}))
    assert main(distill_argv(recipe, run)) == 0
    assert not (run / LOCK_NAME).exists()  # released at the end


def test_interrupted_final_saves_leave_nothing_behind(tmp_path, recipe, monkeypatch):
    run = tmp_path / "run"
    assert main(distill_argv(recipe, run, "--max-steps", "2")) == 0
    for leftover in ("..student.partial.x1y2", ".student.partial"):  # what a kill during the final save leaves
        (run / leftover).mkdir()
        (run / leftover / "diffusion_pytorch_model.safetensors").write_bytes(b"half")
    import lindit.training.student as models

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(models, "save", full_disk)
        assert main(distill_argv(recipe, run, "--resume", "latest")) == 2
    assert not [p.name for p in run.iterdir() if "partial" in p.name]
    assert main(distill_argv(recipe, run, "--resume", "latest")) == 0
    assert not [p.name for p in run.rglob("*") if "partial" in p.name]
    assert lindit.load(run) is not None


def test_metrics_after_a_resume_read_as_one_run(tmp_path, read_metrics):
    """Rows of the uninterrupted run, value for value (samples_per_s, a wall-clock rate, aside), although the
    interruption falls between two logging steps, inside a gradient-accumulation window."""
    changes = dict(logging={"every": 3, "progress_bar": False, "tensorboard": False},
                   checkpointing={"every": 2, "keep": 2}, training={"gradient_accumulation_steps": 2})
    data = write_recipe(tmp_path / "recipe.yaml", **changes)
    full, part = tmp_path / "full", tmp_path / "part"
    for argv in (distill_argv(data, full, "stages[0].steps=7"), distill_argv(data, part, "stages[0].steps=7",
                 "--max-steps", "4"), distill_argv(data, part, "stages[0].steps=7", "--resume", "latest")):
        assert main(argv) == 0
    rows = lambda out: [{k: v for k, v in r.items() if k != "samples_per_s"} for r in read_metrics(out)]  # noqa: E731
    assert [r["step"] for r in rows(full)] == ["3", "6", "7"]
    assert rows(part) == rows(full)


@pytest.fixture
def read_metrics():
    def read(out):
        with open(out / "metrics.csv", newline="") as f:
            return list(csv.DictReader(f))

    return read


# ----------------------------------------------------------------- divergence
def test_a_diverging_run_stops_keeps_finite_checkpoints_and_shows_the_way_back(tmp_path, capsys, read_metrics):
    stages = [{"steps": 4, "lr": 2e-3, "resolution": 16}, {"steps": 14, "lr": 1e4, "resolution": 16}]  # 2nd: far too high
    data = write_recipe(tmp_path / "recipe.yaml", stages=stages, checkpointing={"every": 2, "keep": 1})
    run = tmp_path / "run"
    assert main(distill_argv(data, run)) == 2  # training.max_nonfinite_steps: 10 by default
    one_error_line(capsys, "diverged in stage 1", "steps 6-16", "stages[1].lr (now 10000)", "checkpoint-4")
    assert not (run / "config.json").exists()  # no final student of NaN weights
    (last,) = (run / "checkpoints").iterdir()  # keep: 1, and the one kept is the last good one
    assert last.name == "checkpoint-4"
    assert all(torch.isfinite(t).all() for t in load_file(last / "model.safetensors").values())
    # the way back the message names: a lower lr from that checkpoint
    assert main(distill_argv(data, run, "stages[1].lr=1e-3", "--resume", str(last), "--accept-config-changes")) == 0
    assert all(torch.isfinite(p).all() for p in lindit.load(run).parameters())
    assert {r["lr"] for r in read_metrics(run) if int(r["step"]) > 4} == {"0.001"}


def test_generate_refuses_the_output_of_a_broken_model(tmp_path, student, capsys):
    model = lindit.load(student)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    lindit.save(model, tmp_path / "nan-student")
    out = tmp_path / "x.png"
    argv = ["generate", "--model", str(tmp_path / "nan-student"), "--base", "builtin:pixart", "--prompt", "a red circle",
            "--steps", "2", "--out", str(out)]
    assert main(argv) == 2
    one_error_line(capsys, "NaN or infinite", "nothing was written", progress=True)  # known once generated
    assert not out.exists() and not list(tmp_path.glob(".x.png*"))


# ----------------------------------------------------------------- permissions, full disks
def test_saved_weights_and_checkpoints_keep_the_umask(tmp_path, recipe):
    old = os.umask(0o022)
    try:
        assert main(["convert", "--teacher", str(teacher_dir("pixart")), "--out", str(tmp_path / "student")]) == 0
        assert main(distill_argv(recipe, tmp_path / "run", "checkpointing.every=2")) == 0
    finally:
        os.umask(old)
    written = [tmp_path / "student" / "diffusion_pytorch_model.safetensors",
               tmp_path / "run" / "diffusion_pytorch_model.safetensors",
               *(tmp_path / "run" / "checkpoints").glob("checkpoint-*/model.safetensors")]
    assert len(written) == 4
    assert {oct(p.stat().st_mode & 0o777) for p in written} == {oct(0o644)}


def test_a_full_disk_is_one_line_and_leaves_nothing_half_written(tmp_path, capsys):
    import resource
    import signal

    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, limit[1]))  # 1 MiB: the weights need ~4.6 MB
    try:
        code = main(["convert", "--teacher", str(teacher_dir("pixart")), "--out", str(tmp_path / "student")])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        signal.signal(signal.SIGXFSZ, previous)
    assert code == 2
    one_error_line(capsys, "file too large")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------- lindit cache --out
def test_a_cache_rerun_with_other_data_is_refused_instead_of_mixing_shards(tmp_path, recipe, capsys):
    cache = tmp_path / "cache"
    assert main(["cache", "--config", str(recipe), "--out", str(cache)]) == 0
    capsys.readouterr()
    before = snapshot(cache)
    assert main(["cache", "--config", str(recipe), "--out", str(cache), "data.source.world.seed=1"]) == 2
    one_error_line(capsys, "holds a cache of other data or settings", "seed: 0 -> 1")
    assert snapshot(cache) == before  # the old shards were neither reused for the new data nor replaced
    assert main(["cache", "--config", str(recipe), "--out", str(cache)]) == 0  # the same one resumes


def test_a_run_resumed_from_an_older_checkpoint_keeps_its_own_new_checkpoints(tmp_path, recipe):
    run = tmp_path / "run"
    assert main(distill_argv(recipe, run, "checkpointing={every: 1, keep: 3}")) == 0  # checkpoints 2, 3, 4
    older = run / "checkpoints" / "checkpoint-2"
    assert main(distill_argv(recipe, run, "checkpointing={every: 1, keep: 1}", "--resume", str(older),
                             "--max-steps", "3")) == 0
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint-3", "checkpoint-4"]
    state = json.loads((run / "checkpoints" / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3 and "log_window" in state  # written by the resumed run, not the old one
