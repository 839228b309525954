"""The ``lindit`` command: one entry point, one subcommand per capability.

Each subcommand lives in its own module of this package (``lindit.cli.convert``, ``lindit.cli.bench``, ...),
which defines ``add_parser(subparsers)``; the parser it adds
sets ``func`` (called with the parsed args; its return value is the exit code). Modules are imported only
when their command runs, so ``lindit --help`` stays fast. A group (``lindit world``, ``lindit deploy``) is a
command of commands, ``lindit world fid ...``; its table names each subcommand's parser as
``module:function`` (``cli/world.py``, ``cli/deploy.py``), imported the same way. Every tool is reached
from here: a module's ``python -m`` entry point, where one is kept, forwards to this tree (``forward``).
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys

# group subcommand -> ("module:function" that adds its parser to subparsers, one-line help)
WORLD = {
    "shapes": ("lindit.cli.world:add_shapes", "write a PNG grid of the world's samples and their captions"),
    "detect": ("lindit.cli.world:add_detect", "prompt adherence of real images (the detector's sanity check)"),
    "fid": ("lindit.cli.world:add_fid", "the world's FID of real images against noisy, blurred, recoloured ones"),
    "autoencoder": ("lindit.cli.world:add_autoencoder", "faithfulness of the world's autoencoder on held-out images"),
    "text": ("lindit.cli.world:add_text", "regenerate the built-in text encoder's shipped weights"),
    "features": ("lindit.cli.world:add_features", "train the feature classifier the world's FID uses"),
}
DEPLOY = {
    "bench": ("lindit.cli.deploy:add_bench", "latency of exported models in onnxruntime against eager PyTorch"),
    "quality": ("lindit.cli.deploy:add_quality", "MSE / PSNR of quantized against float images, same noise and prompt"),
    "synthetic": ("lindit.cli.deploy:add_synthetic", "write a random-weight pipeline folder at a published size"),
    "encoder-memory": ("lindit.cli.deploy:add_encoder_memory", "peak memory of loading T5-XXL as stored and in int8"),
}

# `python -m MODULE ARGS`, kept for old scripts: each MODULE's main runs `lindit WORDS ARGS` (``forward``)
PYTHON_M = {
    "lindit.world.shapes": ["world", "shapes"], "lindit.world.detect": ["world", "detect"],
    "lindit.world.fid": ["world", "fid"], "lindit.world.autoencoder": ["world", "autoencoder"],
    "lindit.world.text": ["world", "text"], "lindit.world.features": ["world", "features"],
    "lindit.benchmarks.deploy_bench": ["deploy", "bench"], "lindit.deploy.fidelity": ["deploy", "quality"],
    "lindit.benchmarks.synthetic": ["deploy", "synthetic"],
    "lindit.deploy.encoder_memory": ["deploy", "encoder-memory"],
}

# command -> (module that defines add_parser(subparsers), or a group's table; one-line help)
COMMANDS = {
    "convert": ("lindit.cli.convert", "convert a diffusers transformer into a linear-time model"),
    "distill": ("lindit.cli.distill", "distil or fine-tune a converted model (accelerate)"),
    "cache": ("lindit.cli.cache", "encode a dataset with the VAE and text encoders once"),
    "generate": ("lindit.cli.generate", "generate images with the stock diffusers pipeline"),
    "bench": ("lindit.cli.bench", "latency and memory benchmarks"),
    "quantize": ("lindit.cli.quantize", "quantize a model for small devices (int8 / int4)"),
    "export": ("lindit.cli.export", "export a transformer to ONNX or torch.export and verify it"),
    "train-teacher": ("lindit.cli.train_teacher", "train a built-in tiny teacher on the shapes world"),
    "demo": ("lindit.cli.demo", "convert, distil and measure every method on the built-in world"),
    "diagnose": ("lindit.cli.diagnose", "per-layer and per-block error of a converted student"),
    "eval": ("lindit.cli.eval", "FID, CLIP score and prompt adherence of a model's images"),
    "world": (WORLD, "the built-in shapes world's tools: samples, adherence, FID, shipped assets"),
    "deploy": (DEPLOY, "deployment measurements: onnxruntime latency, quantized quality, memory"),
}


class CLIError(Exception):
    """A user error: printed as one line, exit code 2, no traceback."""


class Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (usage is one ``--help`` away); subcommands inherit it."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def build_parser(only: str | list[str] | None = None) -> argparse.ArgumentParser:
    """The command tree; only the module of the command that ``only`` names is imported.

    ``only`` is a command (``"demo"``) or the words of a command line (``["world", "fid", ...]``): its first
    word picks a command, and a group's next word picks its subcommand.
    """
    parser = Parser(prog="lindit", description="Linear-time diffusion transformers.")
    _add_commands(parser, COMMANDS, [only] if isinstance(only, str) else list(only or []), "command")
    return parser


def _add_commands(parser: argparse.ArgumentParser, table: dict, words: list[str], dest: str) -> None:
    # The commands not named get a bare parser, enough to list them in --help and to refuse a typo. A bare
    # `lindit` prints its help; a group without its subcommand is a one-line error, as in `lindit bench`.
    sub = parser.add_subparsers(dest=dest, metavar="COMMAND", required=parser.prog != "lindit")
    for name, (target, help_text) in table.items():
        if not words or name != words[0]:
            sub.add_parser(name, help=help_text)
        elif isinstance(target, dict):
            group = sub.add_parser(name, help=help_text, description=help_text)
            _add_commands(group, target, words[1:], "subcommand")
        else:
            module, _, adder = target.partition(":")
            getattr(importlib.import_module(module), adder or "add_parser")(sub)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    words = [a for a in argv if not a.startswith("-")]
    parser = build_parser(only=words)
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help (0) or a bad argument (2, its one line already printed)
        return done.code if isinstance(done.code, int) else 2
    args.argv = list(argv)  # recorded in reports, so every number names the command that made it
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if not words else 2
    try:
        return int(args.func(args) or 0)
    except (Exception, KeyboardInterrupt) as err:  # noqa: BLE001 -- classified: bugs are raised again
        return report_error(_prog(args), err)


def _prog(args) -> str:
    """``lindit convert``, or ``lindit world fid`` for a group's subcommand: the name an error line starts with."""
    return " ".join(["lindit", args.command, *([args.subcommand] if getattr(args, "subcommand", None) else [])])


def forward(words: list[str], argv: list[str] | None = None) -> int:
    """Run ``lindit WORDS ARGV``: what a module's kept ``python -m`` entry point does, so both behave alike."""
    return main([*words, *(sys.argv[1:] if argv is None else argv)])


def report_error(prog: str, err: BaseException) -> int:
    """Print a user error as one line and return the exit code; raise anything else (a bug) again."""
    from ..errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, user_message

    if isinstance(err, KeyboardInterrupt):
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    line = str(err) if isinstance(err, CLIError) else user_message(err)
    if line is None or os.environ.get("LINDIT_TRACEBACK"):
        raise err
    print(f"{prog}: error: {line}", file=sys.stderr)
    return EXIT_USER_ERROR


# argparse types: a bad value is refused while parsing, before anything is loaded.
def positive_int(text: str) -> int:
    value = _number(int, text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def nonnegative_int(text: str) -> int:
    value = _number(int, text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def finite_float(text: str) -> float:
    value = _number(float, text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def out_path(text: str):
    """An output path: not empty (argparse's Path("") would be the current folder)."""
    from pathlib import Path

    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return Path(text)


def _number(kind, text: str):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None

