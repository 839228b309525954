"""Checkpoints that are complete or absent: ``OUT/checkpoints/checkpoint-N``.

Writing: every process calls ``accelerator.save_state`` into ``.checkpoint-N.partial`` (model as safetensors;
optimizer, LR scheduler and RNG states as accelerate writes them), the main process adds
``trainer_state.json`` (step, stage, data position), the EMA weights (safetensors) and last a manifest with
the size and SHA-256 of every file, then renames the folder to ``checkpoint-N`` in one step. A run killed at
any moment leaves at most a ``.partial`` folder, which is ignored and cleaned up; the last ``keep``
complete checkpoints are kept.

Reading: ``--resume latest`` takes the newest folder with a manifest (folders without one are skipped with
a warning); every file is checked against the manifest before anything is loaded, so a corrupt or truncated
checkpoint is an error that names it (and lists the older ones, which stay usable). accelerate reads the
optimizer, scheduler and RNG files with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..io import set_umask_permissions, write_json

PREFIX = "checkpoint-"
MANIFEST = "lindit_checkpoint.json"
STATE = "trainer_state.json"
EMA_FILE = "ema.safetensors"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (corrupt, truncated, or from another run layout)."""


def checkpoint_root(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints"


def _step_of(path: Path) -> int | None:
    tail = path.name[len(PREFIX) :]
    return int(tail) if path.name.startswith(PREFIX) and tail.isdigit() else None


def list_checkpoints(root: str | Path, warn: bool = False) -> list[Path]:
    """Complete checkpoints (with a manifest) under ``root``, oldest first."""
    root = Path(root)
    found = []
    for path in root.iterdir() if root.is_dir() else []:
        if path.is_dir() and _step_of(path) is not None:
            if (path / MANIFEST).is_file():
                found.append(path)
            elif warn:
                warnings.warn(f"skipping incomplete checkpoint {path} (no {MANIFEST})", stacklevel=2)
    return sorted(found, key=_step_of)


def save_checkpoint(accelerator, root: str | Path, step: int, state: dict, ema=None, param_names=None,
                    keep: int = 3) -> Path:  # fmt: skip
    """Write ``checkpoint-<step>`` atomically (call on every process); returns its path."""
    root = Path(root)
    tmp, final = root / f".{PREFIX}{step}.partial", root / f"{PREFIX}{step}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json(tmp / STATE, state)
        if ema is not None:
            save_ema(ema, param_names, tmp / EMA_FILE)
        set_umask_permissions(tmp)  # safetensors writes 0600
        write_json(tmp / MANIFEST, {"step": step, "files": _describe(tmp)})
        _replace_dir(tmp, final)
        prune(root, keep, step)
    accelerator.wait_for_everyone()
    return final


def _describe(folder: Path) -> dict:
    """relative path -> {size, sha256} of every file; files are fsynced, so the rename publishes durable data."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        with open(path, "rb") as f:
            os.fsync(f.fileno())
            files[path.relative_to(folder).as_posix()] = {"size": path.stat().st_size, "sha256": _sha256(f)}
    return files


def _sha256(f) -> str:
    digest = hashlib.sha256()
    for block in iter(lambda: f.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()


def _replace_dir(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``; an existing ``dst`` (a run resumed from an older checkpoint) is swapped out."""
    if dst.exists():
        trash = dst.with_name(f".{dst.name}.old")
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(dst, trash)
        os.replace(src, dst)
        shutil.rmtree(trash)
    else:
        os.replace(src, dst)


def prune(root: Path, keep: int, step: int | None = None) -> None:
    """Delete all but the newest ``keep`` complete checkpoints up to ``step`` (the one just written), and
    leftovers of interrupted writes. Checkpoints after ``step`` (a run resumed from an older one) are left
    alone: the one just written is never pruned in favour of them."""
    for old in [p for p in list_checkpoints(root) if step is None or _step_of(p) <= step][:-keep]:
        shutil.rmtree(old)
    for partial in root.glob(f".{PREFIX}*.partial"):
        if _step_of(Path(partial.name[1 : -len(".partial")])) is not None:
            shutil.rmtree(partial, ignore_errors=True)


def verify(path: str | Path) -> dict:
    """Check every file of a checkpoint against its manifest; returns the manifest, CheckpointError otherwise."""
    path = Path(path)
    if not (path / MANIFEST).is_file():
        raise CheckpointError(f"checkpoint {path} is incomplete: {MANIFEST} is missing" + _older_hint(path))
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        files = manifest["files"]
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"checkpoint {path} is corrupt: unreadable {MANIFEST} ({err})" + _older_hint(path)) from None
    for name, info in files.items():
        problem = _file_problem(path / name, info)
        if problem:
            raise CheckpointError(f"checkpoint {path} is corrupt: {name} {problem}" + _older_hint(path))
    return manifest


def _file_problem(file: Path, info: dict) -> str | None:
    if not file.is_file():
        return "is missing"
    size = file.stat().st_size
    if size != info["size"]:
        return f"has {size} bytes, expected {info['size']} (truncated?)"
    with open(file, "rb") as f:
        if _sha256(f) != info["sha256"]:
            return "does not match its checksum"
    return None


def _older_hint(path: Path) -> str:
    step = _step_of(path)
    older = [p for p in list_checkpoints(path.parent) if step is not None and _step_of(p) < step]
    if not older:
        return ""
    return f"; older checkpoints: {', '.join(p.name for p in older)} (resume one with --resume {older[-1]})"


def resolve_resume(root: str | Path, resume: str | Path | None) -> Path | None:
    """The checkpoint to resume from: ``latest`` (None if there is none yet) or an explicit folder."""
    if resume is None:
        return None
    if str(resume) == "latest":
        found = list_checkpoints(root, warn=True)
        return found[-1] if found else None
    path = Path(resume)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return path


def read_state(path: Path) -> dict:
    return json.loads((Path(path) / STATE).read_text())


def load_checkpoint(accelerator, path: str | Path, ema=None, param_names=None) -> dict:
    """Verify, then restore model, optimizer, scheduler and RNG (accelerate) and the EMA; returns trainer state."""
    path = Path(path)
    verify(path)
    try:
        accelerator.load_state(str(path))
    except Exception as err:  # a checksum-valid file accelerate still cannot use (other model, other layout)
        raise CheckpointError(f"checkpoint {path} cannot be loaded into this run: {err}") from None
    if ema is not None:
        if not (path / EMA_FILE).is_file():
            raise CheckpointError(f"checkpoint {path} has no EMA weights, but this run uses ema")
        load_ema(ema, param_names, path / EMA_FILE)
    return read_state(path)


def save_ema(ema, names: list[str], path: Path) -> None:
    """diffusers EMAModel -> safetensors: shadow weights by parameter name, settings in the metadata."""
    tensors = {name: p.detach().cpu().contiguous() for name, p in zip(names, ema.shadow_params)}
    meta = {k: v for k, v in ema.state_dict().items() if k != "shadow_params"}
    save_file(tensors, str(path), metadata={"ema": json.dumps(meta)})


def load_ema(ema, names: list[str], path: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["ema"])
    tensors = load_file(str(path))
    if set(tensors) != set(names):
        raise CheckpointError(f"{path}: EMA weights do not match the model's parameters")
    ema.load_state_dict(meta)
    device = ema.shadow_params[0].device if ema.shadow_params else torch.device("cpu")
    ema.shadow_params = [tensors[n].to(device) for n in names]
