"""How much quantization changes the images: MSE and PSNR against the float model, same noise and prompt.

    lindit deploy quality --model edit-student --base pixart-pipeline --prompt "a red circle" \\
        --schemes int8-dynamic int8-weight int4-weight --height 512 --width 512 --steps 20

Both sides run the family's stock pipeline through ``lindit.generate.run`` with the same seed, so the
initial noise, prompt and sampler are identical and any difference comes from the quantized weights
(accumulated over every denoising step). Pixels are compared in [0, 1]; PSNR = 10 log10(1 / MSE).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

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


def world_quality(teacher: str, model, schemes: list[str], n: int, steps: int, seed: int = 0,
                  group_size: int = DEFAULT_GROUP_SIZE) -> list[dict]:
    """The demo's metrics for ``model`` (a built-in teacher or one of its students) and each scheme: FID and
    adherence on ``n`` held-out prompts of the built-in world, and MSE / PSNR against the float model's
    images of the same prompts and noise (``mse_to_teacher`` here means: to the float model)."""
    from ..demo.evaluate import eval_set, quality, sample
    from ..demo.plan import DemoSettings
    from ..world.teachers import settings_of

    settings, guidance = DemoSettings(), settings_of(teacher).guidance
    evals = eval_set(teacher, n, settings.eval_prompt_seed, settings.reference_seed)
    reference = sample(teacher, model, evals, steps, guidance, seed)
    rows = [{"scheme": "float", "backend": "-", **quality(reference, evals, None)}]
    for spec in schemes:
        scheme, backend = parse_scheme(spec)
        quantized = quantize(model, scheme, backend=backend, group_size=group_size).eval()
        images = sample(teacher, quantized, evals, steps, guidance, seed)
        rows.append({"scheme": scheme, "backend": quantized.lindit_quantization["backend"],
                     **quality(images, evals, reference)})
    return rows


def world_markdown(rows: list[dict], command: str, n: int, steps: int) -> str:
    from ..eval.report import markdown_table

    body = markdown_table(["scheme", "backend", "classifier FID", "adherence", "MSE to float", "PSNR (dB)"],
                          [[r["scheme"], r["backend"], f"{r['fid']:.1f}", f"{100 * r['adherence']:.1f}%",
                            f"{r['mse_to_teacher']:.3g}", "-" if r["psnr_to_teacher"] is None
                            else f"{r['psnr_to_teacher']:.1f}"] for r in rows])
    return (f"Command: `{command}`\n\n{n} held-out prompts of the built-in world, {steps} steps, the demo's "
            f"metrics; MSE on [0, 1] pixels against the float model's images.\n\n{body}")


def markdown(rows: list[QualityRow], command: str, request) -> str:
    from ..eval.report import markdown_table

    body = markdown_table(["scheme", "backend", "MSE", "PSNR (dB)", "max abs diff"],
                          [[r.scheme, r.backend, f"{r.mse:.3g}", f"{r.psnr_db:.1f}", f"{r.max_abs:.3f}"] for r in rows])
    images = len(request.class_labels or request.prompts) * request.batch
    return (f"Command: `{command}`\n\n{images} image(s), {request.height}x{request.width} px, "
            f"{request.steps} steps, seed {request.seed}; pixels in [0, 1] against the float model.\n\n{body}")


def main(argv: list[str] | None = None) -> int:
    """``python -m lindit.deploy.fidelity ARGS``: runs ``lindit deploy quality ARGS``."""
    from ..cli import forward

    return forward(["deploy", "quality"], argv)


if __name__ == "__main__":
    raise SystemExit(main())
