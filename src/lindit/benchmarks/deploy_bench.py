"""Latency of exported models in onnxruntime against eager PyTorch, teacher and students, on this machine.

    lindit deploy bench --sizes 512 1024 --blocks 2 --out bench-output/deploy

Models are the published sizes of ``lindit.benchmarks.presets`` with random weights (latency does not depend
on values). ``--blocks K`` keeps the first K transformer blocks so that a sweep runs in minutes on a
small CPU; such numbers are labelled "K of N blocks" and are not full-model latencies. Each cell exports
the model to ONNX, checks it against eager (see ``lindit.deploy.export``), then times eager and
onnxruntime (and any ``--extras``) round-robin in the same process, so that their ratios hold on a
shared, noisy machine even when the absolute times drift. onnxruntime sessions run without their memory
arena (each returns its working memory after a run), since several of them are alive in one cell.
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..eval.report import markdown_table
from ..integrations.diffusers.families import FAMILIES
from .presets import PRESETS

# preset -> its family's linear-time student (the family's default method: EDiT, MM-EDiT, LiT)
STUDENTS = {name: FAMILIES[preset.family].default_method for name, preset in PRESETS.items()}
VAE_FACTOR = 8  # all three families use an 8x VAE


def preset_model(preset: str, method: str, blocks: int | None = None, dtype=torch.float32) -> nn.Module:
    """A published-size teacher (``method="teacher"``) or student with random weights, its first
    ``blocks`` blocks only when given (the rest of the model is unchanged)."""
    from .model_forward import materialize, meta_model

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
    full = meta_model(PRESETS[preset], method)
    depth = len(full.transformer_blocks)
    if blocks is not None:
        if not 1 <= blocks <= depth:
            raise ValueError(f"--blocks must be between 1 and {depth} for {preset}, got {blocks}")
        full.transformer_blocks = nn.ModuleList(full.transformer_blocks[:blocks])
    torch.manual_seed(0)
    model = materialize(copy.deepcopy(full), torch.device("cpu"), dtype)
    model.lindit_depth = depth  # the published depth, for labels
    return model


@dataclass
class LatencyCell:
    preset: str
    method: str
    size_px: int
    tokens: int
    blocks: str  # "2 of 28" or "28"
    eager_s: float
    onnxruntime_s: float
    max_abs_error: float
    tolerance: float
    passed: bool
    extra_s: dict = field(default_factory=dict)  # "int8-dynamic@torch.ao" / "ort-int8" -> median seconds

    def as_dict(self) -> dict:
        return asdict(self)


def eager_call(model: nn.Module, inputs: dict):
    """A no-argument function running one eager forward of ``model`` on ``inputs``."""
    from ..deploy.export import ExportWrapper

    wrapper = ExportWrapper(model.eval(), list(inputs))

    def call():
        with torch.no_grad():
            wrapper(*inputs.values())

    return call


def interleaved_medians(calls: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each no-argument call, run round-robin after one warm-up each: on a shared
    machine, load from other processes then hits every variant alike instead of whichever ran last."""
    for call in calls.values():
        call()
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def eager_vs_runtime(model: nn.Module, runner, inputs: dict, repeats: int) -> tuple[float, float]:
    """Median seconds of one eager forward and one ``runner(inputs)`` call, interleaved."""
    t = interleaved_medians({"eager": eager_call(model, inputs), "runtime": lambda: runner(inputs)}, repeats)
    return t["eager"], t["runtime"]


def _quantized_call(model: nn.Module, spec: str, path: Path, inputs: dict):
    """One eager forward of ``model`` quantized by ``spec`` (``scheme`` or ``scheme@backend``)."""
    from ..deploy.fidelity import parse_scheme
    from ..deploy.quantize import quantize

    scheme, backend = parse_scheme(spec)
    return eager_call(quantize(model, scheme, backend=backend), inputs)


def _ort_int8_call(model: nn.Module, spec: str, path: Path, inputs: dict):
    """One onnxruntime call of the exported file after onnxruntime's own dynamic int8 quantization of its
    MatMul / Gemm weights (per channel)."""
    from ..deploy.extras import require
    from ..deploy.runtime import onnx_runner

    onnx = require("onnx", "onnxruntime int8 quantization")
    quantization = require("onnxruntime.quantization", "onnxruntime int8 quantization")
    graph = onnx.load(str(path))
    del graph.graph.value_info[:]  # the quantizer re-infers shapes and rejects the exporter's annotations
    plain, int8 = path.with_name(path.stem + ".plain.onnx"), path.with_name(path.stem + ".int8.onnx")
    onnx.save(graph, str(plain))
    quantization.quantize_dynamic(plain, int8, per_channel=True, op_types_to_quantize=["MatMul", "Gemm"],
                                  weight_type=quantization.QuantType.QInt8)
    run = onnx_runner(int8, keep_memory=False)
    return lambda: run(inputs)


EXTRA_CALLS = {"ort-int8": _ort_int8_call}  # anything else names a quantization scheme run eagerly


def bench_cell(preset: str, method: str, size: int, blocks: int | None, repeats: int, workdir: Path,
               extras: tuple[str, ...] = ()) -> LatencyCell:
    """Export, check and time one (preset, model, size); ``extras`` adds quantized timings."""
    from ..deploy.export import example_inputs, export_model
    from ..deploy.low_memory import release_memory
    from ..deploy.runtime import onnx_runner

    model = preset_model(preset, method, blocks)
    latent = (size // VAE_FACTOR, size // VAE_FACTOR)
    path = workdir / f"{preset}-{method}-{size}.onnx"
    result = export_model(model, "onnx", path, latent)
    inputs = example_inputs(model, latent, seed=2)
    run = onnx_runner(path, keep_memory=False)  # several sessions live per cell
    calls = {"eager": eager_call(model, inputs), "onnxruntime": lambda: run(inputs)}
    calls |= {spec: EXTRA_CALLS.get(spec, _quantized_call)(model, spec, path, inputs) for spec in extras}
    times = interleaved_medians(calls, repeats)
    patch = int(model.config.patch_size)
    label = f"{blocks} of {model.lindit_depth}" if blocks else str(model.lindit_depth)
    for f in workdir.glob(f"{preset}-{method}-{size}*"):
        f.unlink()  # keep the disk clean between cells: full-width exports are hundreds of MB
    del model, calls, run
    release_memory()  # onnxruntime arenas and traced graphs of this cell are gone before the next one
    return LatencyCell(preset, method, size, (latent[0] // patch) * (latent[1] // patch), label, times["eager"],
                       times["onnxruntime"], result.max_abs_error, result.tolerance, result.passed,
                       {spec: times[spec] for spec in extras})


def markdown(cells: list[LatencyCell], command: str, machine: dict) -> str:
    extras = list(cells[0].extra_s) if cells else []
    rows = [[c.preset, c.method, f"{c.size_px}", f"{c.tokens}", c.blocks, f"{c.eager_s:.3f}", f"{c.onnxruntime_s:.3f}",
             f"{c.eager_s / c.onnxruntime_s:.2f}x"]
            + [f"{c.extra_s[e]:.3f} ({c.eager_s / c.extra_s[e]:.2f}x)" for e in extras]
            + [f"{c.max_abs_error:.2g} (tol {c.tolerance:.2g})"] for c in cells]
    table = markdown_table(["preset", "model", "px", "tokens", "blocks", "eager s", "onnxruntime s", "eager / ORT"]
                           + [f"{e} s (eager / it)" for e in extras] + ["ORT max abs err"], rows)
    return (f"Command: `{command}`\n\nMachine: {machine['cpu']}, {machine['torch_threads']} threads, torch "
            f"{machine['torch']}; batch 1, float32, random weights at the published width.\n\n{table}")


def main(argv: list[str] | None = None) -> int:
    """``python -m lindit.benchmarks.deploy_bench ARGS`` (was ``lindit.deploy.bench``), kept for old scripts:
    runs ``lindit deploy bench ARGS``."""
    from ..cli import forward

    return forward(["deploy", "bench"], argv)


if __name__ == "__main__":
    raise SystemExit(main())
