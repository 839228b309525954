"""``lindit bench paired``: teacher / method block-latency ratios from interleaved rounds.

``lindit bench model`` times each method's cells one after another, so a shared CPU that slows down for a
minute changes one side of a ratio and not the other: its 1024 px PixArt-Sigma / EDiT ratio read 1.63x,
1.06x and 1.38x in three runs (docs/BENCHMARKS.md). Here every round times one block of each type of each
method back to back, in an order that rotates from round to round, and a ratio is the median over rounds
of that round's ratio, reported with its quartiles: a slowdown lasting longer than a round hits both sides.

    lindit bench paired --preset pixart-sigma --methods teacher edit edit:cf_reduction=8 --size 1024 --rounds 15

Models are built exactly as in ``lindit bench model`` (``lindit.convert`` on the published config with
random weights); the ratios are per block type and for all blocks of the full depth (the sum of each type's
time times its count). ``--dtype float32 bfloat16`` times every method in each dtype within the same rounds
and adds each method's float32 / bfloat16 ratio, so a dtype comparison is interleaved as well; ``--compile``
adds a torch.compiled twin of every (method, dtype), labelled ``DTYPE+compile``, compared the same way.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field, replace

import torch

from ..dtypes import dtype_name, resolve_dtype
from ..eval.timing import timed
from .model_forward import BlockTimer, ModelSettings, meta_model, one_block_model, type_plan
from .presets import Preset

ALL = "all blocks"  # the depth-weighted sum, EDiT Table 3's one-forward ratio without embedding and head


@dataclass
class PairedMethod:
    method: str
    counts: dict[str, int]  # block type -> blocks of that type in the full depth
    gflop: dict[str, float]  # block type -> GFLOP of one block
    seconds: dict[str, list[float]] = field(default_factory=dict)  # block type -> one time per round
    dtype: str = "float32"

    def round_total(self, r: int) -> float:
        return sum(self.seconds[k][r] * n for k, n in self.counts.items())

    def as_dict(self) -> dict:
        return {"method": self.method, "dtype": self.dtype, "counts": self.counts, "block_gflop": self.gflop,
                "block_s": self.seconds}


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """(25th percentile, median, 75th percentile); a single value is all three."""
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def share_buffers(module, shared: dict) -> None:
    """Point ``module``'s buffers at equal ones already in ``shared`` (filled as it goes): the one-block stubs
    of a run each carry the model's embeddings, and SD3.5's 384 x 384 x 1536 positional table alone is 0.9 GB
    in float32 per stub."""
    for sub in module.modules():
        for name, buf in list(sub._buffers.items()):
            if buf is None or buf.numel() < 1 << 16:
                continue
            key = (name, buf.dtype, tuple(buf.shape), buf.device)
            same = shared.get(key)
            if same is None:
                shared[key] = buf
            elif torch.equal(same, buf):
                sub._buffers[name] = same


def _timers(preset: Preset, method: str, h: int, w: int, s: ModelSettings, compiled: bool = False,
            shared: dict | None = None) -> tuple[PairedMethod, dict]:
    full = meta_model(preset, method)
    first, counts = type_plan(full)
    inputs = preset.inputs(h, w, s.device, s.dtype)
    timers = {}
    for label, i in first.items():
        stub, meta_stub = one_block_model(full, i, s.device, s.dtype), one_block_model(full, i, None, None)
        for module in (stub, meta_stub):  # the meta twin keeps the model's real buffers too
            share_buffers(module, {} if shared is None else shared)
        timers[label] = BlockTimer(stub, meta_stub, inputs, s)
    gflop = {label: t.gflop() for label, t in timers.items()}
    for timer in timers.values() if compiled else ():
        timer.stub.transformer_blocks[0].compile()  # compiled by the warm-up call, before any round
    variant = str(s.dtype).removeprefix("torch.") + ("+compile" if compiled else "")
    return PairedMethod(method, counts, gflop, {label: [] for label in timers}, variant), timers


def _once(fn, device) -> float:
    return timed(fn, device)


def run_rounds(preset: Preset, methods: list[str], height_px: int, width_px: int, rounds: int, s: ModelSettings,
               progress=None, dtypes=None, compile: bool = False) -> list[PairedMethod]:
    """Build every method's blocks (in each of ``dtypes``, default ``s.dtype``; eager, and compiled too with
    ``compile``), warm each up once, then time ``rounds`` interleaved rounds."""
    if "teacher" not in methods:
        raise ValueError(f"--methods must include 'teacher' (the ratios are teacher / method), got {methods}")
    if rounds < 1:
        raise ValueError(f"--rounds must be at least 1, got {rounds}")
    for method in methods:  # a bad method or option fails before any block is built
        meta_model(preset, method)
    settings, shared = [replace(s, dtype=d) for d in (dtypes or [s.dtype])], {}
    h, w = height_px // preset.vae_factor, width_px // preset.vae_factor
    built = [_timers(preset, m, h, w, st, c, shared) for st in settings
             for c in ((False, True) if compile else (False,)) for m in methods]
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


def ratios(results: list[PairedMethod], dtype: str | None = None) -> dict[str, dict[str, dict]]:
    """method -> block type (and ALL) -> {"q1", "median", "q3", "flop_ratio"} of teacher / method, within one
    dtype (default: the first timed)."""
    dtype = dtype or results[0].dtype
    results = [r for r in results if r.dtype == dtype]
    teacher = next(r for r in results if r.method == "teacher")
    out = {}
    for res in results:
        if res is not teacher:
            flops = sum(g * teacher.counts[k] for k, g in teacher.gflop.items()) / sum(
                g * res.counts[k] for k, g in res.gflop.items())
            out[res.method] = _per_round_ratios(teacher, res, lambda label: teacher.gflop[label] / res.gflop[label],
                                                flops)
    return out


def dtype_ratios(results: list[PairedMethod]) -> dict[str, dict[str, dict[str, dict]]]:
    """method -> dtype -> block type (and ALL) -> summary of (first dtype's time) / (this dtype's time)."""
    base = results[0].dtype
    out: dict = {}
    for res in results:
        if res.dtype != base:
            ref = next(r for r in results if r.method == res.method and r.dtype == base)
            out.setdefault(res.method, {})[res.dtype] = _per_round_ratios(ref, res, lambda label: 1.0, 1.0)
    return out


def _per_round_ratios(num: PairedMethod, den: PairedMethod, flop_ratio, all_flops: float) -> dict[str, dict]:
    rounds = len(next(iter(num.seconds.values())))
    per = {}
    for label in den.seconds:
        if label in num.seconds:  # a conversion that changed the block types (kv_compress layers) has no pair
            values = [num.seconds[label][r] / den.seconds[label][r] for r in range(rounds)]
            per[label] = _summary(values, flop_ratio(label))
    per[ALL] = _summary([num.round_total(r) / den.round_total(r) for r in range(rounds)], all_flops)
    return per


def _summary(values: list[float], flop_ratio: float) -> dict:
    q1, q2, q3 = quartiles(values)
    return {"q1": q1, "median": q2, "q3": q3, "flop_ratio": flop_ratio}


def _target(preset: str, method: str, height_px: int, width_px: int):
    from .targets import SPEED_TARGETS

    hits = [t for t in SPEED_TARGETS if (t.preset, t.method, t.px, t.px) == (preset, method, height_px, width_px)]
    return hits[0] if hits else None


def paired_markdown(preset: Preset, results: list[PairedMethod], height_px: int, width_px: int, rounds: int,
                    machine: dict, dtype: str, command: str) -> str:
    from ..eval.report import fmt_seconds, markdown_table

    dtypes = list(dict.fromkeys(r.dtype for r in results))
    rows = []
    for d in dtypes:
        for method, per in ratios(results, d).items():
            target = _target(preset.name, method, height_px, width_px) if d == "float32" else None
            for label, r in per.items():
                verdict = "-"
                if target is not None and label == ALL:
                    verdict = f">= {target.min_ratio:g}x: " + ("met" if r["median"] >= target.min_ratio else "**missed**")
                rows.append([method, d, label, f"{r['median']:.2f}x", f"{r['q1']:.2f}-{r['q3']:.2f}x",
                             f"{r['flop_ratio']:.2f}x", verdict])
    times = [[res.method, res.dtype, label, str(res.counts[label]), fmt_seconds(statistics.median(secs)),
              f"{res.gflop[label]:.1f}", f"{res.gflop[label] / statistics.median(secs):.0f}"]
             for res in results for label, secs in res.seconds.items()]
    parts = [
        f"Made by `{command}`: {preset.name} at {height_px}x{width_px} px, {', '.join(dtypes)}, {machine['device']} "
        f"({machine['cpu']}, {machine['torch_threads']} threads, torch {machine['torch']}). {rounds} rounds; "
        "each round times one block of every type of every method (and dtype) back to back, in a rotating order. "
        "A ratio is the median over rounds of that round's teacher / method time (quartiles beside it); "
        f"'{ALL}' weighs each block type by its count in the full depth.",
        markdown_table(["method", "dtype", "block type", "ratio (median)", "quartiles", "FLOP ratio", "target"], rows),
    ]
    if len(dtypes) > 1:
        drows = [[method, f"{dtypes[0]} / {d}", label, f"{r['median']:.2f}x", f"{r['q1']:.2f}-{r['q3']:.2f}x"]
                 for method, by in dtype_ratios(results).items() for d, per in by.items() for label, r in per.items()]
        parts.append(f"Speed-up of each method over {dtypes[0]} (median of per-round ratios, same rounds)\n\n"
                     + markdown_table(["method", "dtypes", "block type", "ratio (median)", "quartiles"], drows))
    parts.append("Median block times\n\n" + markdown_table(
        ["method", "dtype", "block type", "blocks", "median time", "GFLOP", "GFLOP/s"], times))
    return "\n\n".join(parts)


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
    p.add_argument("--dtype", nargs="+", default=["float32"], type=dtype_name, metavar="DTYPE",
                   help="float32, bfloat16 (bf16) or float16 (fp16); several are timed in the same rounds and "
                        "compared with the first (default float32)")
    p.add_argument("--compile", action="store_true",
                   help="also time a torch.compiled twin of every method and dtype, in the same rounds")
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
    from ..eval.measure import machine_info, resolve_device
    from .presets import PRESETS

    device, dtypes = resolve_device(args.device), [resolve_dtype(d) for d in dict.fromkeys(args.dtype)]
    height, width = parse_size(args.size)
    preset = PRESETS[args.preset]
    settings = ModelSettings(device, dtypes[0])
    with tqdm(total=args.rounds, desc="bench paired", unit="round", delay=1) as bar:  # no bar before a bad-input error
        results = run_rounds(preset, args.methods, height, width, args.rounds, settings, progress=bar, dtypes=dtypes,
                             compile=args.compile)
    machine = machine_info(device)
    command = "lindit " + " ".join(getattr(args, "argv", ["bench", "paired"]))
    md = paired_markdown(preset, results, height, width, args.rounds, machine, args.dtype[0], command)
    print(md)
    write_text(args.out / "paired.md", md + "\n")
    write_json(args.out / "paired.json", {
        "command": command, "preset": preset.name, "height_px": height, "width_px": width, "rounds": args.rounds,
        "dtype": args.dtype[0], "dtypes": list(dict.fromkeys(r.dtype for r in results)), "machine": machine,
        "methods": [r.as_dict() for r in results], "ratios": ratios(results),
        "ratios_by_dtype": {d: ratios(results, d) for d in dict.fromkeys(r.dtype for r in results)},
        "dtype_ratios": dtype_ratios(results)})
    print(f"\nwrote {args.out / 'paired.md'} and {args.out / 'paired.json'}")
    return 0
