"""``lindit export``: a transformer to ONNX or torch.export at a fixed size, verified, optionally timed."""

from __future__ import annotations

import json

from . import out_path, positive_int
from ..deploy.export import FORMATS

SUFFIXES = {"onnx": ".onnx", "torch-export": ".pt2"}


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("export", help="export a transformer to ONNX or torch.export and verify it")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="lindit folder, diffusers model or pipeline folder, hub id or builtin:NAME")
    src.add_argument("--preset", help="a published size with random weights (pixart-sigma, sd35-medium, dit-xl-2)")
    p.add_argument("--method", default="teacher",
                   help="with --preset: teacher or a lindit method (edit, mm_edit, lit ...)")
    p.add_argument("--blocks", type=positive_int, default=None, help="with --preset: keep the first K blocks")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--height", type=positive_int, required=True, help="image height in px")
    p.add_argument("--width", type=positive_int, required=True, help="image width in px")
    p.add_argument("--out", type=out_path, required=True, help="output file (.onnx or .pt2)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--vae-factor", type=positive_int, default=8, help="pixels per latent pixel (8 for all three families)")
    p.add_argument("--prompt-tokens", type=positive_int, default=None, help="prompt length baked into the graph "
                   "(default: PixArt 300, SD3 333)")
    p.add_argument("--bench", action="store_true", help="time eager PyTorch against the exported runtime")
    p.add_argument("--repeats", type=positive_int, default=3, help="timed runs per side with --bench (median)")
    p.set_defaults(func=run)


def _latent_hw(args, patch: int) -> tuple[int, int]:
    m = args.vae_factor * patch
    for name, value in (("height", args.height), ("width", args.width)):
        if value <= 0 or value % m:
            raise ValueError(f"--{name} {value} is not a positive multiple of {m} (VAE factor {args.vae_factor} "
                             f"x patch size {patch})")
    return args.height // args.vae_factor, args.width // args.vae_factor


def _model(args):
    if args.preset:
        from ..benchmarks.deploy_bench import preset_model

        return preset_model(args.preset, args.method, args.blocks)
    if args.blocks is not None or args.method != "teacher":
        raise ValueError("--method and --blocks apply to --preset models only")
    from ..models import load_model

    return load_model(args.model)


def run(args) -> int:
    from ..deploy.export import check_exportable

    from ..io import check_output

    if args.out.suffix != SUFFIXES[args.format]:
        raise ValueError(f"--out for {args.format} must end in {SUFFIXES[args.format]}, got {args.out.name}")
    check_output(args.out, args.overwrite, folder=False)
    model = _model(args)
    check_exportable(model, args.format)
    latent = _latent_hw(args, int(model.config.patch_size))
    result = _export(model, args, latent)
    print(f"wrote {args.out} ({args.height}x{args.width} px, latent {latent[0]}x{latent[1]}, grid fixed)")
    print(result.summary())
    report = result.as_dict() | {"tolerance": result.tolerance}
    if args.bench:
        report |= _bench(model, args, latent)
    print("export: " + json.dumps(report))
    return 0 if result.passed else 1


def _export(model, args, latent):
    """export_model, removing what it wrote if the export or its check fails (nothing broken is left)."""
    from ..deploy.export import export_model

    data = args.out.with_name(args.out.name + ".data")  # large ONNX models keep their weights beside the graph
    existed = {p for p in (args.out, data) if p.exists()}
    try:
        return export_model(model, args.format, args.out, latent, args.prompt_tokens)
    except BaseException:
        for path in {args.out, data} - existed:
            path.unlink(missing_ok=True)
        raise


def _bench(model, args, latent) -> dict:
    from ..benchmarks.deploy_bench import eager_vs_runtime
    from ..deploy.export import example_inputs
    from ..deploy.runtime import load_runner

    inputs = example_inputs(model, latent, args.prompt_tokens, seed=2)
    eager_s, runtime_s = eager_vs_runtime(model, load_runner(args.format, args.out), inputs, args.repeats)
    print(f"latency (median of {args.repeats}, runs interleaved): eager {eager_s:.4f} s, "
          f"{args.format} {runtime_s:.4f} s, eager / exported = {eager_s / runtime_s:.2f}x")
    return {"eager_s": eager_s, "exported_s": runtime_s}
