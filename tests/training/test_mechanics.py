"""Training mechanics: mixed precision, gradient checkpointing, accumulation, warm-up, EMA, the CLI."""

import json

import pytest
import torch
import yaml
from training_helpers import assert_same_weights, tiny_config, tiny_dict

import lindit
from lindit.cli import main
from lindit.training import distill
from lindit.training.checkpoint import list_checkpoints
from lindit.training.components import Teachers


def test_bf16_keeps_float32_master_weights_and_a_frozen_bf16_teacher(tmp_path, read_metrics, monkeypatch):
    seen = []
    original = Teachers.load

    def spy(self, key, to_device=True):
        model = original(self, key, to_device)
        if to_device:
            seen.append(model)
        return model

    monkeypatch.setattr(Teachers, "load", spy)
    out = distill(tiny_config("pixart", "edit", steps=3, overrides=["training.mixed_precision=bf16"]), tmp_path / "run")
    teacher = seen[-1]
    assert {p.dtype for p in teacher.parameters()} == {torch.bfloat16}
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert {p.dtype for p in lindit.load(out).parameters()} == {torch.float32}
    assert all(float(r["loss"]) == float(r["loss"]) for r in read_metrics(out))  # finite, not NaN


def test_gradient_checkpointing_trains_the_same_weights(tmp_path):
    plain = lindit.load(distill(tiny_config("pixart", "edit", steps=3), tmp_path / "plain"))
    ckpt = tiny_config("pixart", "edit", steps=3, overrides=["training.gradient_checkpointing=true"])
    checkpointed = lindit.load(distill(ckpt, tmp_path / "ckpt"))
    for (name, a), b in zip(plain.state_dict().items(), checkpointed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_accumulation_counts_optimisation_steps_and_warmup_follows_them(tmp_path, read_metrics):
    cfg = tiny_config("pixart", "edit", steps=6, overrides=[
        "training.gradient_accumulation_steps=2", "optimizer.warmup_steps=4", "stages[0].lr=0.001",
        "data.batch_size=2", "checkpointing.every=6"])  # fmt: skip
    out = distill(cfg, tmp_path / "run")
    rows = read_metrics(out)
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [float(r["lr"]) for r in rows] == pytest.approx([0.00025, 0.0005, 0.00075, 0.001, 0.001, 0.001])
    state = json.loads((list_checkpoints(out / "checkpoints")[-1] / "trainer_state.json").read_text())
    assert state["global_step"] == 6 and state["position"] == 12  # two micro-batches per step


def test_ema_weights_are_saved_beside_the_student(tmp_path):
    out = distill(tiny_config("pixart", "edit", steps=4, overrides=["ema={decay: 0.5}"]), tmp_path / "run")
    student, ema = lindit.load(out).state_dict(), lindit.load(out / "ema").state_dict()
    assert student.keys() == ema.keys() and any(not torch.equal(student[k], ema[k]) for k in student)


def test_cli_trains_with_overrides_and_max_steps(tmp_path, capsys, read_metrics):
    config = tmp_path / "recipe.yaml"
    config.write_text(yaml.safe_dump(tiny_dict("dit", "lit", steps=50)))
    code = main(["distill", "--config", str(config), "--out", str(tmp_path / "run"), "--max-steps", "3",
                 "stages[0].lr=0.0005", "logging.every=1"])  # fmt: skip
    assert code == 0 and "student saved" in capsys.readouterr().out
    assert len(read_metrics(tmp_path / "run")) == 3 and float(read_metrics(tmp_path / "run")[0]["lr"]) == 0.0005
    assert yaml.safe_load((tmp_path / "run" / "run.yaml").read_text())["stages"][0]["lr"] == 0.0005
    assert main(["distill", "--config", str(config), "--out", str(tmp_path / "run"), "--resume", "latest",
                 "--max-steps", "5", "stages[0].lr=0.0005"]) == 0  # fmt: skip
    assert json.loads((tmp_path / "run" / "checkpoints" / "checkpoint-5" / "trainer_state.json").read_text())["global_step"] == 5


def test_cli_config_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    data = tiny_dict()
    data["stages"][0]["lr"] = "fast"
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(data))
    assert main(["distill", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "lindit distill: error: stages[0].lr: expected float, got 'fast'"
    assert main(["distill", "--config", str(config), "--out", str(tmp_path / "run"), "stages[0].lrr=1"]) == 2
    assert "stages[0].lrr: unknown key" in capsys.readouterr().err
    assert main(["distill", "--config", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "r")]) == 2


def test_resuming_a_finished_run_changes_nothing(tmp_path):
    cfg = tiny_config("pixart", "edit", steps=3)
    first = lindit.load(distill(cfg, tmp_path / "run"))
    again = lindit.load(distill(cfg, tmp_path / "run", resume="latest"))
    assert_same_weights(first, again)


def test_dit_label_dropout_is_left_to_the_trainer(tmp_path):
    """DiT drops 10% of labels inside the model in train mode; the trainer does it itself (seeded, and the
    teacher must see the same labels), so the student's built-in dropout is off."""
    from lindit.training.components import build_components

    comp = build_components(tiny_config("dit", "lit"), torch.device("cpu"))
    embedders = [m for m in comp.student.modules() if type(m).__name__ == "LabelEmbedding"]
    assert embedders and all(m.dropout_prob == 0.0 for m in embedders)
    comp.student.train()
    labels = torch.arange(4)
    out = [comp.student.transformer_blocks[0].norm1.emb.class_embedder(labels) for _ in range(20)]
    assert all(torch.equal(o, out[0]) for o in out)


def test_dataloader_workers_do_not_change_the_run(tmp_path):
    overrides = ["data.source.world.n=16", "data.aspect_ratios=[0.75, 1.333]", "stages[0].resolution=32"]
    serial = lindit.load(distill(tiny_config("pixart", "edit", steps=4, overrides=overrides), tmp_path / "serial"))
    workers = tiny_config("pixart", "edit", steps=4, overrides=overrides + ["data.num_workers=2"])
    assert_same_weights(serial, lindit.load(distill(workers, tmp_path / "workers")))
