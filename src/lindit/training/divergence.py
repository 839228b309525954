"""A diverging run stops before it replaces good checkpoints.

Every optimisation step checks its loss (each micro-step's) and its gradient norm (after accumulation, over
all processes: one device sync per step). A step where either is not finite is skipped: the weights, the
optimizer moments and the EMA stay as they were (under fp16 the gradient scaler skips it too and lowers its
scale). No checkpoint is written while such steps follow each other (those weights just gave NaN), and
weights are checked before every checkpoint and before the final save, so a checkpoint never holds NaN or
inf, and pruning (which keeps the newest) can never remove the last good one. After
``training.max_nonfinite_steps`` such steps in a row the run raises ``TrainingDiverged``, naming the steps,
the last checkpoint and what to change.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import TrainingDiverged
from .checkpoint import list_checkpoints


class NonFiniteGuard:
    def __init__(self, cfg, root: Path):
        self.cfg, self.root = cfg, root
        self.limit = cfg.training.max_nonfinite_steps
        self.in_a_row = 0  # skipped steps in a row (0 at every checkpoint: none is written during a streak)
        self.first = None  # the first of them
        self.loss_bad = None  # a (device) flag: some micro-step's loss of this step was not finite
        self.grads_bad = False

    def see_loss(self, loss: torch.Tensor) -> None:
        bad = ~torch.isfinite(loss.detach())
        self.loss_bad = bad if self.loss_bad is None else self.loss_bad | bad

    def check_step(self, acc, params) -> bool:
        """Whether this optimisation step's losses and gradients are finite on every process. Clips the
        gradients to ``training.max_grad_norm`` on the way (unclipped when it is null)."""
        max_norm = self.cfg.training.max_grad_norm or float("inf")
        norm = acc.clip_grad_norm_(params, max_norm)
        norm = torch.zeros((), device=acc.device) if norm is None else torch.as_tensor(norm, device=acc.device)
        flags = torch.stack([self.loss_bad.float(), (~torch.isfinite(norm.float())).float()]).to(acc.device)
        self.loss_bad = None
        loss_bad, self.grads_bad = (acc.reduce(flags, reduction="sum") > 0).tolist()
        return not (loss_bad or self.grads_bad)

    def scaler_skips(self, acc) -> bool:
        """Whether the fp16 gradient scaler will see this step's non-finite gradients (and skip it itself)."""
        return acc.scaler is not None and self.grads_bad

    def count(self, finite: bool, step: int, stage: int) -> None:
        if finite:
            self.in_a_row, self.first = 0, None
            return
        self.in_a_row += 1
        self.first = self.first or step
        if self.in_a_row > self.limit:
            raise self.diverged(stage, f"the loss or gradients were not finite in {self.in_a_row} optimisation steps in "
                                f"a row (steps {self.first}-{step}; training.max_nonfinite_steps: {self.limit})")

    def diverged(self, stage: int, what: str) -> TrainingDiverged:
        cfg, saved = self.cfg, list_checkpoints(self.root)
        name = f" {cfg.stages[stage].name!r}" if cfg.stages[stage].name else ""
        back = (f"resume from the last checkpoint, written before that: --resume {saved[-1]} --accept-config-changes"
                if saved else "start again (no checkpoint was written): --resume latest --accept-config-changes")
        return TrainingDiverged(
            f"training diverged in stage {stage}{name}: {what}; nothing was saved since. The way back: lower "
            f"stages[{stage}].lr (now {cfg.stages[stage].lr:g}) or training.max_grad_norm (now "
            f"{cfg.training.max_grad_norm}) and {back}")


def check_finite_weights(acc, model, guard: NonFiniteGuard, stage: int, step: int) -> None:
    """TrainingDiverged if any trainable weight is NaN or inf (on any process): never saved."""
    local = torch.stack([(~torch.isfinite(p.detach())).any() for p in model.parameters()]).any()
    if acc.reduce(local.float().reshape(1).to(acc.device), reduction="sum").item() > 0:
        raise guard.diverged(stage, f"the weights are not finite at step {step}")


def apply_stage_lr(scheduler, lr: float) -> None:
    """Make a restored LR schedule use the stage's configured ``lr`` (the checkpoint holds the old one), at
    the step it was restored at. No change when they agree, so a plain resume stays bit-identical."""
    inner = getattr(scheduler, "scheduler", scheduler)  # accelerate's wrapper -> the LambdaLR
    if all(base == lr for base in inner.base_lrs) or not hasattr(inner, "lr_lambdas"):
        return
    inner.base_lrs = [lr for _ in inner.base_lrs]
    for group, fn in zip(inner.optimizer.param_groups, inner.lr_lambdas):
        group["initial_lr"] = lr
        group["lr"] = lr * fn(inner.last_epoch)
    inner._last_lr = [group["lr"] for group in inner.optimizer.param_groups]
