"""``make bench-gpu``'s plumbing, on a machine without a GPU: CUDA-event timing (with fake events), the
target's command line run on tiny presets, and the one-line refusal when no GPU is there."""

import json
import shlex
import subprocess
from pathlib import Path

import pytest
import torch

from lindit.cli import main
from lindit.eval import measure, timing
from test_bench_model import tiny_presets  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]


class FakeEvent:
    log: list = []

    def __init__(self, enable_timing=False):
        assert enable_timing, "timing events must be created with enable_timing=True"
        self.at = None

    def record(self):
        FakeEvent.log.append("record")
        self.at = len(FakeEvent.log)

    def synchronize(self):
        FakeEvent.log.append("event.synchronize")

    def elapsed_time(self, other):
        return 1000.0 * (other.at - self.at)  # ms; one "second" per logged step between the two records


@pytest.fixture
def fake_cuda(monkeypatch):
    FakeEvent.log = []
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: FakeEvent.log.append("synchronize"))
    return FakeEvent.log


def test_cuda_timing_uses_events_after_a_synchronisation(fake_cuda):
    seconds = timing.timed(lambda: fake_cuda.append("work"), torch.device("cuda"))
    assert fake_cuda == ["synchronize", "record", "work", "record", "event.synchronize"]
    assert seconds == 2.0  # the events' own clock (work and the second record between them), not the host's


def test_time_call_warms_up_then_times_each_run_by_events(fake_cuda):
    calls = []
    timing = measure.time_call(lambda: calls.append(1) or fake_cuda.append("work"), torch.device("cuda"),
                               warmup=2, repeats=3)
    assert len(calls) == 5 and timing.runs == 3
    first_record = fake_cuda.index("record")
    assert fake_cuda[:first_record].count("work") == 2 and "synchronize" in fake_cuda[:first_record]
    assert fake_cuda.count("event.synchronize") == 3


def _bench_gpu_argv() -> list[str]:
    out = subprocess.run(["make", "-n", "-s", "bench-gpu"], cwd=ROOT, capture_output=True, text=True, check=True)
    line = next(line for line in out.stdout.splitlines() if "lindit bench model" in line)
    return shlex.split(line)[1:]  # drop the executable


def _replace(argv: list[str], flag: str, values: list[str]) -> list[str]:
    i = argv.index(flag)
    j = i + 1
    while j < len(argv) and not argv[j].startswith("--"):
        j += 1
    return argv[: i + 1] + values + argv[j:]


def test_the_bench_gpu_target_runs_end_to_end_on_tiny_presets(tmp_path, tiny_presets):  # noqa: F811
    argv = _bench_gpu_argv()
    assert argv[:2] == ["bench", "model"] and "--device" in argv and argv[argv.index("--device") + 1] == "cuda"
    assert argv[argv.index("--dtype") + 1] == "bf16" and "--baseline" in argv
    assert argv[argv.index("--resolutions") + 1: argv.index("--resolutions") + 5] == ["1024", "2048", "4096", "8192"]
    for flag, values in (("--device", ["cpu"]), ("--presets", ["tiny-pixart", "tiny-sd3"]),
                         ("--methods", ["teacher", "edit", "mm_edit"]), ("--resolutions", ["64", "96"]),
                         ("--out", [str(tmp_path)]), ("--repeats", ["1"])):
        argv = _replace(argv, flag, values)
    assert main(argv) == 0
    data = json.loads((tmp_path / "bench.json").read_text())
    assert {c["dtype"] for c in data["cells"]} == {"bfloat16"}
    assert {(c["preset"], c["method"]) for c in data["cells"]} == {
        ("tiny-pixart", "teacher"), ("tiny-pixart", "edit"), ("tiny-sd3", "teacher"), ("tiny-sd3", "mm_edit")}
    assert (tmp_path / "bench.md").exists() and (tmp_path / "bench.png").exists()


def test_without_a_gpu_the_target_stops_at_once_with_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = _replace(_bench_gpu_argv(), "--out", [str(tmp_path / "gpu")])
    assert main(argv) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and "CUDA is not available" in errors[0]
    assert not (tmp_path / "gpu").exists()
