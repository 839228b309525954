"""Device plumbing of latency measurement: wall-clock timing that is honest on GPUs.

On CUDA a timed call is bracketed by CUDA events after a synchronisation (kernels are asynchronous: a host
clock alone would time the launch), with warm-up calls first; on the CPU it is ``time.perf_counter``.
"""

from __future__ import annotations

import time

import torch


def timed(fn, device: torch.device) -> float:
    """Seconds of one call of ``fn``: CUDA events on a GPU (the device's own clock), perf_counter elsewhere."""
    if device.type != "cuda":
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    torch.cuda.synchronize(device)
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    begin.record()
    fn()
    end.record()
    end.synchronize()
    return begin.elapsed_time(end) / 1e3
