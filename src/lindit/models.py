"""Model specs accepted everywhere a model is named (convert, generate, eval, distill).

* ``builtin:pixart``, ``builtin:mmdit``, ``builtin:dit``: the tiny teachers shipped with lindit.
* a folder written by ``lindit.save``: a converted model.
* a diffusers model folder, a pipeline folder (its ``transformer``) or a hub id: a teacher.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

BUILTIN_PREFIX = "builtin:"


def builtin_names() -> list[str]:
    from .world.teachers import BUILTIN_TEACHERS

    return sorted(BUILTIN_TEACHERS)


def load_model(spec: str, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> nn.Module:
    """The transformer named by ``spec`` (see module docstring), in eval mode."""
    from .integrations.diffusers import is_lindit_dir, load
    from .integrations.diffusers.loading import load_teacher
    from .integrations.diffusers.persistence import is_hub_student

    if spec.startswith(BUILTIN_PREFIX):
        from .world.teachers import load_builtin_teacher

        model = load_builtin_teacher(spec[len(BUILTIN_PREFIX):])
    elif is_lindit_dir(spec) or is_lindit_dir(Path(spec) / "transformer") or is_hub_student(spec):
        return load(spec, device=device, dtype=dtype)
    else:
        if not Path(spec).exists() and (spec.startswith((".", "/")) or spec.count("/") != 1):
            raise FileNotFoundError(f"no model at {spec!r}: give a lindit folder, a diffusers model or pipeline "
                                    f"folder, a hub id, or builtin:NAME")
        model = load_teacher(spec)
    model = model.to(device) if dtype is None else model.to(device=device, dtype=dtype)
    return model.eval()
