"""Which failures are the user's (bad input, missing files, a full disk, no network) and which are ours.

The ``lindit`` command prints a user error as one line on stderr and exits non-zero; anything else is a
bug in lindit (or in a library under it) and keeps its traceback. ``LINDIT_TRACEBACK=1`` shows the
traceback of every error.

User errors are, by convention, ``ValueError`` (a bad value, named with what would be valid), the
``OSError`` family (files, folders, permissions, disk space, network) and the classes below. ``TypeError``,
``KeyError``, ``AttributeError``, ``IndexError``, ``RuntimeError`` and ``AssertionError`` are bugs: a
user's input must be checked before it can reach them.
"""

from __future__ import annotations

import errno
import re
import sys

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class UserError(ValueError):
    """Bad input or environment, found by lindit: one line, exit code 2."""


class OutputExists(UserError, FileExistsError):
    """An output the user named exists already (and --overwrite was not given)."""


class TrainingDiverged(UserError):
    """A training run stopped because its loss or gradients stopped being finite (see docs/RELIABILITY.md)."""


class NonFiniteOutput(UserError):
    """A model produced NaN or infinite values where images were expected."""


_OS_REASONS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
               errno.EFBIG: "file too large for this file system or limit", errno.EROFS: "read-only file system"}


def user_message(err: BaseException) -> str | None:
    """The one line describing a user error, or None when ``err`` is a bug (keep its traceback)."""
    torch = sys.modules.get("torch")  # not imported for it: ``lindit --help`` stays fast
    if torch is not None and isinstance(err, torch.OutOfMemoryError):
        return "out of memory: " + _first_line(err) + " (try a smaller size or batch, or --device cpu)"
    if isinstance(err, OSError):
        reason = _OS_REASONS.get(err.errno)
        if reason:
            where = err.filename or ""
            return f"{reason}" + (f" (writing {where})" if where else "")
        return _one_line(err)
    if isinstance(err, ValueError):
        return _one_line(err)
    if type(err).__name__ == "SafetensorError":  # a file safetensors could not write or read (Rust I/O)
        found = re.search(r"os error (\d+)", str(err))
        reason = _OS_REASONS.get(int(found.group(1))) if found else None
        return reason or _one_line(err)
    return None


def _one_line(err: BaseException) -> str:
    text = " ".join(part.strip() for part in str(err).splitlines() if part.strip())
    return text or type(err).__name__


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]
