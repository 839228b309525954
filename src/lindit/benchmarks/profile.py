"""``lindit bench profile``: where one block's time goes, per dtype, and which parts do not speed up in bf16.

Each round runs one block of every (method, dtype) back to back under ``torch.profiler`` (in a rotating
order, as ``lindit bench paired`` does, so a slow minute on a shared machine hits every variant), and sums the
self time of its aten ops into categories: GEMMs, softmax attention kernels, convolutions, norms, copies and
casts, element-wise ops. A category's time is its median over rounds; the last table is each category's
float32 / bfloat16 ratio: the parts near 1x are what keeps a block from gaining as much as its GEMMs.

    lindit bench profile --preset pixart-sigma --methods teacher edit --size 2048 --dtypes float32 bfloat16
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch

from .model_forward import BlockTimer, ModelSettings, meta_model, one_block_model, type_plan
from ..dtypes import resolve_dtype

CATEGORIES = {  # substrings of aten op names -> category; the first category that matches wins
    "GEMM": ("mm", "linear", "matmul"),
    "softmax attention": ("scaled_dot_product", "flash_attention", "efficient_attention", "softmax"),
    "convolution": ("conv",),
    "norm": ("norm",),
    "copies and casts": ("copy", "clone", "contiguous", "cat", "pad", "stack"),
    "element-wise": ("add", "mul", "div", "sub", "gelu", "silu", "relu", "elu", "sigmoid", "clamp", "lerp", "exp",
                     "log", "neg", "max", "min", "tanh", "where", "fill", "sum", "mean", "sqrt", "pow"),
}
OTHER = "other"


def category(op: str) -> str:
    name = op.removeprefix("aten::")
    return next((cat for cat, parts in CATEGORIES.items() if any(p in name for p in parts)), OTHER)


def profile_call(fn) -> dict[str, float]:
    """Seconds of self time per category of one call of ``fn`` (aten ops only: no double counting)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    out: dict[str, float] = {}
    for evt in prof.key_averages():
        if evt.key.startswith("aten::"):
            cat = category(evt.key)
            out[cat] = out.get(cat, 0.0) + evt.self_cpu_time_total / 1e6
    return out


def run_rounds(preset, methods, px: int, dtypes, rounds: int, device, progress=None) -> dict:
    """{(method, dtype): {"wall_s": [...], category: [...]}} over ``rounds`` rotating rounds (first block type)."""
    timers = {}
    for method in methods:
        full = meta_model(preset, method)
        label, index = next(iter(type_plan(full)[0].items()))
        for dtype in dtypes:
            s = ModelSettings(device, resolve_dtype(dtype))
            inputs = preset.inputs(px // preset.vae_factor, px // preset.vae_factor, device, s.dtype)
            timers[(method, dtype)] = BlockTimer(one_block_model(full, index, device, s.dtype),
                                                 one_block_model(full, index, None, None), inputs, s)
    for timer in timers.values():
        timer.call_block()  # warm-up
    results = {key: {} for key in timers}
    order = list(timers)
    for r in range(rounds):
        shift = r % len(order)
        for key in order[shift:] + order[:shift]:
            cats = profile_call(timers[key].call_block)
            cats["block (sum of ops)"] = sum(cats.values())
            for cat, seconds in cats.items():
                results[key].setdefault(cat, []).append(seconds)
        if progress is not None:
            progress.update()
    return results


def profile_markdown(results: dict, dtypes, command: str, machine: dict) -> str:
    from ..eval.report import fmt_seconds, markdown_table

    cats = [c for c in list(CATEGORIES) + [OTHER, "block (sum of ops)"] if any(c in v for v in results.values())]
    keys = list(results)
    med = {key: {c: statistics.median(results[key][c]) for c in results[key]} for key in keys}
    time_rows = [[c] + [fmt_seconds(med[k].get(c)) if c in med[k] else "-" for k in keys] for c in cats]
    share_rows = [[c] + [f"{100 * med[k].get(c, 0) / med[k]['block (sum of ops)']:.0f}%" for k in keys]
                  for c in cats]
    parts = [f"Made by `{command}` ({machine['cpu']}, {machine['torch_threads']} threads, torch {machine['torch']}); "
             f"self time of aten ops per category, median over rounds.",
             markdown_table(["category"] + [f"{m} {d}" for m, d in keys], time_rows),
             "Share of the block\n\n" + markdown_table(["category"] + [f"{m} {d}" for m, d in keys], share_rows)]
    if len(dtypes) > 1:
        base, methods = dtypes[0], list(dict.fromkeys(m for m, _ in keys))
        header = ["category"] + [f"{m} {base} / {d}" for m in methods for d in dtypes[1:]]
        rows = [[c] + [_ratio(results, m, base, d, c) for m in methods for d in dtypes[1:]] for c in cats]
        parts.append(f"Speed-up of each category over {base} (median of per-round ratios)\n\n"
                     + markdown_table(header, rows))
    return "\n\n".join(parts)


def _ratio(results, method, base, dtype, cat) -> str:
    a, b = results[(method, base)].get(cat), results[(method, dtype)].get(cat)
    if not a or not b:
        return "-"
    return f"{statistics.median(x / y for x, y in zip(a, b) if y > 0):.2f}x"


def add_parser(kinds) -> None:
    from .presets import PRESETS

    p = kinds.add_parser("profile", help="one block's time per op category and dtype (what bf16 does not speed up)",
                         description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="pixart-sigma", choices=list(PRESETS))
    p.add_argument("--methods", nargs="+", default=["teacher", "edit"], metavar="NAME")
    p.add_argument("--size", type=int, default=2048, help="square image size in px (default 2048)")
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16", "float16"])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=Path("bench-output"), help="directory for profile.md and .json")
    p.set_defaults(func=run)


def run(args) -> int:
    from tqdm.auto import tqdm

    from ..io import write_json, write_text
    from ..eval.measure import machine_info, resolve_device
    from .presets import PRESETS

    if args.size % 16 or args.size <= 0 or args.rounds < 1:
        raise ValueError(f"--size must be a positive multiple of 16 and --rounds >= 1, got {args.size}, {args.rounds}")
    device, preset = resolve_device(args.device), PRESETS[args.preset]
    for method in args.methods:
        meta_model(preset, method)  # a bad method fails before any block is built
    with tqdm(total=args.rounds, desc="bench profile", unit="round") as bar:
        results = run_rounds(preset, args.methods, args.size, args.dtypes, args.rounds, device, bar)
    command = "lindit " + " ".join(getattr(args, "argv", ["bench", "profile"]))
    machine = machine_info(device)
    md = profile_markdown(results, args.dtypes, command, machine)
    print(md)
    write_text(args.out / "profile.md", md + "\n")
    write_json(args.out / "profile.json", {"command": command, "machine": machine, "preset": preset.name,
                                           "size": args.size, "rounds": args.rounds,
                                           "results": [{"method": m, "dtype": d, "seconds": v}
                                                       for (m, d), v in results.items()]})
    print(f"\nwrote {args.out / 'profile.md'} and {args.out / 'profile.json'}")
    return 0
