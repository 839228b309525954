"""``lindit convert``: load a teacher with diffusers, convert it, save the student."""

from __future__ import annotations


from . import out_path
from ..methods import REGISTRY, check_options, parse_options


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("convert", help="convert a diffusers transformer into a linear-time model")
    p.add_argument("--teacher", help="diffusers model folder, pipeline folder or hub id")
    p.add_argument("--subfolder", default=None, help="subfolder of --teacher holding the transformer")
    p.add_argument("--method", default=None, help="method name (see --list); default: the family's own")
    p.add_argument("--out", type=out_path, help="output folder for lindit.save")
    p.add_argument("--inherit", default=None, help="teacher projections to copy: letters of qkvo, 'all' or 'none'")
    p.add_argument("--layers", type=int, nargs="+", default=None, help="block indices to convert (default: all)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="method option, e.g. eta=exact, heads=2, cf_reduction=8 (repeatable)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--list", action="store_true", help="list every method with the paper and table it comes from")
    p.set_defaults(func=run)


def print_methods() -> None:
    for kind, title in (("self", "PixArt-Sigma / DiT (self-attention)"), ("joint", "SD3 / SD3.5 (joint attention)")):
        print(f"{title}:")
        for name, m in REGISTRY.items():
            if m.kind == kind:
                print(f"  {name:20s} {m.source}: {m.summary}")


def run(args) -> int:
    if args.list:
        print_methods()
        return 0
    if not args.teacher or not args.out:
        raise ValueError("--teacher and --out are required (or use --list)")
    from ..integrations.diffusers import convert, count_parameters, save
    from ..integrations.diffusers.families import family_of
    from ..io import check_output
    from ..models import load_model

    options = parse_options(args.option)
    if args.inherit is not None:
        options["inherit"] = args.inherit
    if args.layers is not None:
        options["layers"] = args.layers
    if args.method is not None:
        check_options(args.method, options)  # before the teacher is loaded
    check_output(args.out, args.overwrite)
    teacher = load_model(args.teacher, subfolder=args.subfolder)
    check_options(args.method or family_of(teacher).default_method, options)
    student = convert(teacher, args.method, **options)
    save(student, args.out, overwrite=args.overwrite)
    plan = student.lindit_config
    before, after = count_parameters(teacher), count_parameters(student)
    print(f"{type(teacher).__name__} -> {plan['method']} on {len(plan['layers'])} blocks "
          f"(inherit: {plan['inherit'] or 'none'})")
    print(f"parameters: teacher {before:,}  student {after:,}  ({after - before:+,})")
    print(f"saved to {args.out}")
    return 0
