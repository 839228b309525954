"""``lindit bench model``: one transformer forward per (family, method, resolution), EDiT Table 3 style.

Every timed model is built by ``lindit.convert`` from a randomly initialised teacher at its published
size. On a small machine a full-depth forward at 4096 px takes many minutes, so by default each distinct
block type is built and timed once and the full depth is an *estimate*:

    forward ~= overhead + sum over blocks of the time of that block's type,

where the overhead (patch embedding, conditioning, final layer) is the time of a one-block model minus
that block's time. ``--layers full`` times the real full-depth forward instead (no estimate).
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field

import torch
from accelerate import init_empty_weights
from torch import nn
from torch.utils._pytree import tree_map

from ..integrations.diffusers import convert, token_grid
from ..integrations.diffusers.families import FAMILIES
from ..methods import method_variant
from ..integrations.diffusers.positions import InterpolatingPatchEmbed
from ..eval.measure import count_flops, peak_memory_bytes, time_call, timed_peak
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
    dtype: str = "float32"
    compile_s: dict = field(default_factory=dict)  # block type -> seconds of the first (compiling) call

    def as_dict(self) -> dict:
        return self.__dict__.copy()

    @property
    def main_block(self) -> str | None:
        """The block type that occurs most often (the one compared across methods)."""
        return max(self.block_s, key=lambda k: self.block_s[k]) if self.block_s else None


def meta_model(preset: Preset, method: str) -> nn.Module:
    """The full-depth model (teacher or converted ``method``, a name or variant) on the meta device."""
    name, options = method_variant(method)
    with init_empty_weights(include_buffers=False):
        teacher = preset.model_class.from_config(preset.config)
        return teacher if name == "teacher" else convert(teacher, name, **options)


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
    """A copy of ``full`` keeping only block ``index``, materialised on ``device`` (device None: left on meta).

    The copy is taken of the whole model with its block list swapped, so the block's lindit layers and the
    model's token grid are copied together and stay connected.
    """
    blocks = full.transformer_blocks
    full.transformer_blocks = nn.ModuleList([blocks[index]])
    try:
        stub = copy.deepcopy(full)
    finally:
        full.transformer_blocks = blocks
    return stub if device is None else materialize(stub, device, dtype)


class _Captured(Exception):
    """Raised by the capture hook: the block's inputs are known, the rest of the forward is not needed."""


def capture_block_inputs(model: nn.Module, inputs: dict):
    """The (args, kwargs) the first block of ``model`` is called with. The forward stops at the block, so a
    block that takes ten minutes at 4096 px is not run just to learn its inputs."""
    captured = {}

    def hook(module, args, kwargs):
        captured["call"] = (args, kwargs)
        raise _Captured

    handle = model.transformer_blocks[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            model(**inputs, return_dict=False)
    except _Captured:
        pass
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
    matmul_gflops: float | None = None  # this run's dense matmul rate: predicts a cell with no smaller one
    compile: bool = False  # torch.compile each timed block (its first call, compiling, is timed apart)

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")


QUADRATIC = ("teacher", "kv_compress")


def _too_small_table(preset: Preset, model: nn.Module, height: int, width: int) -> str | None:
    """The teacher SD3 crops its positional table: larger grids cannot run (EDiT Table 3's '-'). Converted
    models interpolate the table (``allow_any_resolution``) and run."""
    if FAMILIES[preset.family].square_only and height != width:
        return f"DiTTransformer2DModel takes square latents only, got {height}x{width}"
    max_size = preset.config.get("pos_embed_max_size")
    p = preset.config["patch_size"]
    if isinstance(getattr(model, "pos_embed", None), InterpolatingPatchEmbed):
        return None
    if max_size and max(height, width) // p > max_size:
        return f"positional-embedding table {max_size}x{max_size} < grid {height // p}x{width // p}"
    return None


def _predict(done: list[ModelCell], preset: str, method: str, tokens: int, dtype: str = "float32") -> float | None:
    """Seconds of one timed run of this cell's blocks, from the same model, method and dtype at the largest
    smaller size (another preset's teacher has other blocks: SD3.5's cost 4.7x PixArt's at 2048 px)."""
    prior = [c for c in done if (c.preset, c.method, c.dtype) == (preset, method, dtype) and c.block_s
             and c.tokens < tokens]
    if not prior:
        return None
    last = max(prior, key=lambda c: c.tokens)
    exponent = 2.0 if method_variant(method)[0] in QUADRATIC else 1.0
    return sum(last.block_s.values()) * (tokens / last.tokens) ** exponent


SLOW_S = 30.0  # blocks slower than this get one run that measures time and peak memory together


def _to_meta(tree):
    return tree_map(lambda t: t.to("meta") if torch.is_tensor(t) else t, tree)


class BlockTimer:
    """Times one block type of one model at one size; FLOPs are counted on a meta-device twin (shapes
    only), so a softmax block at 8192 px is counted without materialising its N x N scores."""

    def __init__(self, stub: nn.Module, meta_stub: nn.Module, inputs: dict, s: ModelSettings):
        self.stub, self.meta_stub, self.inputs, self.s = stub, meta_stub, inputs, s
        self.args, self.kwargs = capture_block_inputs(stub, inputs)
        self.grid = getattr(stub, "lindit_grid", None)

    def _call(self, stub, args, kwargs):
        with torch.no_grad(), (token_grid(stub, self.grid.hw) if self.grid else contextlib.nullcontext()):
            stub.transformer_blocks[0](*args, **kwargs)

    def call_block(self):
        self._call(self.stub, self.args, self.kwargs)

    def call_model(self):
        with torch.no_grad():
            self.stub(**self.inputs, return_dict=False)

    def gflop(self) -> float:
        args, kwargs = _to_meta((self.args, self.kwargs))
        return count_flops(lambda: self._call(self.meta_stub, args, kwargs)) / 1e9

    def measure(self, predicted: float | None) -> tuple[float, float | None]:
        """(median seconds, peak MB) of the block."""
        if predicted is not None and predicted > SLOW_S:
            seconds, peak = timed_peak(self.call_block, self.s.device)
        else:
            seconds = time_call(self.call_block, self.s.device, warmup=1, repeats=self.s.repeats).median_s
            peak = peak_memory_bytes(self.call_block, self.s.device)
        return seconds, (None if peak < 0 else peak / 2**20)

    def overhead(self, block_s: float) -> float:
        """Embedding, conditioning and final layer: the one-block model minus its block."""
        model = time_call(self.call_model, self.s.device, warmup=0, repeats=self.s.repeats).median_s
        return max(model - block_s, 0.0)


def type_plan(full: nn.Module) -> tuple[dict[str, int], dict[str, int]]:
    """Block type -> index of its first block, and block type -> how many blocks have it."""
    labels = block_types(full)
    first, counts = {}, {}
    for i, label in enumerate(labels):
        first.setdefault(label, i)
        counts[label] = counts.get(label, 0) + 1
    return first, counts


def bench_method(preset: Preset, method: str, sizes, s: ModelSettings, done: list[ModelCell],
                 overheads: dict, progress=None):
    """Cells for one method of one preset at every size (height_px, width_px); appends to ``done``.

    ``overheads`` maps (preset, size) to the embedding/final-layer time, measured once per size (they are
    the same for every method) with the first method that gets there: run linear methods first.
    """
    full = meta_model(preset, method)
    first, counts = type_plan(full)
    stubs = {}
    for hp, wp in sizes:
        h, w = hp // preset.vae_factor, wp // preset.vae_factor
        cell = ModelCell(preset.name, method, hp, wp, (h // 2) * (w // 2), estimate=s.layers != "full",
                         dtype=s.dtype_name)
        cell.skipped = _too_small_table(preset, full, h, w)
        predicted = _predict(done, preset.name, method, cell.tokens, s.dtype_name)
        if cell.skipped is None and s.max_seconds is not None and predicted and predicted > s.max_seconds:
            cell.skipped = f"predicted {predicted:.0f} s per run > --max-seconds {s.max_seconds:g}"
        if cell.skipped is None:
            inputs = preset.inputs(h, w, s.device, s.dtype)
            if s.layers == "full":
                _time_full(cell, full, inputs, s)
            else:
                key = (preset.name, hp, wp, s.dtype_name)
                _time_blocks(cell, full, first, counts, stubs, inputs, s, predicted, overheads.get(key))
                if cell.overhead_s is not None:
                    overheads.setdefault(key, cell.overhead_s)
        done.append(cell)
        if progress is not None:
            progress.update()
    return done


# Blocks reach 60-100% of the matmul rate here (docs/BENCHMARKS.md); predicting at half of it errs slow,
# so a cell predicted from FLOPs is skipped or run once rather than run three times for too long.
FLOP_PREDICTION_EFFICIENCY = 0.5


def _flop_prediction(gflops: dict, s: ModelSettings) -> dict | None:
    """Block type -> predicted seconds from its GFLOP, or None without a matmul rate."""
    if not s.matmul_gflops:
        return None
    return {label: g / (FLOP_PREDICTION_EFFICIENCY * s.matmul_gflops) for label, g in gflops.items()}


def _time_blocks(cell, full, first, counts, stubs, inputs, s, predicted, overhead) -> None:
    timers = {}
    for label, index in first.items():
        if label not in stubs:
            stubs[label] = (one_block_model(full, index, s.device, s.dtype), one_block_model(full, index, None, None))
        timers[label] = BlockTimer(*stubs[label], inputs, s)
    gflops = {label: timer.gflop() for label, timer in timers.items()}  # on meta: free, counted once
    by_flops = _flop_prediction(gflops, s) if predicted is None else None
    if by_flops and s.max_seconds is not None and sum(by_flops.values()) > s.max_seconds:
        cell.skipped = (f"predicted {sum(by_flops.values()):.0f} s per run (from FLOPs) > --max-seconds "
                        f"{s.max_seconds:g}")
        return
    for label, timer in timers.items():
        if s.compile:
            cell.compile_s[label] = _compile_block(timer)
        # rough when only the total is known: block types cost about the same
        share = by_flops[label] if by_flops else (None if predicted is None else predicted / len(first))
        cell.block_s[label], cell.block_peak_mb[label] = timer.measure(share)
        cell.block_gflop[label] = gflops[label]
        if overhead is None:
            overhead = timer.overhead(cell.block_s[label])
    cell.overhead_s = overhead
    cell.forward_s = overhead + sum(cell.block_s[k] * counts[k] for k in counts)


def _compile_block(timer: BlockTimer) -> float:
    """torch.compile the timer's block in place and run it once (the compilation): its seconds."""
    from ..eval.timing import timed

    block = timer.stub.transformer_blocks[0]
    if getattr(block, "_compiled_call_impl", None) is None:  # stubs are reused across sizes
        block.compile()
    return timed(timer.call_block, timer.s.device)


def _time_full(cell, full, inputs, s) -> None:
    model = materialize(copy.deepcopy(full), s.device, s.dtype)
    if s.compile:
        model.compile()

    def call():
        with torch.no_grad():
            model(**inputs, return_dict=False)

    cell.forward_s = time_call(call, s.device, warmup=1, repeats=s.repeats).median_s
    peak = peak_memory_bytes(call, s.device)
    cell.block_peak_mb["model"] = None if peak < 0 else peak / 2**20
