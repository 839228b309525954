"""``lindit diagnose``: where a converted student's error comes from, layer by layer and block by block.

    lindit diagnose --teacher builtin:mmdit --method mm_edit --inherit qkvo --out diag-mm-edit
    lindit diagnose --teacher builtin:dit --student demo-output/students/dit/lit --out diag-lit
    lindit diagnose --config configs/edit-pixart-sigma.yaml --method edit --out diag-edit

Every converted layer is run on its teacher layer's own input and compared with the teacher layer's output;
each block is converted alone to see what it does to the model's output; for MM-DiT hybrid attention the
error is split into the image-image, image-prompt, prompt-image and prompt-prompt blocks and the mixing
weight eta. With ``--student`` the same is measured for a distilled student and for the fresh conversion with
its plan, so the two columns differ by distillation alone. See docs/DIAGNOSIS.md.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml

from . import out_path, positive_int
from ..methods import check_options, parse_options

NAMES = ("diagnosis.json", "diagnosis.md")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("diagnose", help="per-layer and per-block error of a converted student",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher", help="builtin:NAME, or a diffusers model folder / hub id (then --config "
                   "supplies data and encoders; default: the config's teacher)")
    p.add_argument("--config", type=Path, help="a lindit distill YAML recipe whose data, encoders and noise "
                   "objective the probes use (needed unless the teacher is built-in)")
    p.add_argument("--method", help="conversion to diagnose (default: --student's own)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="method option (repeatable)")
    p.add_argument("--inherit", help="teacher projections the fresh student copies (letters of qkvo, or none)")
    p.add_argument("--layers", type=int, nargs="+", help="block indices to convert (default: the method's)")
    p.add_argument("--student", type=Path, help="a distilled student folder (lindit.save / lindit distill output)")
    p.add_argument("--n", type=positive_int, default=64,
                   help="probe samples (default 64), each with prompt and null prompt")
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--seed", type=int, default=0, help="seed of the probes' noise and timesteps")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=out_path, required=True, help=f"folder for {' and '.join(NAMES)}")
    p.add_argument("--overwrite", action="store_true", help=f"replace {' and '.join(NAMES)} in --out")
    p.set_defaults(func=run)


def config_from(args) -> dict:
    """The training config (dict) the probes come from: the demo's for a built-in teacher, else --config."""
    builtin = args.teacher.removeprefix("builtin:") if args.teacher and args.teacher.startswith("builtin:") else None
    if args.config is None:
        if builtin is None:
            raise ValueError("--config (a lindit distill recipe: data, encoders, noise) is needed unless "
                             "--teacher is builtin:NAME")
        from ..diagnose.run import builtin_config

        return builtin_config(builtin, args.seed)
    if not args.config.is_file():
        raise FileNotFoundError(f"--config {args.config} does not exist")
    data = yaml.safe_load(args.config.read_text()) or {}
    if args.teacher:
        data.setdefault("model", {})["teacher"] = {"builtin": builtin} if builtin else {"path": args.teacher}
    return data


def plan_from(args) -> dict | None:
    if args.method is None:
        if args.option or args.inherit or args.layers:
            raise ValueError("--option, --inherit and --layers describe a conversion: give --method too")
        return None
    options = parse_options(args.option)
    if args.inherit is not None:
        options["inherit"] = args.inherit
    if args.layers is not None:
        options["layers"] = args.layers
    check_options(args.method, options)  # before any model is loaded
    return {"method": args.method, **options}


def run(args) -> int:
    from ..io import write_json, write_text
    from ..diagnose.report import markdown
    from ..diagnose.run import diagnose

    from ..eval.measure import resolve_device

    resolve_device(args.device)
    if args.student is not None and not args.student.is_dir():
        raise FileNotFoundError(f"--student {args.student} is not a folder")
    taken = [n for n in NAMES if (args.out / n).exists()]
    if taken and not args.overwrite:
        raise ValueError(f"{args.out / taken[0]} exists; choose another --out or pass --overwrite")
    plan = plan_from(args)
    if plan is None and args.student is None:
        raise ValueError("give --method (a fresh conversion) or --student (a distilled student), or both")
    report = diagnose(config_from(args), plan, str(args.student) if args.student else None, args.n,
                      args.batch_size, args.seed, args.device)
    command = "lindit " + shlex.join(getattr(args, "argv", None) or ["diagnose"])
    report["command"] = command
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / NAMES[0], report)
    text = markdown(report, command)
    write_text(args.out / NAMES[1], text + "\n")
    print(text)
    return 0
