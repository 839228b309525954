"""``lindit bench parallel``: time per forward of a sequence-parallel model against the process count.

A model with ``--blocks`` blocks of the preset (random weights, the same on every process) is run on
P = 1, 2, ... processes; each reports the bytes it put into collectives during one forward, divided by
the number of blocks (the per-layer communication, which for linear attention does not grow with the
image).
"""

from __future__ import annotations

import copy
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from ..dtypes import resolve_dtype
from ..parallel.shard import CommCounter
from ..parallel import enable_sequence_parallel, launch
from .model_forward import materialize, meta_model
from .presets import PRESETS


def _model(preset_name: str, method: str, blocks: int, dtype) -> nn.Module:
    full = meta_model(PRESETS[preset_name], method)
    kept = full.transformer_blocks[:blocks]
    full.transformer_blocks = nn.ModuleList(kept)
    torch.manual_seed(0)  # identical weights on every process
    return materialize(copy.deepcopy(full), torch.device("cpu"), dtype)


def _worker(rank: int, world: int, cfg: dict, out: str) -> None:
    dtype = resolve_dtype(cfg["dtype"])
    model = _model(cfg["preset"], cfg["method"], cfg["blocks"], dtype)
    preset = PRESETS[cfg["preset"]]
    inputs = preset.inputs(cfg["height"] // preset.vae_factor, cfg["width"] // preset.vae_factor, "cpu", dtype)
    if world > 1:
        enable_sequence_parallel(model)

    def forward():
        with torch.no_grad():
            model(**inputs, return_dict=False)
        if world > 1:
            dist.barrier()

    forward()  # warm-up
    CommCounter.bytes = 0
    times = []
    for _ in range(cfg["repeats"]):
        start = time.perf_counter()
        forward()
        times.append(time.perf_counter() - start)
    if rank == 0:
        sent = CommCounter.bytes / cfg["repeats"]
        Path(out).write_text(json.dumps({"processes": world, "forward_s": statistics.median(times),
                                         "bytes_per_layer": sent / cfg["blocks"], "threads": torch.get_num_threads()}))


def run(preset: str, method: str, height: int, width: int, processes, blocks: int = 2, dtype: str = "float32",
        repeats: int = 3) -> list[dict]:
    """One result per process count: forward seconds (median) and bytes sent per layer by process 0."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
    cfg = dict(preset=preset, method=method, height=height, width=width, blocks=blocks, dtype=dtype, repeats=repeats)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for p in processes:
            out = Path(tmp) / f"p{p}.json"
            if p == 1:
                _worker(0, 1, cfg, str(out))
            else:
                launch(_worker, p, cfg, str(out))
            results.append(json.loads(out.read_text()))
    return results
