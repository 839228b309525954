"""``lindit distill``: train a student from a YAML recipe (launch with ``accelerate launch`` for many devices)."""

from __future__ import annotations

from pathlib import Path

from . import out_path, positive_int


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("distill", help="distil or fine-tune a converted model (accelerate)",
                              description="Train a linear-time student as a recipe says. Overrides are "
                              "KEY=VALUE with dotted keys, e.g. stages[0].steps=10 training.mixed_precision=bf16.")
    p.add_argument("--config", type=Path, required=True, help="recipe YAML (see configs/)")
    p.add_argument("--out", type=out_path, required=True,
                   help="run folder, new or empty (one run per folder): checkpoints/, metrics.csv, run.yaml, and "
                   "the final student (lindit.load(OUT))")
    p.add_argument("--resume", default=None, metavar="latest|PATH",
                   help="continue from the newest complete checkpoint in OUT (latest) or from a checkpoint folder; "
                   "the config must be the run's own (OUT/run.yaml)")
    p.add_argument("--accept-config-changes", action="store_true",
                   help="with --resume: continue with a config that differs from the run's (e.g. a lower lr after "
                   "divergence); the differences are printed and the old config is kept")
    p.add_argument("--max-steps", type=positive_int, default=None,
                   help="stop after this optimisation step (over all stages), with a checkpoint to resume from")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides (values read as YAML)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..training.config import load_config
    from ..training.loop import distill

    from accelerate import PartialState

    if args.accept_config_changes and args.resume is None:
        raise ValueError("--accept-config-changes applies to --resume only")
    cfg = load_config(args.config, args.overrides)
    out = distill(cfg, args.out, resume=args.resume, max_steps=args.max_steps,
                  accept_config_changes=args.accept_config_changes)
    if PartialState().is_main_process:
        print(f"student saved to {out} (open it with lindit.load)")
    return 0
