"""``lindit bench``: latency and memory benchmarks (scripts, never timed unit tests)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..io import write_json, write_text
from . import bench_attention as ba
from .measure import machine_info, resolve_device, resolve_dtype
from .report import fmt_mb, fmt_seconds, markdown_table, pivot


def add_parser(subparsers) -> None:
    bench = subparsers.add_parser("bench", help="latency and memory benchmarks")
    kinds = bench.add_subparsers(dest="bench_kind", metavar="KIND", required=True)
    att = kinds.add_parser("attention", help="one attention layer per mechanism against token count")
    _common(att)
    att.add_argument("--mechanisms", nargs="+", choices=list(ba.mechanisms()), metavar="NAME",
                     help=f"default: all ({', '.join(ba.mechanisms())}); --quick: {', '.join(ba.QUICK_MECHANISMS)}")
    att.add_argument("--tokens", nargs="+", type=int, help=f"square token counts (default {ba.FULL_TOKENS})")
    att.add_argument("--dim", type=int, default=1152, help="channels (PixArt-Sigma: 1152)")
    att.add_argument("--heads", type=int, default=16, help="heads (PixArt-Sigma: 16)")
    att.add_argument("--prompt-tokens", type=int, default=300, help="prompt tokens for joint mechanisms")
    att.set_defaults(func=run_attention)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="a small sweep that finishes in minutes")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if present)")
    p.add_argument("--max-seconds", type=float, default=None, help="skip cells predicted to take longer")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per cell (median reported)")
    p.add_argument("--out", type=Path, default=Path("bench-output"), help="directory for the JSON and markdown")


def run_attention(args) -> int:
    device, dtype = resolve_device(args.device), resolve_dtype(args.dtype)
    names = args.mechanisms or (list(ba.QUICK_MECHANISMS) if args.quick else list(ba.mechanisms()))
    tokens = args.tokens or (ba.QUICK_TOKENS if args.quick else ba.FULL_TOKENS)
    max_seconds = args.max_seconds if args.max_seconds is not None else (10.0 if args.quick else None)
    settings = ba.Settings(args.dim, args.heads, args.prompt_tokens, 1, dtype, device, max_seconds, args.repeats)
    cells = ba.run(names, tokens, settings)
    machine = machine_info(device)
    md = attention_markdown(cells, settings, machine)
    print(md)
    write_text(args.out / "attention.md", md + "\n")
    write_json(args.out / "attention.json", {
        "settings": {"dim": args.dim, "heads": args.heads, "prompt_tokens": args.prompt_tokens,
                     "dtype": args.dtype, "device": str(device), "max_seconds": max_seconds},
        "machine": machine,
        "cells": [c.as_dict() for c in cells],
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
