"""``lindit bench targets``: check a ``lindit bench model`` run against the project's latency targets.

    lindit bench targets docs/bench/model/bench.json docs/bench/model-4096/bench.json \\
        --memory docs/bench/model-8192/bench.json --paired docs/bench/paired-*/paired.json

Reads the JSON the benchmark wrote (nothing is retyped) and prints one markdown row per target with the
measured value and whether it is met. The targets are per-block ratios teacher / method from the same run
(both timed in one process on the same machine, so shared-machine noise mostly cancels), the fraction of the
same run's dense matmul GFLOP/s that each linear block reaches at 4096 px, and the peak memory of one EDiT
block at 8192 px.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..eval.report import markdown_table
from ..methods import REGISTRY


@dataclass(frozen=True)
class SpeedTarget:
    preset: str
    method: str
    px: int
    min_ratio: float


SPEED_TARGETS = (
    SpeedTarget("pixart-sigma", "edit", 1024, 1.3), SpeedTarget("pixart-sigma", "edit", 2048, 2.2),
    SpeedTarget("pixart-sigma", "edit", 4096, 6.0),
    SpeedTarget("sd35-medium", "mm_edit", 1024, 1.2), SpeedTarget("sd35-medium", "mm_edit", 2048, 1.8),
    SpeedTarget("sd35-medium", "mm_edit", 4096, 5.0),
)
# Every registry method whose attention is linear in the image tokens: those with the normaliser option ``eps``,
# which all linear methods take (all but kv_compress, softmax over compressed keys). Variants (edit:cf_reduction=8)
# are not matched.
LINEAR_METHODS = tuple(name for name, method in REGISTRY.items() if "eps" in method.options)
FLOPS_PX, MIN_FLOPS_FRACTION = 4096, 0.6
MEMORY_PX, MAX_MEMORY_MB = 8192, 16 * 1024


def load(path: str | Path, kind: str = "model", keys: tuple[str, str] = ("cells", "matmul_gflops")) -> dict:
    """The JSON that ``lindit bench KIND`` wrote, checked for its ``keys``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; write it with `lindit bench {kind} --out {path.parent}`")
    data = json.loads(path.read_text())
    if any(k not in data for k in keys):
        raise ValueError(f"{path} is not the {path.name} of `lindit bench {kind}` (no {' or '.join(map(repr, keys))})")
    return data


def _float32(cells: list[dict]) -> list[dict]:
    """The targets are float32 numbers: cells of other dtypes (``bench model --dtype bf16``) are left out."""
    return [c for c in cells if c.get("dtype", "float32") == "float32"]


def _cell(data: dict, preset: str, method: str, px: int) -> dict | None:
    for c in _float32(data["cells"]):
        if (c["preset"], c["method"], c["height_px"], c["width_px"]) == (preset, method, px, px):
            return c
    return None


def _missing(cell: dict | None) -> str | None:
    if cell is None:
        return "not in this run"
    if cell.get("skipped"):
        return f"skipped: {cell['skipped']}"
    return None


def _pair(runs: list[dict], t: SpeedTarget) -> tuple[dict | None, dict | None, str | None]:
    """(student cell, teacher cell, None) from the first run holding both, or (None, None, why not)."""
    why = "not in this run" if len(runs) == 1 else "not in these runs"
    for data in runs:
        student, teacher = _cell(data, t.preset, t.method, t.px), _cell(data, t.preset, "teacher", t.px)
        missing = _missing(student) or _missing(teacher)
        if missing is None:
            return student, teacher, None
        if missing.startswith("skipped"):
            why = missing
    return None, None, why


def _flop_note(teacher: dict, student: dict, label: str) -> str:
    """The FLOP ratio and both blocks' GFLOP/s: a noise-free cross-check of the timed ratio."""
    t_gflop, s_gflop = teacher["block_gflop"][label], student["block_gflop"][label]
    return (f"FLOPs {t_gflop / s_gflop:.2f}x, GFLOP/s {t_gflop / teacher['block_s'][label]:.0f} / "
            f"{s_gflop / student['block_s'][label]:.0f}")


def _paired_rows(paired, t: SpeedTarget) -> list[list[str]]:
    """Rows from the first interleaved run covering the target (median over rounds, quartiles), or []."""
    for data in paired:
        per = data["ratios"].get(t.method)
        if (data["preset"], data["height_px"], data["width_px"]) != (t.preset, t.px, t.px) or per is None:
            continue
        return [[f"{t.preset} / {t.method} at {t.px} px, {label}", f">= {t.min_ratio:g}x",
                 f"{r['median']:.2f}x (median of {data['rounds']} interleaved rounds, quartiles "
                 f"{r['q1']:.2f}-{r['q3']:.2f}x); FLOPs {r['flop_ratio']:.2f}x",
                 "met" if r["median"] >= t.min_ratio else "**missed**"] for label, r in per.items()]
    return []


def speed_rows(runs: list[dict], paired=()) -> list[list[str]]:
    """Each ratio comes from one run (teacher and student timed in the same process); an interleaved
    ``lindit bench paired`` run, when one covers the target, is used instead."""
    rows = []
    for t in SPEED_TARGETS:
        interleaved = _paired_rows(paired, t)
        if interleaved:
            rows += interleaved
            continue
        student, teacher, why = _pair(runs, t)
        if why:
            rows.append([f"{t.preset} / {t.method} at {t.px} px", f">= {t.min_ratio:g}x", why, "unknown"])
            continue
        for label, seconds in student["block_s"].items():
            ratio = teacher["block_s"][label] / seconds
            rows.append([f"{t.preset} / {t.method} at {t.px} px, {label}", f">= {t.min_ratio:g}x",
                         f"{ratio:.2f}x ({teacher['block_s'][label]:.3g} s / {seconds:.3g} s); "
                         + _flop_note(teacher, student, label), "met" if ratio >= t.min_ratio else "**missed**"])
    return rows


def _flops_cells(runs: list[dict]) -> list[tuple[dict, float]]:
    """(cell, its run's matmul GFLOP/s) per linear (preset, method) at FLOPS_PX, a measured cell first."""
    found = {}
    for data in runs:
        for c in _float32(data["cells"]):
            key = (c["preset"], c["method"])
            if c["method"] in LINEAR_METHODS and (c["height_px"], c["width_px"]) == (FLOPS_PX, FLOPS_PX):
                if key not in found or (found[key][0].get("skipped") and not c.get("skipped")):
                    found[key] = (c, data["matmul_gflops"])
    return list(found.values())


def flops_rows(runs: list[dict]) -> list[list[str]]:
    rows = []
    for c, ceiling in _flops_cells(runs):  # the ceiling is measured in the cell's own run
        if c.get("skipped"):
            rows.append([f"{c['preset']} / {c['method']} at {FLOPS_PX} px", f">= {MIN_FLOPS_FRACTION:.0%}",
                         f"skipped: {c['skipped']}", "unknown"])
            continue
        for label, seconds in c["block_s"].items():
            achieved = c["block_gflop"][label] / seconds
            rows.append([f"{c['preset']} / {c['method']} at {FLOPS_PX} px, {label}",
                         f">= {MIN_FLOPS_FRACTION:.0%} of {ceiling:.0f} GFLOP/s",
                         f"{achieved / ceiling:.0%} ({achieved:.0f} GFLOP/s)",
                         "met" if achieved >= MIN_FLOPS_FRACTION * ceiling else "**missed**"])
    return rows


def memory_rows(data: dict) -> list[list[str]]:
    cell = _cell(data, "pixart-sigma", "edit", MEMORY_PX)
    why = _missing(cell)
    target = f"< {MAX_MEMORY_MB // 1024} GB"
    if why:
        return [[f"pixart-sigma / edit at {MEMORY_PX} px, peak memory of one block", target, why, "unknown"]]
    rows = []
    for label, mb in cell["block_peak_mb"].items():
        ok = mb is not None and mb < MAX_MEMORY_MB
        shown = "not measured" if mb is None else f"{mb / 1024:.2f} GB ({cell['block_s'][label]:.1f} s)"
        rows.append([f"pixart-sigma / edit at {MEMORY_PX} px, {label}", target, shown,
                     "met" if ok else "**missed**"])
    return rows


def report(speed_json, memory_json: str | Path | None = None, paired_json=()) -> str:
    """``speed_json``: one bench.json or a list of them (e.g. a 1024-2048 px run and a 4096 px run);
    ``paired_json``: paired.json files of ``lindit bench paired``, preferred for the targets they cover."""
    paths = [speed_json] if isinstance(speed_json, (str, Path)) else list(speed_json)
    runs = [load(p) for p in paths]
    paired = [load(p, "paired", ("ratios", "rounds")) for p in paired_json]
    rows = speed_rows(runs, paired) + flops_rows(runs)
    commands = [data["command"] for data in runs + paired]
    if memory_json is not None:
        memory = load(memory_json)
        rows += memory_rows(memory)
        commands.append(memory["command"])
    header = "Targets, checked by `lindit bench targets` on the runs of " + " and ".join(f"`{c}`" for c in commands)
    return header + "\n\n" + markdown_table(["target", "wanted", "measured", "result"], rows)


def add_parser(kinds) -> None:
    p = kinds.add_parser("targets", help="check a `bench model` run against the latency/FLOP/s/memory targets")
    p.add_argument("bench_json", type=Path, nargs="+",
                   help="bench.json of `lindit bench model` runs (512-4096 px); each ratio comes from one run")
    p.add_argument("--memory", type=Path, help="bench.json of the 8192 px EDiT run")
    p.add_argument("--paired", type=Path, nargs="+", default=[], metavar="JSON",
                   help="paired.json of `lindit bench paired` runs: their interleaved ratios replace the "
                   "sequential ones for the targets they cover")
    p.set_defaults(func=run)


def run(args) -> int:
    print(report(args.bench_json, args.memory, args.paired))
    return 0
