"""Two processes on CPU (DDP over gloo) through ``accelerate launch``: trains, checkpoints and saves.

accelerate's ``--cpu --num_processes 2`` starts a single process unless mpirun is configured
(huggingface/accelerate#2741); its torchrun launcher with ACCELERATE_USE_CPU=1 gives gloo DDP on CPU.
"""

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from training_helpers import build_teacher, tiny_dict

import lindit
from lindit.training.checkpoint import list_checkpoints


def test_two_cpu_processes_train_and_save(tmp_path, read_metrics):
    accelerate = Path(sys.executable).with_name("accelerate")
    if not accelerate.exists() and not shutil.which("accelerate"):
        pytest.skip("the accelerate launcher is not installed")
    data = tiny_dict("pixart", "edit", steps=4, n=8, batch=2)
    data["checkpointing"] = {"every": 2, "keep": 2}
    config = tmp_path / "recipe.yaml"
    config.write_text(yaml.safe_dump(data))
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    cmd = [str(accelerate) if accelerate.exists() else "accelerate", "launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           "-m", "lindit.cli", "distill", "--config", str(config), "--out", str(tmp_path / "run")]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("student saved") == 1  # printed by the main process only
    newest = list_checkpoints(tmp_path / "run" / "checkpoints")[-1]
    assert {"random_states_0.pkl", "random_states_1.pkl"} <= {p.name for p in newest.iterdir()}  # two ranks
    assert [int(r["step"]) for r in read_metrics(tmp_path / "run")] == [1, 2, 3, 4]
    student, teacher = lindit.load(tmp_path / "run").state_dict(), build_teacher("pixart").state_dict()
    shared = [n for n in teacher if n in student and student[n].shape == teacher[n].shape]
    assert shared and any(not torch.equal(student[n], teacher[n]) for n in shared)  # stage "all" trained them


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
