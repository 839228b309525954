"""Device plumbing of the benchmarks: dtype names, and wall-clock timing that is honest on GPUs.

On CUDA a timed call is bracketed by CUDA events after a synchronisation (kernels are asynchronous: a host
clock alone would time the launch), with warm-up calls first; on the CPU it is ``time.perf_counter``.
"""

from __future__ import annotations

import argparse
import time

import torch

DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16",
                 "float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def dtype_name(text: str) -> str:
    """argparse type: a dtype name or alias (bf16, fp16, fp32) -> its torch name."""
    if text not in DTYPE_ALIASES:
        raise argparse.ArgumentTypeError(f"unknown dtype {text!r}; valid: float32 (fp32), bfloat16 (bf16), "
                                         "float16 (fp16)")
    return DTYPE_ALIASES[text]


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
