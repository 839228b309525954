"""``lindit bench``: latency and memory benchmarks (scripts, never timed unit tests)."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import positive_float, positive_int
from ..io import write_json, write_text
from ..benchmarks import attention_layer as ba
from ..dtypes import dtype_name, resolve_dtype
from ..eval.measure import machine_info, resolve_device
from ..eval.report import fmt_mb, fmt_seconds, markdown_table, pivot
from ..benchmarks.presets import PRESETS
from ..integrations.diffusers.families import FAMILIES

FULL_RES = (512, 1024, 2048, 4096, 8192)
QUICK_RES = (512, 1024, 2048)
NON_SQUARE = "768x1344"


def add_parser(subparsers) -> None:
    bench = subparsers.add_parser("bench", help="latency and memory benchmarks")
    kinds = bench.add_subparsers(dest="bench_kind", metavar="KIND", required=True)
    model = kinds.add_parser("model", help="one transformer forward per family, method and resolution")
    _common(model)
    model.add_argument("--presets", nargs="+", choices=list(PRESETS), default=list(PRESETS))
    model.add_argument("--methods", nargs="+", metavar="NAME", help="only these methods ('teacher' = unconverted); "
                       "NAME:KEY=VALUE[,KEY=VALUE] times a variant with lindit.convert options, e.g. edit:cf_reduction=8")
    model.add_argument("--resolutions", nargs="+", type=positive_int, help=f"square sizes in px (default {FULL_RES})")
    model.add_argument("--non-square", default=None, metavar="HxW",
                       help=f"one non-square bucket in px (default {NON_SQUARE}; 'none' to skip)")
    model.add_argument("--layers", default="1", help="'1': time one block of each type and estimate the full "
                       "depth (labelled ~); 'full': time the real full-depth forward")
    model.add_argument("--no-attention", action="store_true", help="skip the attention-only timings")
    model.add_argument("--compile", action="store_true",
                       help="torch.compile every timed block (its first, compiling call is reported apart)")
    model.set_defaults(func=run_model)
    par = kinds.add_parser("parallel", help="sequence-parallel forward time and communication against P")
    par.add_argument("--preset", default="pixart-sigma", choices=list(PRESETS))
    par.add_argument("--method", default="edit")
    par.add_argument("--size", default="2048x2048", metavar="HxW", help="px")
    par.add_argument("--processes", type=positive_int, nargs="+", default=[1, 2])
    par.add_argument("--blocks", type=positive_int, default=2, help="blocks in the timed model")
    par.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    par.add_argument("--repeats", type=positive_int, default=3)
    par.add_argument("--out", type=Path, default=Path("bench-output"))
    par.set_defaults(func=run_parallel)
    att = kinds.add_parser("attention", help="one attention layer per mechanism against token count")
    _common(att)
    att.add_argument("--mechanisms", nargs="+", choices=list(ba.mechanisms()), metavar="NAME",
                     help=f"default: all ({', '.join(ba.mechanisms())}); --quick: {', '.join(ba.QUICK_MECHANISMS)}")
    att.add_argument("--tokens", nargs="+", type=positive_int, help=f"square token counts (default {ba.FULL_TOKENS})")
    att.add_argument("--dim", type=positive_int, default=1152, help="channels (PixArt-Sigma: 1152)")
    att.add_argument("--heads", type=positive_int, default=16, help="heads (PixArt-Sigma: 16)")
    att.add_argument("--prompt-tokens", type=positive_int, default=300, help="prompt tokens for joint mechanisms")
    att.set_defaults(func=run_attention)
    from ..benchmarks.hybrid import add_parser as add_hybrid
    from ..benchmarks.paired import add_parser as add_paired
    from ..benchmarks.precision import add_parser as add_precision
    from ..benchmarks.profile import add_parser as add_profile
    from ..benchmarks.targets import add_parser as add_targets

    add_paired(kinds)
    add_targets(kinds)
    add_precision(kinds)
    add_profile(kinds)
    add_hybrid(kinds)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="a small sweep that finishes in minutes")
    p.add_argument("--dtype", nargs="+", default=["float32"], type=dtype_name, metavar="DTYPE",
                   help="float32, bfloat16 (bf16), float16 (fp16); several are timed in one run, and a half "
                        "dtype brings float32 along as its baseline unless --baseline none")
    p.add_argument("--baseline", default="float32", choices=["float32", "none"],
                   help="the dtype every other one is compared with (default float32; none: only --dtype)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if present)")
    p.add_argument("--max-seconds", type=positive_float, default=None, help="skip cells predicted to take longer")
    p.add_argument("--repeats", type=positive_int, default=5, help="timed runs per cell (median reported)")
    p.add_argument("--out", type=Path, default=Path("bench-output"), help="directory for the JSON and markdown")


def dtypes(args) -> list[str]:
    """The run's dtypes, baseline first (bf16 alone is timed beside float32 so it can be compared)."""
    wanted = list(dict.fromkeys(args.dtype))
    if args.baseline != "none" and args.baseline not in wanted:
        wanted.insert(0, args.baseline)
    return sorted(wanted, key=lambda d: d != args.baseline)


def run_attention(args) -> int:
    device = resolve_device(args.device)
    names = args.mechanisms or (list(ba.QUICK_MECHANISMS) if args.quick else list(ba.mechanisms()))
    tokens = args.tokens or (ba.QUICK_TOKENS if args.quick else ba.FULL_TOKENS)
    max_seconds = args.max_seconds if args.max_seconds is not None else (10.0 if args.quick else None)
    machine, parts, cells = machine_info(device), [], {}
    for d in dtypes(args):
        settings = ba.Settings(args.dim, args.heads, args.prompt_tokens, 1, resolve_dtype(d), device, max_seconds,
                               args.repeats)
        cells[d] = ba.run(names, tokens, settings)
        parts.append(attention_markdown(cells[d], settings, machine))
    if len(cells) > 1:
        parts.append(_attention_dtype_table(cells))
    md = "\n\n".join(parts)
    print(md)
    write_text(args.out / "attention.md", md + "\n")
    write_json(args.out / "attention.json", {
        "settings": {"dim": args.dim, "heads": args.heads, "prompt_tokens": args.prompt_tokens,
                     "dtype": dtypes(args)[0], "dtypes": dtypes(args), "device": str(device),
                     "max_seconds": max_seconds},
        "machine": machine,
        "cells": [{**c.as_dict(), "dtype": d} for d, cs in cells.items() for c in cs],
    })
    print(f"\nwrote {args.out / 'attention.md'} and {args.out / 'attention.json'}")
    return 0


def attention_markdown(cells, settings: ba.Settings, machine: dict) -> str:
    rows, cols, lat = pivot(cells, "mechanism", "tokens", lambda c: fmt_seconds(c.latency_s) if not c.skipped else "skipped")
    _, _, mem = pivot(cells, "mechanism", "tokens", lambda c: fmt_mb(c.peak_mem_mb))
    base = {c.tokens: c.latency_s for c in cells if c.mechanism == "softmax" and c.latency_s}
    header = ["mechanism"] + [f"N={n}" for n in cols]
    latency = markdown_table(header, [[r] + [lat[(r, n)] for n in cols] for r in rows])
    memory = markdown_table(header, [[r] + [mem[(r, n)] for n in cols] for r in rows])
    speed = {(c.mechanism, c.tokens): c.latency_s for c in cells if c.latency_s}
    ratio_rows = [[r] + [f"{base[n] / speed[(r, n)]:.2f}x" if n in base and (r, n) in speed else "-" for n in cols]
                  for r in rows]
    skipped = [f"- {c.mechanism} N={c.tokens}: skipped, {c.skipped}" for c in cells if c.skipped]
    return "\n\n".join([
        f"One attention layer, width {settings.dim}, {settings.heads} heads, batch {settings.batch}, "
        f"{str(settings.dtype).replace('torch.', '')}, {machine['device']} ({machine['cpu']}, "
        f"{machine['torch_threads']} threads, torch {machine['torch']}). Joint mechanisms add "
        f"{settings.prompt_tokens} prompt tokens.",
        "Latency (median)\n\n" + latency,
        "Speed-up over softmax self-attention (same run)\n\n" + markdown_table(header, ratio_rows),
        "Peak memory (MB, " + ("max allocated" if machine["device"].startswith("cuda") else "RSS growth") + ")\n\n" + memory,
    ] + (["\n".join(skipped)] if skipped else []))


def _attention_dtype_table(cells: dict) -> str:
    base, *others = list(cells)
    ref = {(c.mechanism, c.tokens): c.latency_s for c in cells[base]}
    rows = []
    for d in others:
        for c in cells[d]:
            r = ref.get((c.mechanism, c.tokens))
            rows.append([c.mechanism, f"{base} / {d}", f"N={c.tokens}",
                         f"{r / c.latency_s:.2f}x" if r and c.latency_s else "-"])
    return f"Speed-up over {base} (sequential cells of one run: see `lindit bench paired --dtype` for interleaved " \
           "ratios)\n\n" + markdown_table(["mechanism", "dtypes", "tokens", "speed-up"], rows)


def _sizes(args) -> list[tuple[int, int]]:
    res = args.resolutions or (QUICK_RES if args.quick else FULL_RES)
    sizes = [(r, r) for r in res]
    bucket = args.non_square or (None if args.quick else NON_SQUARE)
    if bucket and bucket != "none":
        h, sep, w = bucket.partition("x")
        if not sep or not h.isdigit() or not w.isdigit():
            raise ValueError(f"--non-square expects HxW in px, e.g. 768x1344, got {bucket!r}")
        sizes.append((int(h), int(w)))
    bad = [f"{h}x{w}" for h, w in sizes if h % 16 or w % 16]
    if bad:
        raise ValueError(f"sizes must be multiples of 16 px (VAE factor 8 x patch 2), got {', '.join(bad)}")
    return sizes


def _methods(preset, wanted) -> list[str]:
    if not wanted:
        return list(preset.methods)
    return [m for m in wanted if m == "teacher" or m in preset.methods or _fits(preset, m)]


def _fits(preset, method) -> bool:
    from ..integrations.diffusers.families import FAMILIES
    from ..methods import REGISTRY, method_variant

    method = method_variant(method)[0]  # a variant fits where its method does
    return method in REGISTRY and REGISTRY[method].kind == FAMILIES[preset.family].kind


def run_model(args) -> int:
    from tqdm.auto import tqdm

    from ..benchmarks import model_forward as bm
    from ..benchmarks import model_report as br
    from ..eval.measure import matmul_gflops

    device, names = resolve_device(args.device), dtypes(args)
    if args.layers not in ("1", "full"):
        raise ValueError(f"--layers must be 1 or full, got {args.layers!r}")
    unknown = [m for m in (args.methods or []) if m != "teacher" and not any(_fits(p, m) for p in PRESETS.values())]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; valid: teacher, {', '.join(sorted(ba.mechanisms()))}")
    sizes = _sizes(args)
    max_seconds = args.max_seconds if args.max_seconds is not None else (20.0 if args.quick else None)
    presets = [PRESETS[p] for p in args.presets]
    plan = [(p, m) for p in presets for m in _methods(p, args.methods)]
    for preset, method in plan:  # bad variant options fail here, not an hour into the sweep
        bm.meta_model(preset, method)
    ceilings = {d: matmul_gflops(device, resolve_dtype(d)) for d in names}
    cells: list = []
    linear_first = sorted(plan, key=lambda pm: bm.method_variant(pm[1])[0] in bm.QUADRATIC)  # overheads measured on fast blocks
    with tqdm(total=len(plan) * len(sizes) * len(names), desc="bench model", unit="cell") as bar:
        for d in names:
            settings = bm.ModelSettings(device, resolve_dtype(d), args.layers, max_seconds, args.repeats, ceilings[d],
                                        compile=args.compile)
            overheads: dict = {}
            for preset, method in linear_first:
                bar.set_postfix_str(f"{preset.name} {method} {d}")
                bm.bench_method(preset, method, sizes, settings, cells, overheads, progress=bar)
                # An hour-long sweep must not lose its finished cells to a later failure or a kill.
                write_json(args.out / "bench.partial.json", {"command": "lindit " + " ".join(args.argv),
                                                             "cells": [c.as_dict() for c in cells]})
    order = {pm: i for i, pm in enumerate((p.name, m) for p, m in plan)}
    cells.sort(key=lambda c: (names.index(c.dtype), order[(c.preset, c.method)]))
    attention = [] if args.no_attention else _attention_cells(plan, sizes, settings)
    machine = machine_info(device)
    md = model_markdown(cells, attention, args, machine, ceilings, names)
    print(md)
    write_text(args.out / "bench.md", md + "\n")
    br.plot(cells, args.out / "bench.png", ", ".join(names))
    write_json(args.out / "bench.json", {
        "command": "lindit " + " ".join(args.argv),
        "settings": {"dtype": names[0], "dtypes": names, "device": str(device), "layers": args.layers,
                     "max_seconds": max_seconds, "sizes": sizes, "repeats": args.repeats, "compile": args.compile},
        "machine": machine, "matmul_gflops": ceilings[names[0]], "matmul_gflops_by_dtype": ceilings,
        "slopes": {(f"{p}/{m}" if d == names[0] else f"{p}/{m}/{d}"): v for (p, m, d), v in br.slopes(cells).items()},
        "cells": [c.as_dict() for c in cells],
        "attention_cells": [c.as_dict() for c in attention],
    })
    (args.out / "bench.partial.json").unlink(missing_ok=True)
    print(f"\nwrote {args.out / 'bench.md'}, {args.out / 'bench.json'} and {args.out / 'bench.png'}")
    return 0


def _attention_cells(plan, sizes, settings):
    """Attention-only timings of each method's layer at the square sizes' token counts."""
    names = []
    for preset, method in plan:
        name = FAMILIES[preset.family].teacher_attention if method == "teacher" else method
        names += [name] if name not in names else []
    tokens = [(h // 16) * (w // 16) for h, w in sizes if h == w]
    s = ba.Settings(1152, 16, 333, 1, settings.dtype, settings.device, settings.max_seconds, settings.repeats)
    return ba.run(names, tokens, s)


def model_markdown(cells, attention, args, machine, ceilings: dict, names: list[str]) -> str:
    from ..benchmarks import model_report as br

    rates = ", ".join(f"{d} {g:.0f}" for d, g in ceilings.items())
    parts = [
        f"Command: `lindit {' '.join(args.argv)}`\n\n"
        f"Machine: {machine['cpu']}, {machine['torch_threads']} threads, {machine['device']}, torch {machine['torch']}; "
        f"dense matmul (2048^3) in the same run, GFLOP/s: {rates}."
        + (" Every timed block is torch.compiled; its first (compiling) call is not in the times."
           if args.compile else ""),
    ]
    for d in names:
        mine = [c for c in cells if c.dtype == d]
        parts += [f"### {d}" if len(names) > 1 else "", *_dtype_sections(mine, d, ceilings[d], args, machine)]
    if len(names) > 1:
        parts.append(f"Per-block speed-up over {names[0]}, the same block in each dtype (sequential cells of one run; "
                     "`lindit bench paired --dtype` interleaves them)\n\n" + br.dtype_table(cells, names))
    parts += [
        "Fitted log-log slope of forward time against pixels (square sizes >= 1024 px): "
        + ", ".join(f"{p}/{m} ({d}) {v:.2f}" for (p, m, d), v in br.slopes(cells).items() if v is not None),
        "For reference, EDiT Table 3 (NVIDIA A100, one forward, seconds; not measured here)\n\n" + br.paper_table(),
    ]
    if attention:
        parts.append("Attention layer only (width 1152, 16 heads; joint layers with 333 prompt tokens)\n\n"
                     + attention_markdown(attention, ba.Settings(), machine).split("\n\n", 1)[1])
    skipped = br.skipped_lines(cells)
    return "\n\n".join([p for p in parts if p] + (["\n".join(skipped)] if skipped else []))


def _dtype_sections(cells, dtype: str, ceiling: float, args, machine: dict) -> list[str]:
    from ..benchmarks import model_report as br

    return [
        "One transformer forward, batch 1, " + dtype + (
            ". `~` marks an estimate: one block of each type timed, times the model's depth, plus embedding and "
            "final layers timed once." if args.layers == "1" else ", full depth timed."),
        br.forward_table(cells),
        "Per-block latency (median; `block0`, `block1` ... are the distinct block types, e.g. SD3.5's dual-attention "
        "and plain blocks)\n\n" + br.block_table(cells, "latency"),
        "Per-block speed-up, teacher / method (same run)\n\n" + br.block_table(cells, "ratio"),
        f"Achieved GFLOP/s per block (FLOPs counted by torch's flop counter; matmul ceiling {ceiling:.0f})\n\n"
        + br.block_table(cells, "gflops"),
        "Peak memory per block (MB, " + ("max allocated" if machine["device"].startswith("cuda") else "RSS growth")
        + ")\n\n" + br.block_table(cells, "memory"),
    ]


def run_parallel(args) -> int:
    from ..benchmarks import sequence_parallel as bench_parallel

    h, _, w = args.size.partition("x")
    if not (h.isdigit() and w.isdigit()) or int(h) % 16 or int(w) % 16:
        raise ValueError(f"--size expects HxW in px, multiples of 16, got {args.size!r}")
    results = bench_parallel.run(args.preset, args.method, int(h), int(w), args.processes, args.blocks,
                                 args.dtype, args.repeats)
    base = results[0]["forward_s"]
    rows = [[r["processes"], r["threads"], fmt_seconds(r["forward_s"]), f"{base / r['forward_s']:.2f}x",
             f"{r['bytes_per_layer'] / 2**20:.2f} MB"] for r in results]
    md = (f"Command: `lindit {' '.join(args.argv)}`\n\n{args.preset} {args.method}, {args.size} px, "
          f"{args.blocks} blocks, {args.dtype}, CPU (gloo)\n\n"
          + markdown_table(["processes", "threads each", "forward", "speed-up", "sent per layer (process 0)"], rows))
    print(md)
    write_text(args.out / "parallel.md", md + "\n")
    write_json(args.out / "parallel.json", {"command": "lindit " + " ".join(args.argv), "results": results})
    return 0
