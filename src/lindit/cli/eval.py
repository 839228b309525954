"""``lindit eval``: generate one image per prompt (or class label) and measure the images' quality.

    lindit eval --model builtin:pixart --prompts prompts.txt --reference real/ --out runs/pixart \\
        --height 32 --width 32 --steps 20 --guidance 3

writes ``runs/pixart/images/*.png`` and ``runs/pixart/metrics.json`` (settings, metrics, the metrics skipped
and why, the command). See docs/EVAL.md.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import torch

from . import finite_float, out_path, positive_int
from ..io import atomic_dir, check_output, write_json
from ..eval import quality


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("eval", help="FID, CLIP score and prompt adherence of a model's images",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="lindit folder, diffusers folder, hub id or builtin:NAME")
    p.add_argument("--base", default=None, help="pipeline folder with VAE, scheduler and text encoders, "
                   "or builtin:NAME for a student of a built-in teacher")
    p.add_argument("--prompts", type=Path, help="text file, one prompt per line (# comments ignored)")
    p.add_argument("--class-labels", help="DiT models: a file of class ids, one per line, or a list like 0,3,17")
    p.add_argument("--reference", type=Path, help="folder of real PNG/JPG images for the FIDs")
    p.add_argument("--out", type=out_path, required=True, help="output folder: images/ and metrics.json")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.add_argument("--inception-weights", type=Path,
                   help="FID Inception-v3 weights (.safetensors, or torch-fidelity's .pth) for Inception FID")
    p.add_argument("--clip-model", type=Path, help="local folder of a transformers CLIPModel + CLIPProcessor")
    p.add_argument("--height", type=positive_int, default=None, help="px (default: the model's trained size)")
    p.add_argument("--width", type=positive_int, default=None, help="px (default: the model's trained size)")
    p.add_argument("--steps", type=positive_int, default=20)
    p.add_argument("--guidance", type=finite_float, default=4.5)
    p.add_argument("--seed", type=int, default=0, help="pipeline call b uses seed + b")
    p.add_argument("--batch-size", type=positive_int, default=8, help="images per pipeline call and per metric batch")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--device", default="auto")
    p.set_defaults(func=run)


def _conditions(args) -> list:
    """The prompts or class labels to generate from (exactly one of --prompts / --class-labels)."""
    if (args.prompts is None) == (args.class_labels is None):
        raise ValueError("pass either --prompts FILE (text-to-image models) or --class-labels (DiT models)")
    return quality.read_prompts(args.prompts) if args.prompts else quality.parse_class_labels(args.class_labels)


def _check_request(pipe, conditions: list, size: tuple[int, int], args) -> None:
    """Prompts for text models, class labels in range for DiT (and in the world's classes for its models),
    and a size and step count the pipeline accepts: checked before any reference image is read."""
    from ..generate import Request, check_request

    labels = isinstance(conditions[0], int)
    if quality.is_class_conditional(pipe) != labels:
        want = "--class-labels" if not labels else "--prompts"
        raise ValueError(f"{type(pipe.transformer).__name__} is {'not ' * labels}class-conditional: pass {want}")
    if labels:
        quality.check_labels(conditions, int(pipe.transformer.config.num_embeds_ada_norm))
        if quality.is_world_pipeline(pipe):
            from ..world.shapes import ShapesClassDataset

            quality.check_labels(conditions, ShapesClassDataset.num_classes)
    check_request(pipe, Request(prompts=[] if labels else conditions[:1], height=size[0], width=size[1],
                                steps=args.steps, class_labels=conditions[:1] if labels else None))


def _metric_inputs(args) -> dict:
    """Reference files, FID feature extractor and CLIP model: checked and loaded before the pipeline, so a bad
    path fails in seconds rather than after the images are made."""
    inputs = {"reference": None, "feature": None, "clip": None}
    if args.reference is not None:
        inputs["reference"] = quality.image_files(args.reference)
    if args.inception_weights is not None:
        from ..eval.inception import InceptionFeatures

        inputs["feature"] = InceptionFeatures.from_file(args.inception_weights)
    if args.clip_model is not None:
        inputs["clip"] = quality.load_clip(args.clip_model)
    return inputs


def _save_images(images: list, conditions: list, folder: Path, first: int) -> None:
    """PNGs ``first``, ``first + 1`` ... with their prompt or class label as PNG text."""
    from PIL.PngImagePlugin import PngInfo

    key = "class_label" if isinstance(conditions[0], int) else "prompt"
    for i, (image, condition) in enumerate(zip(images, conditions), start=first):
        info = PngInfo()
        info.add_text(key, str(condition))
        image.save(folder / f"{i:05d}.png", format="PNG", pnginfo=info)


def _generate_and_measure(args, pipe, conditions, size, evaluation, folder: Path) -> dict[str, float]:
    """Generate batch by batch, saving and measuring each batch as it comes; seconds spent on each."""
    seconds, done = {"generation": 0.0, "metrics": 0.0}, 0
    batches = quality.generate_batches(pipe, conditions, *size, steps=args.steps, guidance=args.guidance,
                                       seed=args.seed, batch_size=args.batch_size)
    start = time.perf_counter()
    for part, images in batches:
        _save_images(images, part, folder, done)
        measured = time.perf_counter()
        seconds["generation"] += measured - start
        evaluation.add(images, part)
        start = time.perf_counter()
        seconds["metrics"] += start - measured
        done += len(part)
    return seconds


def _record(args, conditions, inputs, size, device, report, seconds) -> dict:
    from .. import __version__

    return {
        "command": "lindit " + shlex.join(getattr(args, "argv", None) or ["eval"]),
        "model": args.model, "base": args.base,
        "settings": {"height": size[0], "width": size[1], "steps": args.steps, "guidance": args.guidance,
                     "seed": args.seed, "batch_size": args.batch_size, "dtype": args.dtype, "device": str(device)},
        "inputs": {"prompts": None if args.prompts is None else str(args.prompts),
                   "class_labels": args.class_labels, "images": len(conditions),
                   "reference": None if args.reference is None else str(args.reference),
                   "reference_images": None if inputs["reference"] is None else len(inputs["reference"]),
                   "inception_weights": None if args.inception_weights is None else str(args.inception_weights),
                   "clip_model": None if args.clip_model is None else str(args.clip_model)},
        **report,
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "versions": {"lindit": __version__, "torch": torch.__version__},
    }


def run(args) -> int:
    from ..generate import pipeline
    from ..dtypes import resolve_dtype
    from ..eval.measure import resolve_device

    conditions = _conditions(args)
    check_output(args.out, args.overwrite)
    if args.batch_size <= 0:
        raise ValueError(f"--batch-size must be positive, got {args.batch_size}")
    device = resolve_device(args.device)
    inputs = _metric_inputs(args)
    pipe = pipeline(args.model, base=args.base, dtype=resolve_dtype(args.dtype), device=device)
    size = (args.height or quality.trained_size(pipe), args.width or quality.trained_size(pipe))
    _check_request(pipe, conditions, size, args)
    start = time.perf_counter()
    evaluation = quality.Evaluation(world=quality.is_world_pipeline(pipe), batch_size=args.batch_size, **inputs)
    reference_seconds = time.perf_counter() - start
    with atomic_dir(args.out, overwrite=args.overwrite) as tmp:
        (tmp / "images").mkdir()
        seconds = _generate_and_measure(args, pipe, conditions, size, evaluation, tmp / "images")
        start = time.perf_counter()
        report = evaluation.report()
        seconds["metrics"] += time.perf_counter() - start + reference_seconds
        write_json(tmp / "metrics.json", _record(args, conditions, inputs, size, device, report, seconds))
    for name, value in report["metrics"].items():
        print(f"{name:>10}: {value:.4f}")
    for name, why in report["skipped"].items():
        print(f"{name:>10}: skipped ({why})")
    print(f"wrote {args.out / 'metrics.json'} and {len(conditions)} images in {args.out / 'images'}")
    return 0
