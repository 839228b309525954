"""``lindit bench paired``: teacher / method block-latency ratios from interleaved rounds.

``lindit bench model`` times each method's cells one after another, so a shared CPU that slows down for a
minute changes one side of a ratio and not the other: its 1024 px PixArt-Sigma / EDiT ratio read 1.63x,
1.06x and 1.38x in three runs (docs/BENCHMARKS.md). Here every round times one block of each type of each
method back to back, in an order that rotates from round to round, and a ratio is the median over rounds
of that round's ratio, reported with its quartiles: a slowdown lasting longer than a round hits both sides.

    lindit bench paired --preset pixart-sigma --methods teacher edit edit:cf_reduction=8 --size 1024 --rounds 15

Models are built exactly as in ``lindit bench model`` (``lindit.convert`` on the published config with
random weights); the ratios are per block type and for all blocks of the full depth (the sum of each type's
time times its count).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import torch

from .bench_model import BlockTimer, ModelSettings, meta_model, one_block_model, type_plan
from .measure import synchronize
from .presets import Preset

ALL = "all blocks"  # the depth-weighted sum, EDiT Table 3's one-forward ratio without embedding and head


@dataclass
class PairedMethod:
    method: str
    counts: dict[str, int]  # block type -> blocks of that type in the full depth
    gflop: dict[str, float]  # block type -> GFLOP of one block
    seconds: dict[str, list[float]] = field(default_factory=dict)  # block type -> one time per round

    def round_total(self, r: int) -> float:
        return sum(self.seconds[k][r] * n for k, n in self.counts.items())

    def as_dict(self) -> dict:
        return {"method": self.method, "counts": self.counts, "block_gflop": self.gflop, "block_s": self.seconds}


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """(25th percentile, median, 75th percentile); a single value is all three."""
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def _timers(preset: Preset, method: str, h: int, w: int, s: ModelSettings) -> tuple[PairedMethod, dict]:
    full = meta_model(preset, method)
    first, counts = type_plan(full)
    inputs = preset.inputs(h, w, s.device, s.dtype)
    timers = {label: BlockTimer(one_block_model(full, i, s.device, s.dtype), one_block_model(full, i, None, None),
                                inputs, s) for label, i in first.items()}
    gflop = {label: t.gflop() for label, t in timers.items()}
    return PairedMethod(method, counts, gflop, {label: [] for label in timers}), timers


def _once(fn, device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def run_rounds(preset: Preset, methods: list[str], height_px: int, width_px: int, rounds: int, s: ModelSettings,
               progress=None) -> list[PairedMethod]:
    """Build every method's blocks, warm each up once, then time ``rounds`` interleaved rounds."""
    if "teacher" not in methods:
        raise ValueError(f"--methods must include 'teacher' (the ratios are teacher / method), got {methods}")
    if rounds < 1:
        raise ValueError(f"--rounds must be at least 1, got {rounds}")
    for method in methods:  # a bad method or option fails before any block is built
        meta_model(preset, method)
    built = [_timers(preset, m, height_px // 8, width_px // 8, s) for m in methods]
    for _, timers in built:
        for timer in timers.values():
            timer.call_block()  # warm-up: allocator, oneDNN primitives
    for r in range(rounds):
        shift = r % len(built)
        for result, timers in built[shift:] + built[:shift]:  # rotate who goes first
            for label, timer in timers.items():
                result.seconds[label].append(_once(timer.call_block, s.device))
        if progress is not None:
            progress.update()
    return [result for result, _ in built]


def ratios(results: list[PairedMethod]) -> dict[str, dict[str, dict]]:
    """method -> block type (and ALL) -> {"q1", "median", "q3", "flop_ratio"} of teacher / method."""
    teacher = next(r for r in results if r.method == "teacher")
    rounds = len(next(iter(teacher.seconds.values())))
    out = {}
    for res in results:
        if res is teacher:
            continue
        per = {}
        for label in res.seconds:
            if label not in teacher.seconds:  # a conversion that changed the block types (kv_compress layers)
                continue
            values = [teacher.seconds[label][r] / res.seconds[label][r] for r in range(rounds)]
            per[label] = _summary(values, teacher.gflop[label] / res.gflop[label])
        totals = [teacher.round_total(r) / res.round_total(r) for r in range(rounds)]
        flops = sum(g * teacher.counts[k] for k, g in teacher.gflop.items()) / sum(
            g * res.counts[k] for k, g in res.gflop.items())
        per[ALL] = _summary(totals, flops)
        out[res.method] = per
    return out


def _summary(values: list[float], flop_ratio: float) -> dict:
    q1, q2, q3 = quartiles(values)
    return {"q1": q1, "median": q2, "q3": q3, "flop_ratio": flop_ratio}


def _target(preset: str, method: str, height_px: int, width_px: int):
    from .bench_targets import SPEED_TARGETS

    hits = [t for t in SPEED_TARGETS if (t.preset, t.method, t.px, t.px) == (preset, method, height_px, width_px)]
    return hits[0] if hits else None


def paired_markdown(preset: Preset, results: list[PairedMethod], height_px: int, width_px: int, rounds: int,
                    machine: dict, dtype: str, command: str) -> str:
    from .report import fmt_seconds, markdown_table

    rows = []
    for method, per in ratios(results).items():
        target = _target(preset.name, method, height_px, width_px)
        for label, r in per.items():
            verdict = "-"
            if target is not None and label == ALL:
                verdict = f">= {target.min_ratio:g}x: " + ("met" if r["median"] >= target.min_ratio else "**missed**")
            rows.append([method, label, f"{r['median']:.2f}x", f"{r['q1']:.2f}-{r['q3']:.2f}x",
                         f"{r['flop_ratio']:.2f}x", verdict])
    times = [[res.method, label, str(res.counts[label]), fmt_seconds(statistics.median(secs)),
              f"{res.gflop[label]:.1f}", f"{res.gflop[label] / statistics.median(secs):.0f}"]
             for res in results for label, secs in res.seconds.items()]
    return "\n\n".join([
        f"Made by `{command}`: {preset.name} at {height_px}x{width_px} px, {dtype}, {machine['device']} "
        f"({machine['cpu']}, {machine['torch_threads']} threads, torch {machine['torch']}). {rounds} rounds; "
        "each round times one block of every type of every method back to back, in a rotating order. A ratio "
        "is the median over rounds of that round's teacher / method time (quartiles beside it); "
        f"'{ALL}' weighs each block type by its count in the full depth.",
        markdown_table(["method", "block type", "ratio (median)", "quartiles", "FLOP ratio", "target"], rows),
        "Median block times\n\n" + markdown_table(
            ["method", "block type", "blocks", "median time", "GFLOP", "GFLOP/s"], times),
    ])


def add_parser(kinds) -> None:
    from pathlib import Path

    from ..cli import positive_int
    from .presets import PRESETS

    p = kinds.add_parser("paired", help="teacher / method block-latency ratios from interleaved rounds",
                         description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="pixart-sigma", choices=list(PRESETS))
    p.add_argument("--methods", nargs="+", default=["teacher", "edit"], metavar="NAME",
                   help="'teacher' and the methods to compare with it; NAME:KEY=VALUE[,...] times a variant")
    p.add_argument("--size", default="1024", metavar="PX|HxW", help="image size in px (default 1024)")
    p.add_argument("--rounds", type=positive_int, default=9, help="interleaved rounds (default 9)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if present)")
    p.add_argument("--out", type=Path, default=Path("bench-output"), help="directory for paired.md and paired.json")
    p.set_defaults(func=run)


def parse_size(text: str) -> tuple[int, int]:
    h, sep, w = text.partition("x")
    w = w if sep else h
    if not (h.isdigit() and w.isdigit()) or int(h) % 16 or int(w) % 16 or not int(h) or not int(w):
        raise ValueError(f"--size must be PX or HxW in px, multiples of 16 (VAE factor 8 x patch 2), got {text!r}")
    return int(h), int(w)


def run(args) -> int:
    from tqdm.auto import tqdm

    from ..io import write_json, write_text
    from .measure import machine_info, resolve_device, resolve_dtype
    from .presets import PRESETS

    device, dtype = resolve_device(args.device), resolve_dtype(args.dtype)
    height, width = parse_size(args.size)
    preset = PRESETS[args.preset]
    settings = ModelSettings(device, dtype)
    with tqdm(total=args.rounds, desc="bench paired", unit="round", delay=1) as bar:  # no bar before a bad-input error
        results = run_rounds(preset, args.methods, height, width, args.rounds, settings, progress=bar)
    machine = machine_info(device)
    command = "lindit " + " ".join(getattr(args, "argv", ["bench", "paired"]))
    md = paired_markdown(preset, results, height, width, args.rounds, machine, args.dtype, command)
    print(md)
    write_text(args.out / "paired.md", md + "\n")
    write_json(args.out / "paired.json", {
        "command": command, "preset": preset.name, "height_px": height, "width_px": width, "rounds": args.rounds,
        "dtype": args.dtype, "machine": machine, "methods": [r.as_dict() for r in results],
        "ratios": ratios(results)})
    print(f"\nwrote {args.out / 'paired.md'} and {args.out / 'paired.json'}")
    return 0
