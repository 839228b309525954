"""``lindit bench model``: one transformer forward per (family, method, resolution), EDiT Table 3 style.

Every timed model is built by ``lindit.convert`` from a randomly initialised teacher at its published
size. On a small machine a full-depth forward at 4096 px takes many minutes, so by default each distinct
block type is built and timed once and the full depth is an *estimate*:

    forward ~= overhead + sum over blocks of the time of that block's type,

where the overhead (patch embedding, conditioning, final layer) is the time of a one-block model minus
that block's time. ``--layers full`` times the real full-depth forward instead (no estimate).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from accelerate import init_empty_weights
from torch import nn

from ..integrations.diffusers import convert, token_grid
from ..integrations.diffusers.positions import InterpolatingPatchEmbed
from .measure import count_flops, peak_memory_bytes, time_call
from .presets import Preset


@dataclass
class ModelCell:
    preset: str
    method: str
    height_px: int
    width_px: int
    tokens: int
    estimate: bool = True
    forward_s: float | None = None  # full-depth forward (estimated unless estimate is False)
    block_s: dict = field(default_factory=dict)  # block type -> median seconds
    block_gflop: dict = field(default_factory=dict)  # block type -> GFLOP per block
    block_peak_mb: dict = field(default_factory=dict)
    overhead_s: float | None = None
    skipped: str | None = None

    def as_dict(self) -> dict:
        return self.__dict__.copy()

    @property
    def main_block(self) -> str | None:
        """The block type that occurs most often (the one compared across methods)."""
        return max(self.block_s, key=lambda k: self.block_s[k]) if self.block_s else None


def meta_model(preset: Preset, method: str) -> nn.Module:
    """The full-depth model (teacher or converted) with parameters on the meta device."""
    with init_empty_weights(include_buffers=False):
        teacher = preset.model_class.from_config(preset.config)
        return teacher if method == "teacher" else convert(teacher, method)


def materialize(module: nn.Module, device, dtype) -> nn.Module:
    """Give meta parameters real random values (N(0, 0.02), then each layer's own reset_parameters)."""
    for sub in module.modules():
        for name, p in list(sub._parameters.items()):
            if p is not None and p.is_meta:
                real = torch.empty(p.shape, device=device, dtype=torch.float32).normal_(0, 0.02)
                sub._parameters[name] = nn.Parameter(real, requires_grad=False)
    for sub in module.modules():
        if hasattr(sub, "reset_parameters") and not isinstance(sub, (nn.LayerNorm, nn.GroupNorm)):
            sub.reset_parameters()
    return nn.Module.to(module, device=device, dtype=dtype).eval()  # nn's to(): no diffusers dtype warnings


def block_types(model: nn.Module) -> list[str]:
    """A type label per block: blocks with the same structure share one (e.g. dual vs plain in SD3.5)."""
    reprs, labels = {}, []
    for block in model.transformer_blocks:
        key = repr(block)
        reprs.setdefault(key, f"block{len(reprs)}")
        labels.append(reprs[key])
    return labels


def one_block_model(full: nn.Module, index: int, device, dtype) -> nn.Module:
    """A copy of ``full`` keeping only block ``index``, materialised on ``device``.

    The copy is taken of the whole model with its block list swapped, so the block's adapters and the
    model's grid hook are copied together and stay connected.
    """
    blocks = full.transformer_blocks
    full.transformer_blocks = nn.ModuleList([blocks[index]])
    try:
        stub = copy.deepcopy(full)
    finally:
        full.transformer_blocks = blocks
    return materialize(stub, device, dtype)


def capture_block_inputs(model: nn.Module, inputs: dict):
    """Run ``model`` once and return the (args, kwargs) its first block was called with."""
    captured = {}

    def hook(module, args, kwargs):
        captured["call"] = (args, kwargs)

    handle = model.transformer_blocks[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            model(**inputs, return_dict=False)
    finally:
        handle.remove()
    return captured["call"]


@dataclass
class ModelSettings:
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32
    layers: str = "1"  # "1": one block per type + estimate; "full": the real full-depth forward
    max_seconds: float | None = None
    repeats: int = 3


QUADRATIC = ("teacher", "kv_compress")


def _too_small_table(preset: Preset, model: nn.Module, height: int, width: int) -> str | None:
    """The teacher SD3 crops its positional table: larger grids cannot run (EDiT Table 3's '-'). Converted
    models interpolate the table (``allow_any_resolution``) and run."""
    max_size = preset.config.get("pos_embed_max_size")
    p = preset.config["patch_size"]
    if isinstance(getattr(model, "pos_embed", None), InterpolatingPatchEmbed):
        return None
    if max_size and max(height, width) // p > max_size:
        return f"positional-embedding table {max_size}x{max_size} < grid {height // p}x{width // p}"
    return None


def _predict(done: list[ModelCell], method: str, tokens: int) -> float | None:
    """Seconds of one timed run of this cell's blocks, from the same method at the largest smaller size."""
    prior = [c for c in done if c.method == method and c.block_s and c.tokens < tokens]
    if not prior:
        return None
    last = max(prior, key=lambda c: c.tokens)
    exponent = 2.0 if method in QUADRATIC else 1.0
    return sum(last.block_s.values()) * (tokens / last.tokens) ** exponent


class _Timer:
    """Times one block type of one model at one size."""

    def __init__(self, stub: nn.Module, inputs: dict, s: ModelSettings):
        self.stub, self.inputs, self.s = stub, inputs, s
        self.args, self.kwargs = capture_block_inputs(stub, inputs)
        self.block = stub.transformer_blocks[0]
        self.grid = getattr(stub, "lindit_grid", None)

    def _call_block(self):
        with torch.no_grad():
            if self.grid is None:
                self.block(*self.args, **self.kwargs)
            else:
                with token_grid(self.stub, self.grid.current()):
                    self.block(*self.args, **self.kwargs)

    def _call_model(self):
        with torch.no_grad():
            self.stub(**self.inputs, return_dict=False)

    def measure(self, with_overhead: bool):
        block = time_call(self._call_block, self.s.device, warmup=1, repeats=self.s.repeats).median_s
        overhead = None
        if with_overhead:  # the one-block model minus its block: embedding, conditioning, final layer
            model = time_call(self._call_model, self.s.device, warmup=0, repeats=self.s.repeats).median_s
            overhead = max(model - block, 0.0)
        flops = count_flops(self._call_block)
        peak = peak_memory_bytes(self._call_block, self.s.device)
        return block, overhead, flops / 1e9, (None if peak < 0 else peak / 2**20)


def _type_plan(full: nn.Module) -> tuple[dict[str, int], dict[str, int]]:
    """Block type -> index of its first block, and block type -> how many blocks have it."""
    labels = block_types(full)
    first, counts = {}, {}
    for i, label in enumerate(labels):
        first.setdefault(label, i)
        counts[label] = counts.get(label, 0) + 1
    return first, counts


def bench_method(preset: Preset, method: str, sizes, s: ModelSettings, done: list[ModelCell], progress=None):
    """Cells for one method of one preset at every size (height_px, width_px); appends to ``done``."""
    full = meta_model(preset, method)
    first, counts = _type_plan(full)
    stubs = {}
    for hp, wp in sizes:
        h, w = hp // 8, wp // 8
        cell = ModelCell(preset.name, method, hp, wp, (h // 2) * (w // 2), estimate=s.layers != "full")
        cell.skipped = _too_small_table(preset, full, h, w)
        predicted = _predict(done, method, cell.tokens)
        if cell.skipped is None and s.max_seconds is not None and predicted and predicted > s.max_seconds:
            cell.skipped = f"predicted {predicted:.0f} s per run > --max-seconds {s.max_seconds:g}"
        if cell.skipped is None:
            inputs = preset.inputs(h, w, s.device, s.dtype)
            if s.layers == "full":
                _time_full(cell, full, inputs, s)
            else:
                _time_blocks(cell, full, first, counts, stubs, inputs, s)
        done.append(cell)
        if progress is not None:
            progress.update()
    return done


def _time_blocks(cell, full, first, counts, stubs, inputs, s) -> None:
    for i, (label, index) in enumerate(first.items()):
        if label not in stubs:
            stubs[label] = one_block_model(full, index, s.device, s.dtype)
        block, overhead, gflop, peak = _Timer(stubs[label], inputs, s).measure(with_overhead=i == 0)
        cell.block_s[label], cell.block_gflop[label], cell.block_peak_mb[label] = block, gflop, peak
        cell.overhead_s = overhead if i == 0 else cell.overhead_s
    cell.forward_s = cell.overhead_s + sum(cell.block_s[k] * counts[k] for k in counts)


def _time_full(cell, full, inputs, s) -> None:
    model = materialize(copy.deepcopy(full), s.device, s.dtype)

    def call():
        with torch.no_grad():
            model(**inputs, return_dict=False)

    cell.forward_s = time_call(call, s.device, warmup=1, repeats=s.repeats).median_s
    peak = peak_memory_bytes(call, s.device)
    cell.block_peak_mb["model"] = None if peak < 0 else peak / 2**20
