"""``lindit bench hybrid``: memory and time of MM-EDiT's hybrid attention against its first implementation.

``hybrid_attention`` (the image-prompt softmax and eta^Lin from the attentions' own log-sum-exps; prompt rows
as two softmax attentions merged by log-sum-exp) against ``hybrid_attention_reference`` (the (B, H, N_I, N_P)
float32 scores and their exp materialised; prompt rows over concatenated keys), at one layer of SD3.5-Medium:
24 heads x 64, N_I image queries (a 4096 px image: 65,536), the Spatial Compressor's N_I / 4 image keys and
333 prompt tokens. Each variant runs in a rotating order for ``--rounds`` rounds; peak memory is what the
call allocates (its output included), counted per tensor, and the resident-set growth.

    lindit bench hybrid --size 4096 --out docs/bench/hybrid-4096
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch

from ..functional import hybrid_attention, hybrid_attention_reference
from ..dtypes import dtype_name, resolve_dtype
from ..eval.timing import timed
from .precision import temporaries
from ..eval.measure import peak_memory_bytes, resolve_device

IMPLEMENTATIONS = {"streaming (lindit)": hybrid_attention, "reference (materialised)": hybrid_attention_reference}


def inputs(size_px: int, heads: int, dim: int, prompt: int, dtype, device, seed: int = 0):
    """SD3.5-Medium-shaped MM-EDiT inputs at ``size_px``: phi'd image queries and compressed keys, prompt tokens."""
    g = torch.Generator().manual_seed(seed)
    n_i = (size_px // 16) ** 2
    shapes = [(1, heads, n, dim) for n in (n_i, n_i // 4, n_i // 4, prompt, prompt, prompt)]
    ts = [torch.randn(*s, generator=g) for s in shapes]
    ts[0], ts[1] = torch.relu(ts[0]), torch.relu(ts[1])
    return [t.to(device=device, dtype=dtype) for t in ts]


def run_rounds(size_px, etas, dtype, device, rounds, heads=24, dim=64, prompt=333) -> list[dict]:
    args = inputs(size_px, heads, dim, prompt, dtype, device)
    variants = [(name, eta) for eta in etas for name in IMPLEMENTATIONS]
    rows = {v: {"implementation": v[0], "eta": v[1], "seconds": [], "allocated_mb": None, "rss_mb": None}
            for v in variants}
    for name, eta in variants:
        call = _call(IMPLEMENTATIONS[name], args, eta)
        rows[(name, eta)]["allocated_mb"] = temporaries(call) / 2**20
        rss = peak_memory_bytes(call, device)
        rows[(name, eta)]["rss_mb"] = None if rss < 0 else rss / 2**20
    for r in range(rounds):
        shift = r % len(variants)
        for v in variants[shift:] + variants[:shift]:
            rows[v]["seconds"].append(timed(_call(IMPLEMENTATIONS[v[0]], args, v[1]), device))
    n_i = args[0].shape[-2]
    for row in rows.values():
        row.update(size_px=size_px, n_img=n_i, n_keys=n_i // 4, n_prompt=prompt, heads=heads, dim=dim,
                   dtype=str(dtype).removeprefix("torch."), median_s=statistics.median(row["seconds"]))
    return list(rows.values())


def _call(fn, args, eta):
    def call():
        with torch.no_grad():
            return fn(*args, eta=eta)

    return call


def add_parser(kinds) -> None:
    p = kinds.add_parser("hybrid", help="MM-EDiT hybrid attention: memory and time against its first form",
                         description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=4096, help="image size in px (default 4096)")
    p.add_argument("--eta", nargs="+", default=["exact", "approx"], choices=["exact", "approx"])
    p.add_argument("--dtype", default="float32", type=dtype_name, metavar="DTYPE")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=Path("bench-output"), help="directory for hybrid.md and .json")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..io import write_json, write_text
    from ..eval.measure import machine_info
    from ..eval.report import fmt_seconds, markdown_table

    if args.size <= 0 or args.size % 32 or args.rounds < 1:
        raise ValueError(f"--size must be a positive multiple of 32 and --rounds >= 1, got {args.size}, {args.rounds}")
    device = resolve_device(args.device)
    rows = run_rounds(args.size, args.eta, resolve_dtype(args.dtype), device, args.rounds)
    command = "lindit " + " ".join(getattr(args, "argv", ["bench", "hybrid"]))
    machine = machine_info(device)
    first = rows[0]
    table = markdown_table(
        ["eta", "implementation", "allocated (MB)", "RSS growth (MB)", "median time", "times"],
        [[r["eta"], r["implementation"], f"{r['allocated_mb']:,.0f}",
          "-" if r["rss_mb"] is None else f"{r['rss_mb']:,.0f}", fmt_seconds(r["median_s"]),
          ", ".join(fmt_seconds(s) for s in r["seconds"])] for r in rows])
    md = (f"Made by `{command}` ({machine['cpu']}, {machine['torch_threads']} threads, torch {machine['torch']}): "
          f"one MM-EDiT layer's attention at {args.size} px, SD3.5-Medium shapes: {first['heads']} heads x "
          f"{first['dim']}, {first['n_img']:,} image queries, {first['n_keys']:,} compressed image keys, "
          f"{first['n_prompt']} prompt tokens, batch 1, {first['dtype']}, with prompt rows. Allocated = peak bytes of "
          f"the tensors the call creates (its outputs included); the variants alternate over {args.rounds} "
          f"rounds.\n\n" + table)
    print(md)
    write_text(args.out / "hybrid.md", md + "\n")
    write_json(args.out / "hybrid.json", {"command": command, "machine": machine, "rows": rows})
    print(f"\nwrote {args.out / 'hybrid.md'} and {args.out / 'hybrid.json'}")
    return 0
