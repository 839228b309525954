"""Measuring honestly: wall-clock medians, peak memory, FLOPs, and the machine's own matmul ceiling."""

from __future__ import annotations

import os
import platform
import statistics
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from .timing import timed


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    median_s: float
    min_s: float
    runs: int

    def as_dict(self):
        return asdict(self)


def time_call(fn, device: torch.device, warmup: int = 1, repeats: int = 5, budget_s: float = 20.0) -> Timing:
    """Median wall-clock seconds of ``fn()`` after ``warmup`` calls.

    Runs up to ``repeats`` times but stops early (after at least 3 runs) once ``budget_s`` is spent, so
    slow cells cost a few runs and fast ones get many. On CUDA each run is timed by CUDA events.
    """
    for _ in range(warmup):
        fn()
    synchronize(device)
    times, spent = [], 0.0
    while len(times) < repeats and (len(times) < 3 or spent < budget_s):
        times.append(timed(fn, device))
        spent += times[-1]
    return Timing(statistics.median(times), min(times), len(times))


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _PeakRSS:
    """Samples this process's resident set every ``interval`` seconds in a background thread."""

    def __init__(self, interval: float = 0.002):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            self._stop.wait(self.interval)

    def __enter__(self):
        self.base = self.peak = _rss_bytes()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def _set_mmap_threshold(nbytes: int, trim: bool = False) -> None:
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, nbytes)
        libc.mallopt(_M_TRIM_THRESHOLD, nbytes)
        if trim:
            libc.malloc_trim(0)  # hand retained free memory back, so the baseline is what is live
    except (OSError, AttributeError):
        pass  # not glibc: RSS growth may under-report after warm-up


@contextmanager
def _rss_tracks_tensors():
    """Make glibc serve blocks over 1 MB with mmap and unmap them on free, so RSS follows live tensors.

    By default glibc raises its mmap threshold (up to 32 MB) after large frees and keeps later blocks in
    its heap: calls after the first reuse retained memory and RSS growth reads as zero. Afterwards the
    threshold is set to glibc's own ceiling of 32 MB, the steady state timing runs see.
    """
    _set_mmap_threshold(1 << 20, trim=True)
    try:
        yield
    finally:
        _set_mmap_threshold(32 << 20)


def peak_memory_bytes(fn, device: torch.device) -> int:
    """Extra memory ``fn()`` needs at its peak: max allocated on CUDA, resident-set growth on CPU.

    On CPU the resident set is sampled every 2 ms, so very short-lived peaks can be missed.
    """
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    if not os.path.exists("/proc/self/statm"):
        return -1  # no cheap RSS source on this OS; reported as unknown
    with _rss_tracks_tensors(), _PeakRSS() as rss:
        fn()
    return rss.peak - rss.base


def timed_peak(fn, device: torch.device) -> tuple[float, int]:
    """One call of ``fn``: (seconds, peak extra bytes), for cells too slow to run twice."""
    if device.type == "cuda":
        from .timing import timed

        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        seconds = timed(fn, device)
        return seconds, torch.cuda.max_memory_allocated(device) - base
    with _rss_tracks_tensors(), _PeakRSS() as rss:
        start = time.perf_counter()
        fn()
        seconds = time.perf_counter() - start
    return seconds, rss.peak - rss.base


def count_flops(fn) -> int:
    """FLOPs of ``fn()`` by torch's counter, under the MATH SDPA backend (the fused CPU kernel is invisible)."""
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.no_grad():
        fn()
    return counter.get_total_flops()


def matmul_gflops(device: torch.device, dtype: torch.dtype, n: int = 2048, budget_s: float = 3.0) -> float:
    """This machine's dense matmul throughput (GFLOP/s): the ceiling any block can approach.

    Timed on (n, n) matrices, or on smaller ones where a (n, n) product would not fit ``budget_s``: bfloat16
    on a CPU without bf16 instructions (AVX2 only) runs near 1 GFLOP/s, where five 2048 products take minutes.
    """
    size = _matmul_size(device, dtype, n, budget_s)
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    timing = time_call(lambda: torch.mm(a, b), device, warmup=2, repeats=10, budget_s=budget_s)
    return 2 * size**3 / timing.median_s / 1e9


def _matmul_size(device: torch.device, dtype: torch.dtype, n: int, budget_s: float, probe: int = 256) -> int:
    """The largest of probe, 2 probe, 4 probe, ... up to n whose five products (two warm-ups, three timed
    runs: time_call's least) fit ``budget_s``, predicted from one timed product of the probe size."""
    if n <= probe:
        return n
    a = torch.randn(probe, probe, device=device).to(dtype)
    torch.mm(a, a)  # first call: allocation and kernel selection
    seconds = timed(lambda: torch.mm(a, a), device)
    size = probe
    while size < n:
        bigger = min(2 * size, n)
        if 5 * seconds * (bigger / probe) ** 3 > budget_s:
            break
        size = bigger
    return size


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict:
    """What the numbers were measured on."""
    info = {
        "device": str(device),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def resolve_device(name: str | None) -> torch.device:
    """``auto`` (or None) picks CUDA when present; anything else must be a device torch accepts."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = parse_device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r} requested but MPS is not available; use --device cpu")
    return device


def parse_device(name: str | torch.device) -> torch.device:
    """``name`` as a device lindit runs on (cpu, cuda, cuda:N, mps), present or not; ValueError otherwise."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {name!r} is not supported here; use auto, cpu, cuda, cuda:N or mps")
    return device


