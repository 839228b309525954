"""Files are written whole or not at all: write to a temporary sibling, then rename.

Outputs the user names (``--out``) are claimed the same way by every command (``check_output``): an
existing one is refused unless the user passed ``--overwrite``, and a run only ever deletes what it created
itself (its temporary siblings) or, when told to, the old output it replaces. Written files get the
permissions of the user's umask, whatever library wrote them. A folder a long run writes into is held by
``FolderLock`` so that a second run on it is refused with the holder's pid, host and command.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from .errors import OutputExists, UserError


def _umask_mode(base: int) -> int:
    """``base`` (0o666 files, 0o777 dirs) under the process umask: what open()/mkdir() would have given.

    mkstemp and mkdtemp create owner-only entries; without this, reports and saved models would end up
    unreadable to the user's group and others after the rename.
    """
    mask = os.umask(0)
    os.umask(mask)
    return base & ~mask


def set_umask_permissions(root: str | os.PathLike) -> None:
    """Give ``root`` and everything under it the umask's permissions (safetensors writes files 0600)."""
    root = Path(root)
    file_mode, dir_mode = _umask_mode(0o666), _umask_mode(0o777)
    if root.is_file():
        os.chmod(root, file_mode)
        return
    for folder, dirs, files in os.walk(root):
        os.chmod(folder, dir_mode)
        for name in files:
            os.chmod(os.path.join(folder, name), file_mode)


def check_output(path: str | os.PathLike, overwrite: bool = False, folder: bool = True, flag: str = "--out") -> Path:
    """Refuse an output path before any work starts; returns it as a Path.

    Refused: an existing output unless ``overwrite`` (an empty folder is free to use), a file where a folder
    is wanted and the other way round, a folder holding the current directory, and a place that cannot be
    written.
    """
    path = Path(path)
    if str(path).strip() in ("", "."):
        raise UserError(f"{flag} must name a new {'folder' if folder else 'file'}, got {str(path)!r}")
    if path.exists() or path.is_symlink():
        _check_existing(path, overwrite, folder, flag)
    parent = next((p for p in path.absolute().parents if p.exists()), Path("/"))
    if not parent.is_dir():
        raise UserError(f"{flag} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: no permission to write in {parent}")
    return path


def _check_existing(path: Path, overwrite: bool, folder: bool, flag: str) -> None:
    kind = "folder" if folder else "file"
    if folder and not path.is_dir():
        raise UserError(f"{flag} {path} exists and is not a folder; name a new folder")
    if not folder and not path.is_file():
        raise UserError(f"{flag} {path} exists and is not a regular file; name a new {kind}")
    if folder and not any(path.iterdir()):
        return  # an empty folder holds nothing to lose
    if folder and Path.cwd().resolve().is_relative_to(path.resolve()):
        raise UserError(f"{flag} {path} holds the current directory; name a new folder")
    if not overwrite:
        raise OutputExists(f"{flag} {path} already exists; choose a new {kind} or pass --overwrite to replace it")


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path next to ``path``; on success rename it onto ``path``, on error remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        set_umask_permissions(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False):
    """Yield a temporary directory beside ``path``; on success it replaces ``path`` in one rename.

    An existing ``path`` is an error unless ``overwrite`` (or it is an empty folder); then it is swapped
    out only after the new directory is complete, so a crash never leaves a half-written result at ``path``.
    Only the temporary directory is removed on failure.
    """
    path = check_output(path, overwrite, folder=True, flag="output")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        set_umask_permissions(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _swap_in(tmp, path, overwrite)


def _swap_in(tmp: Path, path: Path, overwrite: bool) -> None:
    """Rename the finished ``tmp`` onto ``path``. Something that appeared at ``path`` meanwhile (another
    run) is replaced only with ``overwrite``; otherwise the finished result stays in ``tmp`` and is named."""
    if path.is_dir() and not any(path.iterdir()):
        path.rmdir()
    if path.exists() and not overwrite:
        raise OutputExists(f"{path} appeared while this run was writing; its result is kept in {tmp}")
    if path.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
        os.replace(path, old / path.name)
        os.replace(tmp, path)
        shutil.rmtree(old)
    else:
        os.replace(tmp, path)


LOCK_NAME = ".lindit.lock"


class FolderLock:
    """Hold ``folder`` for this process: ``folder/.lindit.lock`` records pid, host, command and start time.

    A second lindit process on the same folder is refused with a line naming the holder. A lock left by a
    process that died on this host is taken over (its pid is gone); one from another host needs deleting by
    hand, which the message says. Created with O_EXCL, so two runs starting together cannot both win.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.held = False

    def __enter__(self) -> FolderLock:
        if self.folder.exists() and not self.folder.is_dir():
            raise UserError(f"{self.folder} exists and is not a folder; name a new folder")
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            if self._create():
                self.held = True
                return self
            holder = self._holder()
            if not _is_stale(holder, self.path):
                raise UserError(self._busy(holder))
            self.path.unlink(missing_ok=True)  # its process is gone
        raise UserError(self._busy(self._holder()))

    def __exit__(self, *exc) -> None:
        if self.held and self._holder().get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)
        self.held = False

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, _umask_mode(0o666))
        except FileExistsError:
            return False
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv),
                  "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
        return True

    def _holder(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def _busy(self, holder: dict) -> str:
        who = (f"pid {holder.get('pid')} on {holder.get('host')}, since {holder.get('started')}: "
               f"{holder.get('command')}") if holder else "a process that is still writing its lock"
        return (f"{self.folder} is in use by another lindit run ({who}); wait for it to finish, or if it is no "
                f"longer running, delete {self.path}")


def _is_stale(holder: dict, path: Path) -> bool:
    """Whether the lock's process is gone: it ran on this host and its pid is free (or the file is unreadable
    and older than a few seconds, i.e. its writer died while writing it)."""
    if not holder:
        try:
            return time.time() - path.stat().st_mtime > 5
        except FileNotFoundError:
            return True
    if holder.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, KeyError, TypeError, ValueError):
        return False
    return False
