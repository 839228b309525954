"""``lindit deploy ...``: deployment measurements (``cli.DEPLOY`` names each subcommand's ``add_*``).

Each ``add_*`` imports its module only when its subcommand is the one run; the measuring is the library's
(``deploy.fidelity``, ``deploy.encoder_memory``) or, for the published sizes, the lab's
(``benchmarks.deploy_bench``, ``benchmarks.synthetic``).
"""

from __future__ import annotations

import shlex
from pathlib import Path

from . import finite_float, out_path, positive_int


def add_bench(subparsers) -> None:
    from ..benchmarks import deploy_bench as bench

    p = subparsers.add_parser("bench", help="latency of exported models in onnxruntime against eager PyTorch",
                              description=bench.__doc__.split("\n\n")[0])
    p.add_argument("--presets", nargs="+", choices=list(bench.STUDENTS), default=list(bench.STUDENTS))
    p.add_argument("--sizes", nargs="+", type=positive_int, default=[512, 1024], help="square sizes in px")
    p.add_argument("--blocks", type=positive_int, default=None, help="keep the first K blocks (default: full depth)")
    p.add_argument("--repeats", type=positive_int, default=3)
    p.add_argument("--extras", nargs="*", default=[], metavar="SPEC",
                   help="more timings per cell: eager quantized models (int8-dynamic, int8-dynamic@torch.ao, "
                   "int8-weight, int4-weight) and/or ort-int8 (onnxruntime's dynamic int8 of the exported file)")
    p.add_argument("--out", type=out_path, default=Path("bench-output/deploy"))
    p.set_defaults(func=run_bench)


def run_bench(args) -> int:
    import torch

    from ..benchmarks import deploy_bench as bench
    from ..eval.measure import machine_info
    from ..io import write_json, write_text

    command = "lindit " + shlex.join(args.argv)
    cells = _bench_cells(args)
    machine = machine_info(torch.device("cpu"))
    md = bench.markdown(cells, command, machine)
    print(md)
    write_text(args.out / "deploy_latency.md", md + "\n")
    write_json(args.out / "deploy_latency.json", {"command": command, "machine": machine,
                                                  "cells": [c.as_dict() for c in cells]})
    return 0 if all(c.passed for c in cells) else 1


def _bench_cells(args) -> list:
    import tempfile

    from ..benchmarks.deploy_bench import STUDENTS, bench_cell

    cells = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets:
            for method in ("teacher", STUDENTS[preset]):
                for size in args.sizes:
                    cells.append(bench_cell(preset, method, size, args.blocks, args.repeats, Path(tmp),
                                            tuple(args.extras)))
                    c = cells[-1]
                    print(f"{preset} {method} {size}px: eager {c.eager_s:.3f} s, onnxruntime {c.onnxruntime_s:.3f} s, "
                          f"error {c.max_abs_error:.2g} (tol {c.tolerance:.2g})", flush=True)
    return cells


def add_quality(subparsers) -> None:
    from ..deploy import fidelity

    p = subparsers.add_parser("quality", help="MSE / PSNR of quantized against float images, same noise and prompt",
                              description=fidelity.__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="lindit folder (or any model spec lindit generate takes)")
    p.add_argument("--base", default=None, help="pipeline folder with VAE, scheduler and text encoders")
    p.add_argument("--schemes", nargs="+", default=["int8-dynamic", "int8-weight", "int4-weight"],
                   help="schemes, optionally with a backend: int8-dynamic@torch.ao")
    p.add_argument("--prompt", action="append", default=[], help="prompt (repeatable)")
    p.add_argument("--class-label", type=int, action="append", default=None, help="DiT class label (repeatable)")
    p.add_argument("--height", type=positive_int, default=512)
    p.add_argument("--width", type=positive_int, default=512)
    p.add_argument("--steps", type=positive_int, default=20)
    p.add_argument("--guidance", type=finite_float, default=4.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--group-size", type=positive_int, default=fidelity.DEFAULT_GROUP_SIZE)
    p.add_argument("--world", choices=("pixart", "mmdit", "dit"), default=None,
                   help="built-in teacher whose world scores --model (the teacher or its student) with the "
                        "demo's FID, adherence and MSE over --n held-out prompts; --prompt/--height are unused")
    p.add_argument("--n", type=positive_int, default=200, help="held-out prompts for --world")
    p.add_argument("--out", type=out_path, default=Path("bench-output/quality"))
    p.set_defaults(func=run_quality)


def run_quality(args) -> int:
    from ..deploy.fidelity import markdown, quantization_quality
    from ..generate import Request, pipeline
    from ..io import write_json, write_text

    command = "lindit " + shlex.join(args.argv)
    if args.world is not None:
        return _world_quality(args, command)
    pipe = pipeline(args.model, base=args.base)
    req = Request(args.prompt, None, args.height, args.width, args.steps, args.guidance, args.seed, 1, args.class_label)
    rows = quantization_quality(pipe, req, args.schemes, getattr(pipe, "lindit_encode_prompts", None), args.group_size)
    md = markdown(rows, command, req)
    print(md)
    write_text(args.out / "quality.md", md + "\n")
    write_json(args.out / "quality.json", {"command": command, "rows": [r.as_dict() for r in rows]})
    return 0


def _world_quality(args, command: str) -> int:
    from ..deploy.fidelity import world_markdown, world_quality
    from ..io import write_json, write_text
    from ..models import load_model

    rows = world_quality(args.world, load_model(args.model), args.schemes, args.n, args.steps, args.seed,
                         args.group_size)
    md = world_markdown(rows, command, args.n, args.steps)
    print(md)
    write_text(args.out / "quality.md", md + "\n")
    write_json(args.out / "quality.json", {"command": command, "rows": rows})
    return 0


def add_synthetic(subparsers) -> None:
    from ..benchmarks import synthetic

    p = subparsers.add_parser("synthetic", help="write a random-weight pipeline folder at a published size",
                              description=synthetic.__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=list(synthetic.BUILDERS), default="pixart-sigma")
    p.add_argument("--text-layers", type=positive_int, default=1, help="T5 layers of the stand-in text encoder")
    p.add_argument("--out", type=out_path, required=True)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run_synthetic)


def run_synthetic(args) -> int:
    from ..benchmarks.synthetic import BUILDERS
    from ..io import atomic_dir, check_output

    check_output(args.out, args.overwrite)  # before building a full-size model
    pipe = BUILDERS[args.preset](args.text_layers)
    with atomic_dir(args.out, overwrite=args.overwrite) as tmp:
        pipe.save_pretrained(tmp)
    print(f"wrote {args.out} ({args.preset}, random weights)")
    return 0


def add_encoder_memory(subparsers) -> None:
    from ..deploy import encoder_memory

    p = subparsers.add_parser("encoder-memory", help="peak memory of loading T5-XXL as stored and in int8",
                              description=encoder_memory.__doc__.split("\n\n")[0])
    p.add_argument("--dir", type=out_path, required=True, help="folder for the random-weight T5-XXL encoder")
    p.set_defaults(func=run_encoder_memory)


def run_encoder_memory(args) -> int:
    from ..deploy.encoder_memory import WAYS, peak_mb, write_random_encoder

    write_random_encoder(args.dir)
    size = sum(f.stat().st_size for f in args.dir.glob("*.safetensors")) / 2**20
    rows = [(w, peak_mb(args.dir, w)) for w in WAYS]
    print(f"T5-XXL encoder, {size:,.0f} MB of bfloat16 safetensors; one 300-token prompt encoded\n")
    print("| text encoder weights | peak resident memory (MB) |\n|---|---|")
    for weights, mb in rows:
        print(f"| {WAYS[weights]} | {mb:,.0f} |")
    return 0
