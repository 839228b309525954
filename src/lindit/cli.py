"""The ``lindit`` command: one entry point, one subcommand per capability.

Each subcommand lives in its own module, which defines ``add_parser(subparsers)``; the parser it adds
sets ``func`` (called with the parsed args; its return value is the exit code). Modules are imported only
when their command runs, so ``lindit --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command -> (module that defines add_parser(subparsers), one-line help)
COMMANDS = {
    "convert": ("lindit.convert_cli", "convert a diffusers transformer into a linear-time model"),
    "distill": ("lindit.training.cli", "distil or fine-tune a converted model (accelerate)"),
    "cache": ("lindit.training.cache_cli", "encode a dataset with the VAE and text encoders once"),
    "generate": ("lindit.generate_cli", "generate images with the stock diffusers pipeline"),
    "bench": ("lindit.eval.bench_cli", "latency and memory benchmarks"),
    "quantize": ("lindit.deploy.quantize_cli", "quantize a model for small devices (int8 / int4)"),
    "export": ("lindit.deploy.export_cli", "export a transformer to ONNX or torch.export and verify it"),
    "train-teacher": ("lindit.world.train_teacher", "train a built-in tiny teacher on the shapes world"),
    "demo": ("lindit.demo.cli", "convert, distil and measure every method on the built-in world"),
    "diagnose": ("lindit.diagnose.cli", "per-layer and per-block error of a converted student"),
    "eval": ("lindit.eval.quality_cli", "FID, CLIP score and prompt adherence of a model's images"),
}


class CLIError(Exception):
    """A user error: printed as one line, exit code 2, no traceback."""


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lindit", description="Linear-time diffusion transformers.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        if name == only:
            importlib.import_module(module).add_parser(sub)
        else:
            sub.add_parser(name, help=help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    args.argv = list(argv)  # recorded in reports, so every number names the command that made it
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if command is None else 2
    try:
        return int(args.func(args) or 0)
    except (CLIError, ValueError, FileNotFoundError) as err:
        print(f"lindit {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
