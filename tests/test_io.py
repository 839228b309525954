"""Nothing half-written: atomic files and directories."""

import pytest

from lindit.io import atomic_dir, write_json


def test_write_json_replaces_whole_file(tmp_path):
    path = tmp_path / "a" / "x.json"
    write_json(path, {"a": 1})
    write_json(path, {"b": 2})
    assert path.read_text().strip().startswith("{") and '"b": 2' in path.read_text()
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]


def test_atomic_dir_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "model"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "weights").write_text("half")
            raise RuntimeError("crash")
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_atomic_dir_refuses_existing_unless_overwrite(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        (tmp / "v").write_text("1")
    with pytest.raises(FileExistsError, match="already exists"):
        with atomic_dir(target):
            pass
    with atomic_dir(target, overwrite=True) as tmp:
        (tmp / "v").write_text("2")
    assert (target / "v").read_text() == "2" and sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_atomic_writes_get_the_permissions_of_a_plain_write(tmp_path):
    """mkstemp/mkdtemp make owner-only entries; after the rename they must look like open()/mkdir() made them."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "f").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755


def test_files_written_owner_only_by_a_library_get_the_umask(tmp_path):
    """safetensors creates its files 0600; atomic_dir gives every file the umask's permissions."""
    import os
    import stat

    import torch
    from safetensors.torch import save_file

    old = os.umask(0o027)
    try:
        with atomic_dir(tmp_path / "d") as tmp:
            save_file({"w": torch.zeros(2)}, str(tmp / "w.safetensors"))
            (tmp / "sub").mkdir()
            os.chmod(tmp / "sub", 0o700)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "d" / "w.safetensors").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "d" / "sub").stat().st_mode) == 0o750


def test_check_output_rules(tmp_path, monkeypatch):
    from lindit.io import check_output

    (tmp_path / "empty").mkdir()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    (tmp_path / "file").write_text("x")
    assert check_output(tmp_path / "empty") == tmp_path / "empty"  # nothing to lose
    assert check_output(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    for path, folder, overwrite, message in [
        (tmp_path / "full", True, False, "already exists"),
        (tmp_path / "file", True, True, "is not a folder"),  # --overwrite never swaps a file for a folder
        (tmp_path / "full", False, True, "is not a regular file"),
        (tmp_path / "file" / "x.png", False, False, "is a file, not a folder"),
        (".", True, True, "must name a new folder"),
    ]:
        with pytest.raises(ValueError, match=message):
            check_output(path, overwrite=overwrite, folder=folder)
    monkeypatch.chdir(tmp_path / "full")
    with pytest.raises(ValueError, match="holds the current directory"):
        check_output(tmp_path, overwrite=True)


def test_a_result_is_kept_when_its_destination_appears_meanwhile(tmp_path):
    from lindit.io import OutputExists

    target = tmp_path / "out"
    with pytest.raises(OutputExists, match="kept in"):
        with atomic_dir(target) as tmp:
            (tmp / "result").write_text("an hour of work")
            target.mkdir()
            (target / "other").write_text("another run's")  # e.g. a second run finished first
    kept = [p for p in tmp_path.iterdir() if p.name != "out"]
    assert [(p / "result").read_text() for p in kept] == ["an hour of work"]
    assert (target / "other").read_text() == "another run's"


def test_folder_lock_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path):
    import json
    import os
    import subprocess
    import sys

    from lindit.io import LOCK_NAME, FolderLock

    with FolderLock(tmp_path / "run"):
        with pytest.raises(ValueError, match=f"in use by another lindit run \\(pid {os.getpid()} on "):
            with FolderLock(tmp_path / "run"):
                pass
    assert not (tmp_path / "run" / LOCK_NAME).exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    record = json.loads(json.dumps({"pid": dead.pid, "host": os.uname().nodename, "command": "gone"}))
    (tmp_path / "run" / LOCK_NAME).write_text(json.dumps(record))
    with FolderLock(tmp_path / "run") as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    (tmp_path / "run" / LOCK_NAME).write_text(json.dumps({**record, "host": "elsewhere"}))
    with pytest.raises(ValueError, match="on elsewhere.*delete"):  # another host: cannot tell, so ask
        with FolderLock(tmp_path / "run"):
            pass
