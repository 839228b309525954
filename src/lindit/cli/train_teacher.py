"""``lindit train-teacher``: train a built-in tiny teacher from scratch on the shapes world.

    lindit train-teacher autoencoder                   # remakes the world's autoencoder (train it first:
                                                       # the teachers work in its latent space)
    lindit train-teacher pixart                        # remakes src/lindit/world/assets/teachers/pixart
    lindit train-teacher dit --steps 200 --out /tmp/dit  # a quick one elsewhere

What the teacher learns and what its folder holds: ``lindit.world.train_teacher``.
"""

from __future__ import annotations

import shlex

from . import out_path, positive_int
from ..io import check_output
from ..world.teachers import BUILTIN_TEACHERS
from ..world.train_teacher import train_teacher


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train-teacher", help="train a built-in tiny teacher on the shapes world",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("name", choices=[*sorted(BUILTIN_TEACHERS), "autoencoder"],
                   help="a teacher, or the world's autoencoder the teachers work in")
    p.add_argument("--steps", type=positive_int, help="optimisation steps (default: the teacher's recorded settings)")
    p.add_argument("--out", type=out_path, help="output folder (default: the package's shipped teacher)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.set_defaults(func=run)


def run(args) -> int:
    command = "lindit " + " ".join(shlex.quote(a) for a in args.argv)
    if args.out is not None:
        check_output(args.out, args.overwrite)  # before minutes of training
    if args.name == "autoencoder":
        from ..world.autoencoder import train_autoencoder

        train_autoencoder(args.out, args.steps, args.overwrite, command)
    else:
        train_teacher(args.name, args.out, args.steps, args.overwrite, command)
    return 0
