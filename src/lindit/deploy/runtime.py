"""Running exported files: onnxruntime sessions (CPU) and torch.export programs, one calling convention.

``load_runner(format, path)`` returns ``run(inputs: dict[str, Tensor]) -> Tensor``. ONNX sessions use as
many threads as torch does, so latency comparisons with eager PyTorch are like for like.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from .extras import require


def onnx_runner(path: str | Path, threads: int | None = None, keep_memory: bool = True):
    """An onnxruntime CPU session over ``path``; ``run(inputs)`` feeds inputs by name.

    ``keep_memory=False`` turns off onnxruntime's CPU arena, so a session returns its working memory after
    each run instead of keeping its peak (several GB for softmax attention at 1024 px) for the next one.
    """
    ort = require("onnxruntime", "running ONNX models")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.enable_cpu_mem_arena = keep_memory
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        feed = {n: inputs[n].detach().cpu().numpy() for n in names}
        return torch.from_numpy(session.run(None, feed)[0])

    return run


def torch_export_runner(path: str | Path):
    """The program saved by ``torch.export.save`` (plain tensors only: nothing is unpickled)."""
    with warnings.catch_warnings():  # torch's own pytree deprecation notice, not actionable here
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.export.load(str(path)).module()

    def run(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.no_grad():
            return module(*inputs.values())

    return run


RUNNERS = {"onnx": onnx_runner, "torch-export": torch_export_runner}


def load_runner(fmt: str, path: str | Path):
    if fmt not in RUNNERS:
        raise ValueError(f"unknown export format {fmt!r}; supported: {', '.join(RUNNERS)}")
    return RUNNERS[fmt](path)
