"""``lindit world ...``: the built-in shapes world's tools (``cli.WORLD`` names each subcommand's ``add_*``).

Each ``add_*`` imports its ``lindit.world`` module only when its subcommand is the one run, so ``lindit world
--help`` stays fast; the work itself is the library's (``lindit.world.shapes.save_grid``, ``fid.sanity``, ...).
"""

from __future__ import annotations

import argparse

from . import CLIError, finite_float, nonnegative_int, out_path, positive_int


def add_shapes(subparsers) -> None:
    p = subparsers.add_parser("shapes", help="write a PNG grid of the world's samples and their captions",
                              description="The shapes world: write a grid of samples and print their captions.")
    p.add_argument("--grid", type=out_path, required=True, help="output PNG path")
    p.add_argument("--n", type=positive_int, default=16)
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--size", type=positive_int, default=32)
    p.set_defaults(func=run_shapes)


def run_shapes(args) -> int:
    from ..world.shapes import save_grid

    for i, text in enumerate(save_grid(args.grid, args.n, args.seed, args.size)):
        print(f"{i:2d}: {text}")
    return 0


def add_detect(subparsers) -> None:
    p = subparsers.add_parser("detect", help="prompt adherence of real images (the detector's sanity check)",
                              description="Prompt adherence of real shapes-world images (should be ~1) and of "
                                          "real images with shuffled labels (~0).")
    p.add_argument("--n", type=positive_int, default=1000)
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--max-objects", type=int, default=2)
    p.add_argument("--sizes", nargs="+", type=_size, default=[(32, 32), (64, 48)], help="H or HxW, e.g. 32 64x48")
    p.add_argument("--noise", type=finite_float, default=0.0, help="std of Gaussian noise added in [-1, 1] units")
    p.set_defaults(func=run_detect)


def _size(text: str) -> tuple[int, int]:
    """An argparse type: ``H`` or ``HxW`` in px."""
    height, _, width = text.partition("x")
    try:
        size = int(height), int(width or height)
    except ValueError:
        size = (0, 0)
    if min(size) < 1:
        raise argparse.ArgumentTypeError(f"expected H or HxW in px, got {text!r}")
    return size


def run_detect(args) -> int:
    """Print the adherence of real images (should be ~1) and of real images with shuffled labels (~0)."""
    import torch

    from ..world.detect import adherence
    from ..world.shapes import ShapesDataset

    generator = torch.Generator().manual_seed(0)
    for size in args.sizes:
        data = ShapesDataset(args.n, seed=args.seed, size=size, max_objects=args.max_objects)
        images, labels = torch.stack([data[i][0] for i in range(args.n)]), [data.label(i) for i in range(args.n)]
        images = (images + args.noise * torch.randn(images.shape, generator=generator)).clamp(-1, 1)
        real, shuffled = adherence(images, labels), adherence(images, labels[1:] + labels[:1])
        print(f"{size[0]}x{size[1]}: real {real:.4f}  shuffled labels {shuffled:.4f}  (n={args.n})")
    return 0


def add_fid(subparsers) -> None:
    p = subparsers.add_parser("fid", help="the world's FID of real images against noisy, blurred, recoloured ones",
                              description="Sanity check of the shapes world's FID: real images against real, "
                                          "noisy, blurred and recoloured sets.")
    p.add_argument("--n", type=positive_int, default=1000)
    p.add_argument("--size", type=positive_int, default=32)
    p.set_defaults(func=run_fid)


def run_fid(args) -> int:
    from ..world.fid import sanity

    for name, value in sanity(args.n, args.size).items():
        print(f"{name:>18}: {value:8.1f}")
    return 0


def add_autoencoder(subparsers) -> None:
    p = subparsers.add_parser("autoencoder", help="faithfulness of the world's autoencoder on held-out images",
                              description="Faithfulness of the world's autoencoder on held-out images: "
                                          "print reconstruction_report().")
    p.add_argument("--n", type=positive_int, default=1000)
    p.add_argument("--path", help="an autoencoder folder (default: the shipped one)")
    p.set_defaults(func=run_autoencoder)


def run_autoencoder(args) -> int:
    from ..world.autoencoder import reconstruction_report

    for key, value in reconstruction_report(args.n, path=args.path).items():
        print(f"{key}: {value}")
    return 0


def add_text(subparsers) -> None:
    from ..world.text import ASSET, SEED

    p = subparsers.add_parser("text", help="regenerate the built-in text encoder's shipped weights",
                              description="The shapes world's built-in text encoder: regenerate its weights.")
    p.add_argument("--write-assets", action="store_true", help="regenerate the shipped weights")
    p.add_argument("--out", default=str(ASSET), help="output .safetensors path")
    p.add_argument("--seed", type=int, default=SEED)
    p.set_defaults(func=run_text)


def run_text(args) -> int:
    from ..world.text import write_assets

    if not args.write_assets:
        raise CLIError("nothing to do: pass --write-assets")
    print(f"wrote {write_assets(args.out, args.seed)}")
    return 0


def add_features(subparsers) -> None:
    from ..world.features import ASSET, TrainSettings

    p = subparsers.add_parser("features", help="train the feature classifier the world's FID uses",
                              description="Train the shapes world's feature classifier (its FID space).")
    p.add_argument("--train", action="store_true", help="train from scratch and write the weights")
    p.add_argument("--out", default=str(ASSET), help="output .safetensors path")
    p.add_argument("--steps", type=positive_int, default=TrainSettings.steps)
    p.set_defaults(func=run_features)


def run_features(args) -> int:
    from ..world.features import TrainSettings, write_assets

    if not args.train:
        raise CLIError("nothing to do: pass --train")
    print(f"wrote {write_assets(args.out, TrainSettings(steps=args.steps))}")
    return 0
