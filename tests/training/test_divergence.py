"""The divergence guard's parts (the end-to-end run is tests/reliability/test_data_loss.py)."""

import pytest
import torch
from training_helpers import tiny_config

from lindit.errors import TrainingDiverged
from lindit.training.divergence import NonFiniteGuard, apply_stage_lr, check_finite_weights


class _Acc:  # what the guard needs of an Accelerator, single process
    device = torch.device("cpu")

    def reduce(self, tensor, reduction="sum"):
        return tensor


def test_non_finite_weights_are_never_checkpointed(tmp_path):
    guard = NonFiniteGuard(tiny_config("pixart", "edit"), tmp_path)
    model = torch.nn.Linear(2, 2)
    check_finite_weights(_Acc(), model, guard, 0, 5)
    with torch.no_grad():
        model.weight[0, 0] = float("inf")
    with pytest.raises(TrainingDiverged, match="weights are not finite at step 5.*stages\\[0\\].lr"):
        check_finite_weights(_Acc(), model, guard, 0, 5)


def test_the_guard_counts_steps_in_a_row_and_resets(tmp_path):
    guard = NonFiniteGuard(tiny_config("pixart", "edit", overrides=["training.max_nonfinite_steps=2"]), tmp_path)
    for step, finite in [(1, False), (2, False), (3, True), (4, False), (5, False)]:
        guard.count(finite, step, 0)
    with pytest.raises(TrainingDiverged, match="3 optimisation steps in a row \\(steps 4-6"):
        guard.count(False, 6, 0)


def test_a_resume_with_a_new_lr_uses_it_from_the_restored_step():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / 4))  # warm-up
    for _ in range(2):
        opt.step()
        sched.step()
    apply_stage_lr(sched, 0.1)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 3 / 4) and sched.get_last_lr() == [opt.param_groups[0]["lr"]]
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)
