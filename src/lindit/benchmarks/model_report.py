"""Report of ``lindit bench model``: EDiT-Table-3-shaped markdown, the paper's A100 numbers, a log-log plot."""

from __future__ import annotations

import math
from pathlib import Path

from ..io import atomic_path
from .model_forward import ModelCell
from .presets import PAPER_A100, PAPER_RESOLUTIONS
from ..eval.report import fmt_mb, fmt_seconds, markdown_table


def _size_label(c: ModelCell) -> str:
    return f"{c.height_px}" if c.height_px == c.width_px else f"{c.height_px}x{c.width_px}"


def _rows(cells: list[ModelCell]):
    rows, cols = [], []
    for c in cells:
        rows += [(c.preset, c.method)] if (c.preset, c.method) not in rows else []
        cols += [_size_label(c)] if _size_label(c) not in cols else []
    return rows, cols, {((c.preset, c.method), _size_label(c)): c for c in cells}


def forward_table(cells: list[ModelCell]) -> str:
    rows, cols, by = _rows(cells)

    def value(c):
        if c is None:
            return "-"
        if c.skipped:
            return "skipped"
        return ("~" if c.estimate else "") + fmt_seconds(c.forward_s)

    body = [[p, m] + [value(by.get(((p, m), k))) for k in cols] for p, m in rows]
    return markdown_table(["model", "method"] + [f"{k} px" for k in cols], body)


def block_table(cells: list[ModelCell], what: str) -> str:
    """Per-block latency, teacher/method ratio, GFLOP/s or peak memory of each block type."""
    rows, cols, by = _rows(cells)
    body = []
    for p, m in rows:
        for label in _labels(cells, p, m):
            body.append([p, m, label] + [_block_value(by.get(((p, m), k)), by.get(((p, "teacher"), k)), label, what)
                                         for k in cols])
    return markdown_table(["model", "method", "block"] + [f"{k} px" for k in cols], body)


def _labels(cells, preset, method) -> list[str]:
    seen = []
    for c in cells:
        if c.preset == preset and c.method == method:
            seen += [k for k in c.block_s if k not in seen]
    return seen


def _block_value(c: ModelCell | None, teacher: ModelCell | None, label: str, what: str) -> str:
    if c is None or c.skipped or label not in c.block_s:
        return "skipped" if c is not None and c.skipped else "-"
    t = c.block_s[label]
    if what == "latency":
        return fmt_seconds(t)
    if what == "gflops":
        return f"{c.block_gflop[label] / t:.0f}"
    if what == "memory":
        return fmt_mb(c.block_peak_mb.get(label))
    if teacher is None or teacher.skipped or label not in teacher.block_s:
        return "-"
    return f"{teacher.block_s[label] / t:.2f}x"


def paper_table() -> str:
    rows = [[p, m] + ["-" if v is None else f"{v:.3f} s" for v in vals]
            for p, methods in PAPER_A100.items() for m, vals in methods.items()]
    return markdown_table(["model", "method"] + [f"{r} px" for r in PAPER_RESOLUTIONS], rows)


def skipped_lines(cells: list[ModelCell]) -> list[str]:
    return [f"- {c.preset} {c.method} {_size_label(c)} px: skipped, {c.skipped}" for c in cells if c.skipped]


def fitted_slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of log(latency) against log(pixels)."""
    if len(points) < 2:
        return None
    xs, ys = [math.log(p) for p, _ in points], [math.log(t) for _, t in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return None if var == 0 else sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var


def slopes(cells: list[ModelCell], min_px: int = 1024) -> dict[tuple[str, str, str], float | None]:
    """Slope per (preset, method, dtype) over square sizes >= min_px (below that, fixed costs dominate)."""
    out = {}
    for p, m, d in dict.fromkeys((c.preset, c.method, c.dtype) for c in cells):
        pts = [(c.height_px * c.width_px, c.forward_s) for c in cells if (c.preset, c.method, c.dtype) == (p, m, d)
               and c.forward_s and c.height_px == c.width_px and c.height_px >= min_px]
        out[(p, m, d)] = fitted_slope(pts)
    return out


def dtype_table(cells: list[ModelCell], dtypes: list[str]) -> str:
    """Per block type and size: the first dtype's block time over each other dtype's (same run)."""
    base = dtypes[0]
    by = {(c.preset, c.method, c.dtype, _size_label(c)): c for c in cells}
    cols = list(dict.fromkeys(_size_label(c) for c in cells))
    body = []
    for p, m in dict.fromkeys((c.preset, c.method) for c in cells):
        for d in dtypes[1:]:
            for label in _labels(cells, p, m):
                row = [p, m, f"{base} / {d}", label]
                for k in cols:
                    ref, c = by.get((p, m, base, k)), by.get((p, m, d, k))
                    ok = ref and c and label in ref.block_s and label in c.block_s
                    row.append(f"{ref.block_s[label] / c.block_s[label]:.2f}x" if ok else "-")
                body.append(row)
    return markdown_table(["model", "method", "dtypes", "block"] + [f"{k} px" for k in cols], body)


def plot(cells: list[ModelCell], path: Path, dtype: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    presets = list(dict.fromkeys(c.preset for c in cells))
    several = len({c.dtype for c in cells}) > 1
    fig, axes = plt.subplots(1, len(presets), figsize=(5.5 * len(presets), 4.5), squeeze=False)
    fits = slopes(cells)
    for ax, preset in zip(axes[0], presets):
        for p, m, d in [k for k in fits if k[0] == preset]:
            pts = sorted((c.height_px * c.width_px, c.forward_s) for c in cells if (c.preset, c.method, c.dtype)
                         == (p, m, d) and c.forward_s and c.height_px == c.width_px)
            if pts:
                slope = fits[(p, m, d)]
                name = f"{m} {d}" if several else m
                label = f"{name} (slope {slope:.2f})" if slope is not None else name
                ax.plot(*zip(*pts), marker="o", label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("pixels per image")
        ax.set_ylabel("seconds per forward (estimate from per-block timing)")
        ax.set_title(f"{preset}, {dtype}")
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
