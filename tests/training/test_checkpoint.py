"""Checkpoints are complete or absent; a damaged one is a clear error and the older ones stay usable."""

import shutil

import pytest
from training_helpers import assert_same_weights, tiny_config

import lindit
from lindit.training import distill
from lindit.training.checkpoint import CheckpointError, list_checkpoints, resolve_resume, verify


def _cfg(steps=6):
    return tiny_config("pixart", "edit", steps=steps, overrides=["checkpointing={every: 2, keep: 5}"])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished 6-step run with checkpoints at steps 2, 4, 6 (copied per test before damaging it)."""
    out = tmp_path_factory.mktemp("ckpt") / "run"
    distill(_cfg(), out)
    return out


def _copy(run, tmp_path):
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run"


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_a_damaged_checkpoint_is_an_error_that_names_it(run, tmp_path, damage):
    out = _copy(run, tmp_path)
    newest = out / "checkpoints" / "checkpoint-6"
    target = newest / ("optimizer.bin" if damage == "delete" else "model.safetensors")
    data = target.read_bytes()
    if damage == "truncate":
        target.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        target.write_bytes(data[:-10] + bytes(b ^ 0xFF for b in data[-10:]))
    else:
        target.unlink()
    with pytest.raises(CheckpointError) as err:
        distill(_cfg(steps=8), out, resume="latest", accept_config_changes=True)  # 6 -> 8 steps
    message = str(err.value)
    assert "checkpoint-6" in message and target.name in message and "checkpoint-4" in message
    # the older checkpoints are untouched and resume cleanly
    verify(out / "checkpoints" / "checkpoint-4")
    distill(_cfg(steps=8), out, resume=out / "checkpoints" / "checkpoint-4", accept_config_changes=True)
    reference = distill(_cfg(steps=8), tmp_path / "reference")
    assert_same_weights(lindit.load(reference), lindit.load(out))


def test_resume_latest_skips_incomplete_checkpoints(run, tmp_path):
    out = _copy(run, tmp_path)
    root = out / "checkpoints"
    shutil.copytree(root / "checkpoint-6", root / ".checkpoint-8.partial")  # a write cut short
    shutil.copytree(root / "checkpoint-6", root / "checkpoint-9")
    (root / "checkpoint-9" / "lindit_checkpoint.json").unlink()  # never finished: no manifest
    with pytest.warns(UserWarning, match="checkpoint-9"):
        assert resolve_resume(root, "latest") == root / "checkpoint-6"
    with pytest.raises(CheckpointError, match="incomplete"):
        verify(root / "checkpoint-9")


def test_an_explicit_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint-42"):
        resolve_resume(tmp_path, tmp_path / "checkpoint-42")


def test_a_checkpoint_of_another_model_cannot_be_loaded(run, tmp_path):
    other = tiny_config("pixart", "edit", steps=8, overrides=["model.teacher.random.config.num_layers=3"])
    with pytest.raises(ValueError, match="num_layers: 2 -> 3"):  # the run's recorded config differs
        distill(other, tmp_path / "other", resume=run / "checkpoints" / "checkpoint-6")
    with pytest.raises(CheckpointError, match="cannot be loaded"):
        distill(other, tmp_path / "other", resume=run / "checkpoints" / "checkpoint-6", accept_config_changes=True)


def test_checkpoint_folders_are_complete(run):
    for path in list_checkpoints(run / "checkpoints"):
        manifest = verify(path)
        assert {"model.safetensors", "optimizer.bin", "scheduler.bin", "trainer_state.json"} <= set(manifest["files"])
