"""A run folder belongs to one run.

``lindit distill --out OUT`` claims OUT before anything is loaded: it takes OUT's lock (``FolderLock``: a
second run on OUT is refused with the holder's pid, host and command), and

* a fresh run (no ``--resume``) needs OUT to be new or empty: an old run there is never truncated,
  replaced or pruned by a new one;
* ``--resume`` compares the config with the one the run recorded (``OUT/run.yaml``, with its seed) and
  refuses any difference, listed key by key, unless ``--accept-config-changes``; then the old config is
  kept beside the new one as ``run.replaced-<time>.yaml``.

Keys that do not change what is computed (progress bar, TensorBoard, data workers, checkpoints kept) may
differ freely.
"""

from __future__ import annotations

import shutil
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import yaml

from ..errors import OutputExists, UserError
from ..io import LOCK_NAME, FolderLock, write_text
from .checkpoint import MANIFEST, checkpoint_root, resolve_resume
from .config import RunConfig, dump_config

RUN_CONFIG = "run.yaml"
NOT_STARTED = {RUN_CONFIG, "logs"}  # a run that failed before training (a bad teacher path) leaves only these
MAY_DIFFER = ("logging.progress_bar", "logging.tensorboard", "data.num_workers", "checkpointing.keep",
              "training.max_nonfinite_steps")


@contextmanager
def claim_run(out_dir: Path, cfg: RunConfig, resume, accept_changes: bool = False):
    """Hold ``out_dir`` for this run (its lock) and check it (``check_run_folder``) on the main process;
    every process gets the checkpoint to resume from, or the main process's refusal."""
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list, parse_flag_from_env

    # The process group, set up as AcceleratorState will (it reads ACCELERATE_USE_CPU; PartialState alone
    # would make every process of a multi-CPU launch its own main process).
    main = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU")).is_main_process
    existed = out_dir.exists()
    with ExitStack() as stack:
        outcome: list = [None, None]  # [refusal, checkpoint]
        error = None
        if main:
            stack.callback(_forget_if_not_started, out_dir, existed)  # after the lock is released
            try:
                stack.enter_context(FolderLock(out_dir))
                outcome[1] = check_run_folder(out_dir, cfg, resume, accept_changes)
            except UserError as err:
                outcome[0], error = str(err), err
        outcome = broadcast_object_list(outcome)
        if error is not None:
            raise error
        if outcome[0] is not None:
            raise UserError(outcome[0])
        yield outcome[1]


def _forget_if_not_started(out_dir: Path, existed: bool) -> None:
    """A run that ended before its first optimisation step (a bad teacher path, a missing checkpoint)
    leaves nothing: its run.yaml goes, and the folder too if this run made it."""
    found = {p.name for p in out_dir.iterdir()} if out_dir.is_dir() else None
    if found is None or found - NOT_STARTED - {LOCK_NAME}:
        return
    (out_dir / RUN_CONFIG).unlink(missing_ok=True)
    if not existed:
        shutil.rmtree(out_dir, ignore_errors=True)


def check_run_folder(out_dir: Path, cfg: RunConfig, resume, accept_changes: bool = False) -> Path | None:
    """Check (main process, lock held) that this run may use ``out_dir``; record its config there.
    Returns the checkpoint to resume from (None: start at step 0)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} exists and is not a folder; name a new folder")
    found = sorted(p.name for p in out_dir.iterdir() if p.name != LOCK_NAME) if out_dir.is_dir() else []
    recorded = out_dir / RUN_CONFIG
    if not set(found) - NOT_STARTED:  # only what a run that failed before its first step leaves: reuse it
        found = []
        recorded.unlink(missing_ok=True)
    if resume is None and found:
        what = "a run" if recorded.is_file() else "files"
        raise OutputExists(f"--out {out_dir} already holds {what} ({', '.join(found[:4])}{' ...' * (len(found) > 4)});"
                           " continue that run with --resume latest, or choose a new folder")
    if found and not recorded.is_file():
        raise UserError(f"--out {out_dir} is not a lindit run folder (no {RUN_CONFIG}); choose a new folder")
    ckpt = resolve_resume(checkpoint_root(out_dir), resume)
    if ckpt is not None and not (ckpt / MANIFEST).is_file():
        raise UserError(f"{ckpt} is not a complete lindit checkpoint (no {MANIFEST})")
    previous = recorded if recorded.is_file() else (ckpt.parent.parent / RUN_CONFIG if ckpt is not None else None)
    if previous is not None and previous.is_file():
        _compare(previous, cfg, accept_changes, out_dir)
    write_text(recorded, dump_config(cfg))
    clean_leftovers(out_dir)
    return ckpt


def _compare(previous: Path, cfg: RunConfig, accept_changes: bool, out_dir: Path) -> None:
    old, new = yaml.safe_load(previous.read_text()) or {}, yaml.safe_load(dump_config(cfg))
    diffs = [d for d in differences(old, new) if not d.startswith(tuple(k + ":" for k in MAY_DIFFER))]
    if not diffs:
        return
    listed = "; ".join(diffs[:8]) + (f"; and {len(diffs) - 8} more" if len(diffs) > 8 else "")
    if not accept_changes:
        raise UserError(f"the config differs from the run's ({previous}): {listed}; resume with the run's own config, "
                        "pass --accept-config-changes to continue with these values, or choose a new --out")
    if previous.parent == out_dir:
        shutil.copyfile(previous, out_dir / f"run.replaced-{time.strftime('%Y%m%d-%H%M%S')}.yaml")
    print(f"lindit distill: continuing with a changed config: {listed}", file=sys.stderr)


def differences(old: Any, new: Any, path: str = "") -> list[str]:
    """``key.path: old -> new`` for every value that differs between two plain YAML trees."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in list(old) + [k for k in new if k not in old]:
            where = f"{path}.{key}" if path else str(key)
            out += differences(old.get(key, "(absent)"), new.get(key, "(absent)"), where)
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for i, (a, b) in enumerate(zip(old, new)) for d in differences(a, b, f"{path}[{i}]")]
    return [] if old == new else [f"{path}: {old!r} -> {new!r}"]


def clean_leftovers(out_dir: Path) -> None:
    """Remove what interrupted writes of this run folder left (the lock is held, so nothing is writing)."""
    for folder in (out_dir, out_dir / "ema"):
        for pattern in (".student.partial", "..student.partial.*"):  # see models.save_student
            for path in folder.glob(pattern):
                shutil.rmtree(path, ignore_errors=True)
