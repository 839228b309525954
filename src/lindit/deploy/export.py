"""Export a transformer to ONNX or torch.export at a fixed token grid, then check it against eager PyTorch.

A converted model reads its token grid from the latent in its forward (``model.lindit_grid``). Exporters
trace Python, so that runs during tracing and the grid of the example latent becomes a constant of the
graph: an exported model serves exactly the (height, width) it was exported at. ``ExportWrapper`` gives
the exporters what they need (positional tensors in, one tensor out) and calls the model normally, so
every lindit layer sees the same grid as in eager mode.

The check runs the *saved file* (onnxruntime on CPU, or ``torch.export.load``) on inputs drawn with a
different seed than the tracing ones (a value baked into the graph would show) and requires
max |exported - eager| <= atol + rtol * max |eager| (``TOLERANCES``, per dtype).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ..integrations.diffusers.families import family_of
from ..io import atomic_path
from .extras import require

# dtype -> (atol, rtol): exporters reorder and fuse ops, which moves the last bits of each result
TOLERANCES = {torch.float32: (1e-4, 1e-3), torch.bfloat16: (2e-2, 2e-2), torch.float16: (2e-3, 1e-2)}
FORMATS = ("onnx", "torch-export")
EXTERNAL_DATA_BYTES = 1 << 30  # ONNX protobufs stop at 2 GB: larger weights go to FILE.data


def example_inputs(model: nn.Module, latent_hw: tuple[int, int], prompt_tokens: int | None = None,
                   batch: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random inputs of one forward at a latent of (H, W) = latent_hw, in the model's parameter dtype
    (``Family.example_inputs``; prompt length default: the family's published one)."""
    dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
    return family_of(model).example_inputs(model.config, latent_hw, batch, prompt_tokens, dtype=dtype,
                                           generator=torch.Generator().manual_seed(seed))


class ExportWrapper(nn.Module):
    """forward(*tensors in ``names`` order) -> the model's prediction (B, C_out, H, W)."""

    def __init__(self, model: nn.Module, names: list[str]):
        super().__init__()
        self.model, self.names = model, list(names)
        self.extra = family_of(model).static_kwargs

    def forward(self, *tensors):
        kwargs = dict(zip(self.names, tensors))
        return self.model(**kwargs, **self.extra, return_dict=False)[0]  # the grid is read here


@dataclass
class ExportResult:
    path: str
    format: str
    latent_hw: tuple[int, int]
    max_abs_error: float
    max_abs_reference: float
    atol: float
    rtol: float
    passed: bool

    @property
    def tolerance(self) -> float:
        return self.atol + self.rtol * self.max_abs_reference

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        verdict = "ok" if self.passed else "FAILED"
        return (f"{self.format} check {verdict}: max |exported - eager| = {self.max_abs_error:.3g} "
                f"(tolerance {self.tolerance:.3g} = {self.atol:g} + {self.rtol:g} x max |eager| "
                f"{self.max_abs_reference:.3g})")


def check_exportable(model: nn.Module, fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; supported: {', '.join(FORMATS)}")
    quant = getattr(model, "lindit_quantization", None)
    if quant:  # ONNX would fold the integer weights back to float; .pt2 would pickle torchao's tensors
        raise ValueError(f"cannot export a quantized model ({quant['scheme']}); export the float model (quantize "
                         "an ONNX file with onnxruntime.quantization, or run the quantized model in PyTorch)")
    family_of(model)


def trace(model: nn.Module, inputs: dict[str, torch.Tensor]):
    """torch.export of the model at these inputs' shapes (the grid becomes a constant)."""
    wrapper = ExportWrapper(model.eval(), list(inputs))
    with torch.no_grad():
        return torch.export.export(wrapper, tuple(inputs.values()), strict=False)


def drop_noop_squeezes(program) -> int:
    """Remove ``squeeze(dim)`` of dims that are not 1: no-ops in PyTorch, errors in ONNX (PixArt's
    ``hidden_states.squeeze(1)`` after ``proj_out``). Returns how many were removed."""
    graph, removed = program.graph_module.graph, 0
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in (torch.ops.aten.squeeze.dim, torch.ops.aten.squeeze.dims):
            continue
        shape = node.args[0].meta["val"].shape
        dims = node.args[1] if isinstance(node.args[1], (list, tuple)) else [node.args[1]]
        if all(shape[d] != 1 for d in dims):
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
            removed += 1
    program.graph_module.recompile()
    return removed


def _save_onnx(program, inputs: dict, out: Path, model: nn.Module) -> None:
    require("onnxscript", "ONNX export")
    drop_noop_squeezes(program)
    big = sum(p.numel() * p.element_size() for p in model.parameters()) > EXTERNAL_DATA_BYTES
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:  # FILE.data (large models) is named inside FILE, so both are written under their final names
        with warnings.catch_warnings():  # torch's own pytree deprecation notice, not actionable here
            warnings.simplefilter("ignore", FutureWarning)
            torch.onnx.export(program, tuple(inputs.values()), str(tmp / out.name), dynamo=True, external_data=big,
                              input_names=list(inputs), output_names=["sample"], verbose=False)
        for f in sorted(tmp.iterdir(), key=lambda p: p.suffix == ".onnx"):  # data first, the graph last
            os.replace(f, out.parent / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _save_torch_export(program, inputs: dict, out: Path, model: nn.Module) -> None:
    with atomic_path(out, suffix=".pt2") as tmp:
        torch.export.save(program, str(tmp))


SAVERS = {"onnx": _save_onnx, "torch-export": _save_torch_export}


def export_model(model: nn.Module, fmt: str, out: str | Path, latent_hw: tuple[int, int],
                 prompt_tokens: int | None = None, batch: int = 1) -> ExportResult:
    """Export ``model`` at latent size ``latent_hw`` (pixels / VAE factor) to ``out``, then verify the file.

    fmt: ``onnx`` (checked in onnxruntime, CPU) or ``torch-export`` (a .pt2 archive, checked with
    ``torch.export.load``). Returns the measured error and the tolerance; raises nothing when the check
    fails (``result.passed`` says so), so callers decide.
    """
    check_exportable(model, fmt)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    inputs = example_inputs(model, latent_hw, prompt_tokens, batch, seed=0)
    SAVERS[fmt](trace(model, inputs), inputs, out, model)
    return verify(model, fmt, out, latent_hw, prompt_tokens, batch)


def verify(model: nn.Module, fmt: str, path: str | Path, latent_hw: tuple[int, int],
           prompt_tokens: int | None = None, batch: int = 1) -> ExportResult:
    """Run the exported file and eager ``model`` on fresh inputs (seed 1) and compare."""
    from .runtime import load_runner

    inputs = example_inputs(model, latent_hw, prompt_tokens, batch, seed=1)
    with torch.no_grad():
        reference = ExportWrapper(model.eval(), list(inputs))(*inputs.values()).float()
    exported = load_runner(fmt, path)(inputs).float()
    same_shape = exported.shape == reference.shape
    error = (exported - reference).abs().max().item() if same_shape else float("inf")
    scale = reference.abs().max().item()
    atol, rtol = TOLERANCES[inputs["hidden_states"].dtype]
    return ExportResult(str(path), fmt, tuple(latent_hw), error, scale, atol, rtol, error <= atol + rtol * scale)
