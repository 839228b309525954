"""``lindit bench attention``: one attention layer per mechanism, latency and peak memory against tokens.

Every mechanism is built by the same registry that ``lindit.convert`` uses, at PixArt-Sigma's width
(1152 channels, 16 heads) by default. Joint (MM-DiT) mechanisms get ``--prompt-tokens`` prompt tokens.
Cells whose predicted time exceeds ``--max-seconds`` are skipped and reported as skipped, with the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..methods import REGISTRY, LayerSpec
from ..modules import JointAttention, SoftmaxAttention
from ..eval.measure import Timing, peak_memory_bytes, time_call, timed_peak

FULL_TOKENS = (1024, 4096, 16384, 65536)
QUICK_TOKENS = (1024, 4096, 16384)
SLOW_S = 30.0  # cells slower than this get a single run
QUICK_MECHANISMS = ("softmax", "kv_compress", "edit", "lit", "sana", "linfusion", "joint_softmax", "mm_edit")


@dataclass
class Cell:
    mechanism: str
    tokens: int
    grid: tuple[int, int]
    latency_s: float | None = None
    runs: int = 0
    peak_mem_mb: float | None = None
    skipped: str | None = None

    def as_dict(self):
        return self.__dict__.copy()


def mechanisms() -> dict[str, str]:
    """Benchmarkable mechanisms: the teachers' softmax attentions and every registry method."""
    names = {"softmax": "self", "joint_softmax": "joint"}
    names.update({n: m.kind for n, m in REGISTRY.items()})
    return names


def build_layer(name: str, dim: int, heads: int):
    """The attention layer of ``name`` at width ``dim`` (joint layers with qk RMSNorm, as SD3.5)."""
    kinds = mechanisms()
    if name not in kinds:
        raise ValueError(f"unknown mechanism {name!r}; valid: {', '.join(kinds)}")
    if name == "softmax":
        return SoftmaxAttention(dim, heads)
    if name == "joint_softmax":
        return JointAttention(dim, heads, mode="softmax", query="linear", key="linear", value="linear", qk_norm="rms_norm")
    joint = kinds[name] == "joint"
    spec = LayerSpec(dim, heads, dim, dim, qk_norm="rms_norm" if joint else None, context_dim=dim if joint else None)
    return REGISTRY[name].build(spec)


def square_grid(tokens: int) -> tuple[int, int]:
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise ValueError(f"token counts must be square numbers (h = w), got {tokens}")
    return side, side


def _predict(prev: Cell | None, tokens: int, kind_exponent: float) -> float | None:
    """Time of a cell predicted from the previous one, scaling with tokens^exponent."""
    if prev is None or prev.latency_s is None:
        return None
    return prev.latency_s * (tokens / prev.tokens) ** kind_exponent


@dataclass
class Settings:
    dim: int = 1152
    heads: int = 16
    prompt_tokens: int = 300
    batch: int = 1
    dtype: torch.dtype = torch.float32
    device: torch.device = torch.device("cpu")
    max_seconds: float | None = None
    repeats: int = 5


def run(names, token_counts, settings: Settings = Settings()) -> list[Cell]:
    """Time every (mechanism, token count) cell; skipped cells carry the reason."""
    s = settings
    cells = []
    bar = tqdm(total=len(names) * len(token_counts), desc="bench attention", unit="cell")
    for name in names:
        layer = build_layer(name, s.dim, s.heads).to(device=s.device, dtype=s.dtype).eval()
        exponent = 2.0 if name in ("softmax", "joint_softmax", "kv_compress") else 1.0
        prev = None
        for n in token_counts:
            bar.set_postfix_str(f"{name} N={n}")
            cell = _run_cell(layer, name, n, _predict(prev, n, exponent), s)
            cells.append(cell)
            prev = cell if cell.latency_s is not None else prev
            bar.update()
    bar.close()
    return cells


def _run_cell(layer, name: str, n: int, predicted: float | None, s: Settings) -> Cell:
    grid = square_grid(n)
    cell = Cell(name, n, grid)
    if s.max_seconds is not None and predicted is not None and predicted > s.max_seconds:
        cell.skipped = f"predicted {predicted:.1f} s > --max-seconds {s.max_seconds:g}"
        return cell
    args = (torch.randn(s.batch, n, s.dim, device=s.device).to(s.dtype), grid)
    if isinstance(layer, JointAttention):
        args += (torch.randn(s.batch, s.prompt_tokens, s.dim, device=s.device).to(s.dtype),)

    def call():
        with torch.no_grad():
            layer(*args)

    if predicted is not None and predicted > SLOW_S:  # one run measures time and memory together
        cell.latency_s, mem = timed_peak(call, s.device)
        cell.runs = 1
    else:
        timing: Timing = time_call(call, s.device, warmup=1, repeats=s.repeats)
        cell.latency_s, cell.runs = timing.median_s, timing.runs
        mem = peak_memory_bytes(call, s.device)
    cell.peak_mem_mb = None if mem < 0 else mem / 2**20
    return cell
