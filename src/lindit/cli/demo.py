"""``lindit demo``: convert, distil and measure every method of the papers on the built-in world.

    lindit demo --out demo-output            # all families and methods, about 11 min on 2 CPU cores (README)
    lindit demo --quick --out demo-quick     # EDiT, MM-EDiT and LiT only, fewer steps: ~3 min
    lindit demo --families pixart --methods edit edit_cf_q edit_sc_only --out demo-ablation
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from . import finite_float, out_path, positive_float, positive_int
from ..demo.plan import FAMILIES, DemoSettings, check_families


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("demo", help="convert, distil and measure every method on the built-in world",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=out_path, default=Path("demo-output"), help="output folder (default: demo-output)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists (at the end, once the new "
                   "report is complete)")
    p.add_argument("--quick", action="store_true", help="one student per family, fewer steps and images")
    p.add_argument("--families", nargs="+", metavar="F", help="pixart, sd3, dit (default: all; mmdit: sd3)")
    family_steps = ", ".join(f"{name} {plan.steps}" for name, plan in FAMILIES.items())
    p.add_argument("--steps", type=positive_int, help=f"distillation steps per student (default: each family's, "
                   f"{family_steps}; --quick: 120)")
    p.add_argument("--lr", type=positive_float, help="learning rate of the first stage; the second uses a fifth (default 1e-3)")
    p.add_argument("--batch-size", type=positive_int, help="distillation images per step (default 16)")
    p.add_argument("--n-eval", type=positive_int, help="held-out prompts (images) per model")
    p.add_argument("--sample-steps", type=positive_int, help="denoising steps per image")
    p.add_argument("--guidance", type=finite_float, help="classifier-free guidance (default: each teacher's)")
    p.add_argument("--seed", type=int, help="seed of distillation and sampling (the first, with --seeds)")
    p.add_argument("--seeds", type=positive_int, metavar="N", help="repeat every distillation and sampling with N "
                   "seeds and report each cell as mean ± sample standard deviation (default 1)")
    p.add_argument("--inherit", help="teacher projections the students start from: any of q, k, v, o, or "
                   "'none' for fresh attention weights (default: qkvo)")
    p.add_argument("--task-weight", type=finite_float, help="weight of the noise-prediction loss in distillation "
                   "(default: each family's; 0 distils from the teacher alone, 1 is the papers' recipes)")
    p.add_argument("--feature-weight", type=finite_float, metavar="W", help="weight of the feature-distillation term "
                   "(each replaced layer against its teacher layer; default: each family's)")
    p.add_argument("--guidance-kd", type=finite_float, metavar="W", help="weight of the guidance-direction loss "
                   "(prediction with the prompt minus with the null prompt, distilled from the teacher; every "
                   "sample then runs with both; default 0)")
    p.add_argument("--feature-inputs", choices=("student", "teacher"),
                   help="what the replaced layers see in the first stage: their own hidden states (EDiT's feature "
                   "distillation) or the teacher's (layer-wise attention transfer)")
    p.add_argument("--caption-dropout", type=finite_float, metavar="P",
                   help="probability a distillation prompt (class) becomes the null one (default: the teacher's)")
    p.add_argument("--lr-schedule", dest="schedule", metavar="NAME",
                   help="learning-rate schedule of every stage, a diffusers get_scheduler name "
                   "(default: cosine)")
    p.add_argument("--ema", type=_ema, metavar="DECAY",
                   help="evaluate an EMA of the student's weights: a decay in (0, 1) or 'warmup' "
                   "(EMAModel's warm-up decay; default: the last weights)")
    p.add_argument("--methods", nargs="+", metavar="M",
                   help="students to distil in every chosen family instead of its list: lindit.convert methods "
                   "or NAME:KEY=VALUE[,...] variants, e.g. --families pixart --methods edit edit_cf_q; NAME@paper "
                   "distils NAME with its paper's own recipe (e.g. lit@paper)")
    p.add_argument("--paper-recipes", action="store_true",
                   help="also distil each family's paper student (edit, mm_edit, lit) with its paper's own recipe, "
                   "as a row NAME@paper, and report what the demo's departures from that recipe buy")
    p.add_argument("--jobs", type=positive_int, metavar="N",
                   help="models (teachers, students, every seed's) distilled and sampled side by side in N worker "
                   "processes sharing the threads, longest first (default: one per thread; 1: one after another)")
    p.set_defaults(func=run)


def _ema(text: str) -> float | str:
    if text == "warmup":
        return text
    try:
        decay = float(text)
    except ValueError:
        decay = -1.0
    if not 0 < decay < 1:
        raise argparse.ArgumentTypeError(f"--ema must be a decay in (0, 1) or 'warmup', got {text!r}")
    return decay


# Options that set the DemoSettings field of the same name.
_SETTINGS = ("steps", "lr", "batch_size", "n_eval", "sample_steps", "guidance", "seed", "seeds", "inherit",
             "task_weight", "guidance_kd", "feature_weight", "feature_inputs", "schedule", "ema", "caption_dropout",
             "paper_recipes", "jobs")  # store_true flags default to False, which is also DemoSettings' default


def settings_from(args) -> DemoSettings:
    overrides = {name: getattr(args, name) for name in _SETTINGS if getattr(args, name) is not None}
    for name in ("task_weight", "guidance_kd", "feature_weight"):
        if overrides.get(name, 0) < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {overrides[name]}")
    if not 0 <= overrides.get("caption_dropout", 0) < 1:
        raise ValueError(f"--caption-dropout must be in [0, 1), got {overrides['caption_dropout']}")
    for name in ("steps", "lr", "batch_size", "n_eval", "sample_steps", "seeds"):
        if name in overrides and overrides[name] <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {overrides[name]}")
    if args.families:
        overrides["families"] = check_families(args.families)
    if args.methods:
        overrides["students"] = tuple(args.methods)
    return DemoSettings.quick_settings(**overrides) if args.quick else DemoSettings(**overrides)


def run(args) -> int:
    from ..demo.runner import run_demo

    settings = settings_from(args)
    command = "lindit " + " ".join(shlex.quote(a) for a in getattr(args, "argv", ["demo"]))
    report = run_demo(settings, args.out, command, overwrite=args.overwrite)
    print(f"wrote {args.out}/report.md, report.json, sample grids and latency.png")
    for verdict in ("not reproduced", "within noise"):
        claims = [c["claim"] for c in report["checks"] if c["verdict"] == verdict]
        if claims:
            print(f"{verdict} here: " + "; ".join(claims))
    return 0
