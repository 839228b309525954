"""How much quantization changes the images: MSE and PSNR against the float model, same noise and prompt.

    python -m lindit.deploy.quality --model edit-student --base pixart-pipeline --prompt "a red circle" \\
        --schemes int8-dynamic int8-weight int4-weight --height 512 --width 512 --steps 20

Both sides run the family's stock pipeline through ``lindit.generate.run`` with the same seed, so the
initial noise, prompt and sampler are identical and any difference comes from the quantized weights
(accumulated over every denoising step). Pixels are compared in [0, 1]; PSNR = 10 log10(1 / MSE).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .quantize import DEFAULT_GROUP_SIZE, quantize


@dataclass
class QualityRow:
    scheme: str
    backend: str
    mse: float
    psnr_db: float
    max_abs: float  # largest pixel difference, in [0, 1]

    def as_dict(self) -> dict:
        return asdict(self)


def image_difference(reference: list, candidate: list) -> tuple[float, float, float]:
    """(MSE, PSNR in dB, max abs difference) over all pixels of two equally long lists of PIL images."""
    if len(reference) != len(candidate) or not reference:
        raise ValueError(f"need two equally long, non-empty image lists, got {len(reference)} and {len(candidate)}")
    ref = np.stack([np.asarray(im, dtype=np.float64) / 255.0 for im in reference])  # (n, H, W, 3)
    cand = np.stack([np.asarray(im, dtype=np.float64) / 255.0 for im in candidate])
    if ref.shape != cand.shape:
        raise ValueError(f"image sizes differ: {ref.shape[1:]} and {cand.shape[1:]}")
    mse = float(np.mean((ref - cand) ** 2))
    psnr = math.inf if mse == 0 else 10 * math.log10(1.0 / mse)
    return mse, psnr, float(np.abs(ref - cand).max())


def parse_scheme(spec: str) -> tuple[str, str | None]:
    """'int8-dynamic' or 'int8-dynamic@torch.ao' -> (scheme, backend or None)."""
    scheme, _, backend = spec.partition("@")
    return scheme, backend or None


def quantization_quality(pipe, request, schemes: list[str], encode_prompts=None,
                         group_size: int = DEFAULT_GROUP_SIZE) -> list[QualityRow]:
    """One row per scheme (``name`` or ``name@backend``): images of the quantized transformer against the
    float transformer in ``pipe``. The pipeline's transformer is restored afterwards."""
    from ..generate import run

    float_model = pipe.transformer
    reference = run(pipe, request, encode_prompts)
    rows = []
    try:
        for spec in schemes:
            scheme, backend = parse_scheme(spec)
            pipe.transformer = quantize(float_model, scheme, backend=backend, group_size=group_size).eval()
            images = run(pipe, request, encode_prompts)
            rows.append(QualityRow(scheme, pipe.transformer.lindit_quantization["backend"],
                                   *image_difference(reference, images)))
    finally:
        pipe.transformer = float_model
    return rows


def markdown(rows: list[QualityRow], command: str, request) -> str:
    from ..eval.report import markdown_table

    body = markdown_table(["scheme", "backend", "MSE", "PSNR (dB)", "max abs diff"],
                          [[r.scheme, r.backend, f"{r.mse:.3g}", f"{r.psnr_db:.1f}", f"{r.max_abs:.3f}"] for r in rows])
    images = len(request.class_labels or request.prompts) * request.batch
    return (f"Command: `{command}`\n\n{images} image(s), {request.height}x{request.width} px, "
            f"{request.steps} steps, seed {request.seed}; pixels in [0, 1] against the float model.\n\n{body}")


def main(argv: list[str] | None = None) -> int:
    import shlex
    import sys

    from ..generate import Request, pipeline
    from ..io import write_json, write_text

    p = argparse.ArgumentParser(prog="python -m lindit.deploy.quality", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="lindit folder (or any model spec lindit generate takes)")
    p.add_argument("--base", default=None, help="pipeline folder with VAE, scheduler and text encoders")
    p.add_argument("--schemes", nargs="+", default=["int8-dynamic", "int8-weight", "int4-weight"],
                   help="schemes, optionally with a backend: int8-dynamic@torch.ao")
    p.add_argument("--prompt", action="append", default=[], help="prompt (repeatable)")
    p.add_argument("--class-label", type=int, action="append", default=None, help="DiT class label (repeatable)")
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=4.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--group-size", type=int, default=DEFAULT_GROUP_SIZE)
    p.add_argument("--out", type=Path, default=Path("bench-output/quality"))
    args = p.parse_args(argv)
    command = "python -m lindit.deploy.quality " + shlex.join(sys.argv[1:] if argv is None else argv)
    pipe = pipeline(args.model, base=args.base)
    req = Request(args.prompt, None, args.height, args.width, args.steps, args.guidance, args.seed, 1, args.class_label)
    rows = quantization_quality(pipe, req, args.schemes, getattr(pipe, "lindit_encode_prompts", None), args.group_size)
    md = markdown(rows, command, req)
    print(md)
    write_text(args.out / "quality.md", md + "\n")
    write_json(args.out / "quality.json", {"command": command, "rows": [r.as_dict() for r in rows]})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
