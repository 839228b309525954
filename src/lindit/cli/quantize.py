"""``lindit quantize``: a saved lindit model in, its quantized copy out (written atomically)."""

from __future__ import annotations

from pathlib import Path

from . import out_path, positive_int
from ..deploy.schemes import SCHEMES, supported


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("quantize", help="quantize a model for small devices (int8 / int4)",
                              description=f"Quantize the Linear layers of a lindit model. Supported: {supported()}.")
    p.add_argument("--model", required=True, help="folder written by lindit.save (lindit convert / distill)")
    p.add_argument("--scheme", required=True, metavar="SCHEME", help=f"one of: {', '.join(SCHEMES)}")
    p.add_argument("--out", type=out_path, required=True, help="output folder (written whole or not at all)")
    p.add_argument("--backend", default=None, help="torchao or torch.ao (default: torchao where it supports "
                   "the scheme on the device)")
    p.add_argument("--group-size", type=positive_int, default=32, help="int4-weight: weights per scale (default 32)")
    p.add_argument("--device", default="cpu", help="device the quantized model will run on (default cpu)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..eval.measure import parse_device
    from ..integrations.diffusers import is_lindit_dir, load, save
    from ..io import check_output
    from ..deploy.quantize import quantize

    if args.scheme not in SCHEMES:
        raise ValueError(f"unknown quantization scheme {args.scheme!r}; supported: {supported()}")
    if not is_lindit_dir(args.model):
        raise ValueError(f"--model {args.model} is not a lindit student folder; convert the teacher with "
                         "lindit convert first")
    check_output(args.out, args.overwrite)
    parse_device(args.device)
    model = quantize(load(args.model), args.scheme, device=args.device, backend=args.backend,
                     group_size=args.group_size, inplace=True)
    save(model, args.out, overwrite=args.overwrite)
    info = model.lindit_quantization
    before, after = _weights_mb(Path(args.model)), _weights_mb(args.out)
    print(f"quantized {len(info['layers'])} Linear layers with {info['scheme']} ({info['backend']}); "
          f"weights {before:.3g} MB -> {after:.3g} MB on disk")
    print(f"wrote {args.out}")
    return 0


def _weights_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.glob("*.safetensors")) / 2**20
