"""``lindit distill``: train a student from a YAML recipe (launch with ``accelerate launch`` for many devices)."""

from __future__ import annotations

from pathlib import Path


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("distill", help="distil or fine-tune a converted model (accelerate)",
                              description="Train a linear-time student as a recipe says. Overrides are "
                              "KEY=VALUE with dotted keys, e.g. stages[0].steps=10 training.mixed_precision=bf16.")
    p.add_argument("--config", type=Path, required=True, help="recipe YAML (see configs/)")
    p.add_argument("--out", type=Path, required=True,
                   help="run folder: checkpoints/, metrics.csv, run.yaml, and the final student (lindit.load(OUT))")
    p.add_argument("--resume", default=None, metavar="latest|PATH",
                   help="continue from the newest complete checkpoint in OUT (latest) or from a checkpoint folder")
    p.add_argument("--max-steps", type=int, default=None,
                   help="stop after this optimisation step (over all stages), with a checkpoint to resume from")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides (values read as YAML)")
    p.set_defaults(func=run)


def run(args) -> int:
    from .config import load_config
    from .loop import distill

    if args.max_steps is not None and args.max_steps < 1:
        raise ValueError("--max-steps must be >= 1")
    from accelerate import PartialState

    cfg = load_config(args.config, args.overrides)
    out = distill(cfg, args.out, resume=args.resume, max_steps=args.max_steps)
    if PartialState().is_main_process:
        print(f"student saved to {out} (open it with lindit.load)")
    return 0
