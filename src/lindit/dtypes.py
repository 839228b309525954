"""The floating-point dtypes lindit's commands accept, by name: one table, its aliases, one parser.

    dtype_name("bf16")        # "bfloat16": the canonical name (also an argparse ``type=``)
    resolve_dtype("fp16")     # torch.float16
    MIXED_PRECISION["bf16"]   # torch.bfloat16: accelerate's ``mixed_precision`` modes (training configs)

An unknown name raises ``UnknownDtype``, one line naming the valid names; it is a ``ValueError`` (a user
error, see ``lindit.errors``) and an ``argparse.ArgumentTypeError`` (argparse prints its message).
"""

from __future__ import annotations

import argparse

import torch

__all__ = ["ALIASES", "DTYPES", "MIXED_PRECISION", "UnknownDtype", "dtype_name", "resolve_dtype"]

# Canonical name (torch's) -> dtype, in the order error messages list them.
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Other spellings -> canonical name.
ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}
# accelerate's mixed-precision modes (``training.mixed_precision``) -> the dtype of teachers, encoders, inputs.
MIXED_PRECISION = {"no": DTYPES["float32"], "fp16": DTYPES["float16"], "bf16": DTYPES["bfloat16"]}


class UnknownDtype(ValueError, argparse.ArgumentTypeError):
    """A dtype name that is neither in ``DTYPES`` nor in ``ALIASES``."""


def _valid() -> str:
    spellings = {name: [alias for alias, target in ALIASES.items() if target == name] for name in DTYPES}
    return ", ".join(f"{name} ({', '.join(aliases)})" if aliases else name for name, aliases in spellings.items())


def dtype_name(text: str) -> str:
    """A dtype name or alias (float32, fp32, bfloat16, bf16, float16, fp16, half) -> its canonical name."""
    name = text if text in DTYPES else ALIASES.get(text)
    if name is None:
        raise UnknownDtype(f"unknown dtype {text!r}; valid: {_valid()}")
    return name


def resolve_dtype(text: str) -> torch.dtype:
    """A dtype name or alias -> the torch dtype."""
    return DTYPES[dtype_name(text)]
