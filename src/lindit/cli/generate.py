"""``lindit generate``: images from a lindit (or teacher) model with its family's stock pipeline."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from .. import __version__
from . import finite_float, out_path, positive_int
from ..dtypes import dtype_name, resolve_dtype


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("generate", help="generate images with the stock diffusers pipeline")
    p.add_argument("--model", required=True, help="lindit folder, diffusers folder, hub id or builtin:NAME")
    p.add_argument("--base", default=None, help="pipeline folder with VAE, scheduler and text encoders, or builtin:NAME for a student of a built-in teacher")
    p.add_argument("--prompt", action="append", default=[], help="prompt (repeat for several)")
    p.add_argument("--negative-prompt", default=None)
    p.add_argument("--class-label", type=int, action="append", default=None, help="DiT class label (repeatable)")
    p.add_argument("--height", type=positive_int, default=None, help="px (default: the model's trained size)")
    p.add_argument("--width", type=positive_int, default=None, help="px (default: the model's trained size)")
    p.add_argument("--steps", type=positive_int, default=20)
    p.add_argument("--guidance", type=finite_float, default=4.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=positive_int, default=1, help="images per prompt")
    p.add_argument("--dtype", default="float32", type=dtype_name, metavar="DTYPE",
                   help="float32, bfloat16 (bf16) or float16 (fp16); linear attention keeps its sums in float32")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the transformer (the first step pays the compilation, later steps and "
                        "calls at the same size reuse it)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=out_path, required=True, help="PNG path; several images get _0, _1 ... suffixes")
    p.add_argument("--overwrite", action="store_true", help="replace existing PNGs")
    p.add_argument("--profile", action="store_true", help="report wall time and peak memory")
    p.add_argument("--parallel", type=positive_int, default=1, metavar="P",
                   help="split each image's tokens by rows across P processes (gloo on CPU, NCCL on GPUs)")
    p.add_argument("--low-memory", action="store_true",
                   help="load text encoder, transformer and VAE one at a time (freeing each) and decode in tiles")
    p.add_argument("--text-encoder-weights", choices=("int8", "full"), default="int8",
                   help="with --low-memory: load the text encoders with int8 weights (torchao, during loading: "
                        "T5-XXL takes 4.7 GB instead of 9.3 GB in bfloat16) or as stored (default: int8)")
    p.set_defaults(func=run)


def _paths(out: Path, n: int) -> list[Path]:
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out must name a .png file, got {out}")
    return [out] if n == 1 else [out.with_name(f"{out.stem}_{i}.png") for i in range(n)]


def _metadata(args, req, model_desc: str, index: int):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    fields = {"prompt": req.prompts[index % len(req.prompts)] if req.prompts else "",
              "negative_prompt": req.negative_prompt or "", "seed": req.seed, "steps": req.steps,
              "guidance": req.guidance, "size": f"{req.height}x{req.width}", "model": model_desc,
              "software": f"lindit {__version__}"}
    if req.class_labels:
        fields["class_label"] = req.class_labels[index // req.batch]
    for key, value in fields.items():
        info.add_text(key, str(value))
    return info


def run(args) -> int:
    from ..eval.measure import resolve_device
    from ..io import check_output

    if args.low_memory and args.parallel > 1:
        raise ValueError("--low-memory and --parallel do not combine; choose one")
    if args.low_memory and args.compile:
        raise ValueError("--low-memory and --compile do not combine (the transformer is loaded per stage); choose one")
    if args.parallel > 1:
        from ..integrations.diffusers import is_lindit_dir

        if not is_lindit_dir(args.model):  # before P processes start and load it
            raise ValueError(f"--parallel needs a model converted by lindit (a lindit folder with every attention "
                             f"layer converted); {args.model} is not one")
    count = max(1, len(args.prompt or args.class_label or [])) * args.batch
    for path in _paths(args.out, count):  # before anything is loaded
        check_output(path, args.overwrite, folder=False)
    resolve_device(args.device)
    if args.parallel == 1:
        return _generate(0, 1, args)
    from ..parallel import launch

    launch(_generate, args.parallel, args)
    return 0


def _generate(rank: int, world: int, args) -> int:
    """Generate on one process; under --parallel every rank runs the pipeline on its band of rows and
    rank 0 writes the images."""
    from ..eval.measure import peak_memory_bytes, resolve_device
    from ..generate import Request, check_conditioning, check_request
    from ..integrations.diffusers.families import family_of
    from ..io import atomic_path

    device, dtype = resolve_device(args.device), resolve_dtype(args.dtype)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    produce = _producer(args, dtype, device, world)
    size = produce.default_size()
    req = Request(args.prompt, args.negative_prompt, args.height or size, args.width or size, args.steps,
                  args.guidance, args.seed, args.batch, args.class_label)
    pipe = getattr(produce, "pipe", None)
    check_conditioning(produce.family if pipe is None else family_of(pipe.transformer).name, req)
    if pipe is not None:  # sizes, labels, memory: before any denoising (--low-memory: at its denoising stage)
        check_request(pipe, req)
    images, peak = [], None
    start = time.perf_counter()
    if args.profile:
        peak = peak_memory_bytes(lambda: images.extend(produce(req)), device)
    else:
        images = produce(req)
    seconds = time.perf_counter() - start
    if rank != 0:
        return 0
    desc = f"{args.model} ({produce.method})" + (f", {world} processes" if world > 1 else "")
    for i, (image, path) in enumerate(zip(images, _paths(args.out, len(images)))):
        with atomic_path(path, suffix=".png") as tmp:
            image.save(tmp, format="PNG", pnginfo=_metadata(args, req, desc, i))
        print(f"wrote {path}")
    if args.profile:
        report = {"seconds": round(seconds, 3), "peak_memory_mb": None if peak < 0 else round(peak / 2**20, 1),
                  "size": [req.height, req.width], "steps": req.steps, "dtype": args.dtype, "device": str(device),
                  "processes": world, "low_memory": args.low_memory, "compile": args.compile,
                  "max_rss_mb": _max_rss_mb()}
        print("profile: " + json.dumps(report))
    return 0


class _WholePipeline:
    """Every component loaded up front (and the transformer row-sharded under --parallel)."""

    def __init__(self, args, dtype, device, world: int):
        from ..generate import pipeline

        self.pipe = pipeline(args.model, base=args.base, dtype=dtype, device=device)
        if world > 1:
            from ..parallel import enable_sequence_parallel

            enable_sequence_parallel(self.pipe.transformer)
        if args.compile:
            self.pipe.transformer.compile()  # in place: the pipeline keeps its transformer class and config
        self.encode = getattr(self.pipe, "lindit_encode_prompts", None)  # built-in world pipelines carry one
        self.method = (getattr(self.pipe.transformer, "lindit_config", None) or {}).get("method", "teacher")

    def default_size(self) -> int:
        from ..generate import trained_size

        return trained_size(self.pipe)

    def __call__(self, req):
        from ..generate import run as generate

        return generate(self.pipe, req, self.encode)


def _producer(args, dtype, device, world: int):
    """Something that turns a Request into images: the whole pipeline, or stage by stage (--low-memory)."""
    if args.low_memory:
        from ..deploy.low_memory import StagedGeneration

        return StagedGeneration(args.model, args.base, dtype, device, text_int8=args.text_encoder_weights == "int8")
    return _WholePipeline(args, dtype, device, world)


def _max_rss_mb() -> float | None:
    """The process's lifetime peak resident set (loading included), which --low-memory is about."""
    try:
        import resource

        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux
    except (ImportError, AttributeError):
        return None
