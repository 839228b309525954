"""What used to hang is bounded (docs/RELIABILITY.md): YAML alias bombs, and the Hugging Face Hub when the
network is missing or never answers. No test reaches the network: the Hub is a socket on loopback that
accepts and never answers, a closed port, or ``HF_HUB_OFFLINE`` with a prepared cache."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import pytest
from reliability_helpers import billion_laughs

import lindit
from lindit.cli import main
from lindit.world.teachers import teacher_dir


@contextmanager
def within(seconds: float):
    """Fail (instead of hanging the suite) if the block runs longer than ``seconds``."""
    def expire(*_):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# ----------------------------------------------------------------- YAML
def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path):
    """330 bytes that expand to 10**9 values (the config copy used to expand every alias: 21 s at 10**6)."""
    from lindit.training.config import load_config

    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(billion_laughs(9))
    assert bomb.stat().st_size < 400
    with within(5), pytest.raises(ValueError, match="expand to more than 100,000 values"):
        load_config(bomb)


def test_recipes_with_anchors_still_load():
    from pathlib import Path

    from lindit.training.config import load_config

    cfg = load_config(Path(__file__).parents[2] / "configs" / "tiny-edit.yaml")  # uses &pixart and <<: *pixart
    assert cfg.stages[1].teacher.random.config["sample_size"] == 48
    assert cfg.model.teacher.random.config["sample_size"] == 32  # aliases copied, not shared


# ----------------------------------------------------------------- the Hub
@pytest.fixture
def silent_hub(monkeypatch):
    """An endpoint that accepts connections and never answers (a proxy with no network behind it)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held, stop = [], threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"
    _use_endpoint(monkeypatch, endpoint)
    yield endpoint
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


@pytest.fixture
def closed_port(monkeypatch):
    """An endpoint where nothing listens (no network at all: connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    _use_endpoint(monkeypatch, endpoint)
    return endpoint


def _use_endpoint(monkeypatch, endpoint):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", endpoint)  # both read at import: HF_ENDPOINT of this process
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "1")


@pytest.mark.parametrize("argv", [
    ["convert", "--teacher", "someone/teacher", "--out", "{tmp}/out"],
    ["generate", "--model", "someone/teacher", "--prompt", "a", "--base", "builtin:pixart", "--out", "{tmp}/x.png"],
    ["generate", "--model", "{student}", "--base", "someone/pipeline", "--prompt", "a", "--out", "{tmp}/x.png"],
    ["distill", "--config", "{recipe}", "--out", "{tmp}/run", "model.teacher=someone/teacher"],
], ids=["convert", "generate-model", "generate-base", "distill"])
def test_a_hub_that_never_answers_fails_in_seconds_with_one_line(silent_hub, argv, tmp_path, student, recipe, capsys):
    argv = [a.format(tmp=tmp_path, student=student, recipe=recipe) for a in argv]
    start = time.perf_counter()
    with within(20):
        assert main(argv) == 2
    assert time.perf_counter() - start < 10  # HF_HUB_ETAG_TIMEOUT=1 s, one request, no retries
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert silent_hub in lines[0] and "someone/" in lines[0] and "within 1 s" in lines[0]
    assert "local folder" in lines[0] and "HF_HUB_OFFLINE=1" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recipe.yaml"]


def test_no_network_at_all_fails_at_once(closed_port, tmp_path, capsys):
    with within(20):
        assert main(["convert", "--teacher", "someone/teacher", "--out", str(tmp_path / "out")]) == 2
    assert "Connection refused" in capsys.readouterr().err


def test_load_model_uses_the_bounded_hub_access(silent_hub):
    from lindit.errors import UserError
    from lindit.models import load_model

    with within(20), pytest.raises(UserError, match="within 1 s"):
        load_model("someone/teacher")


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """A Hugging Face cache holding ``lindit-test/tiny-pixart`` (the built-in teacher), used offline."""
    from huggingface_hub import constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--lindit-test--tiny-pixart"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(teacher_dir("pixart"), repo / "snapshots" / commit, ignore=shutil.ignore_patterns("*.json.*"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hub"


def test_a_hub_id_loads_from_the_cache_offline(hub_cache, tmp_path):
    assert main(["convert", "--teacher", "lindit-test/tiny-pixart", "--out", str(tmp_path / "student")]) == 0
    assert lindit.load(tmp_path / "student").lindit_config["method"] == "edit"


def test_a_hub_id_missing_from_the_cache_offline_is_one_line(hub_cache, tmp_path, capsys):
    with within(20):
        assert main(["convert", "--teacher", "lindit-test/other", "--out", str(tmp_path / "student")]) == 2
    line = capsys.readouterr().err.strip()
    assert "'lindit-test/other' is not in the local Hugging Face cache and HF_HUB_OFFLINE is set" in line


@pytest.mark.slow
def test_the_hub_endpoint_from_the_environment_is_bounded(tmp_path):
    """The same through a fresh ``lindit`` process configured only by HF_ENDPOINT / HF_HUB_ETAG_TIMEOUT."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)  # accepts (the kernel completes the handshake) and never answers
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{server.getsockname()[1]}", "HF_HUB_ETAG_TIMEOUT": "2"}
    env.pop("HF_HUB_OFFLINE", None)
    try:
        done = subprocess.run([sys.executable, "-m", "lindit.cli", "convert", "--teacher", "someone/teacher", "--out",
                               str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=120)
    finally:
        server.close()
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "within 2 s" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_errors_in_parallel_workers_are_one_line(tmp_path, student):
    """A user error inside ``generate --parallel`` workers comes back as one line (it printed two tracebacks)."""
    kv = tmp_path / "kv"
    assert main(["convert", "--teacher", str(teacher_dir("pixart")), "--method", "kv_compress", "--out", str(kv)]) == 0
    done = subprocess.run([sys.executable, "-m", "lindit.cli", "generate", "--model", str(kv), "--base", "builtin:pixart",
                           "--prompt", "a", "--steps", "1", "--parallel", "2", "--out", str(tmp_path / "x.png")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip() and "it/s]" not in line]
    assert len(lines) == 1 and "every image attention layer converted" in lines[0], done.stderr
