"""``lindit cache``: encode a recipe's data once with its VAE and text encoder(s), for every stage resolution.

    lindit cache --config configs/edit-pixart-sigma.yaml --source-folder /data/ye-pop --out /data/ye-pop-cache

Training then reads the shards (``data.source: {cache: /data/ye-pop-cache}``) and never runs the encoders.
Rerunning after an interruption skips the shards already written. A cache folder holds one dataset: its
``lindit_cache.json`` records what is encoded (source, model, buckets, shard size), and a rerun with other
settings is refused instead of mixing old shards into new ones; the folder is locked while encoding.
"""

from __future__ import annotations

from pathlib import Path

from . import out_path, positive_int


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("cache", help="encode a dataset with the VAE and text encoders once",
                              description="Encode images (VAE latent moments) and prompts (text encoders) "
                              "into safetensors shards, one subfolder per resolution.")
    p.add_argument("--config", type=Path, required=True, help="the training recipe (model and data sections)")
    p.add_argument("--out", type=out_path, default=None, help="cache folder (default: the recipe's data.source.cache)")
    p.add_argument("--source-folder", type=Path, default=None, help="image folder to encode (x.png + x.txt)")
    p.add_argument("--source-hf", default=None, help="Hugging Face dataset name or saved folder to encode")
    p.add_argument("--resolution", type=positive_int, nargs="+", default=None,
                   help="resolutions to encode (default: every stage's)")
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--shard-size", type=positive_int, default=1024, help="samples per safetensors shard")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides (values read as YAML)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..training.cache import RECORD, claim_cache, encode
    from ..training.config import DataSource, HFSource, check_bucket, load_config

    cfg = load_config(args.config, args.overrides)
    target = cfg.data.source.cache  # where training will read the cache, if the recipe says
    if args.source_folder is not None:
        cfg.data.source = DataSource(folder=str(args.source_folder))
    elif args.source_hf is not None:
        cfg.data.source = DataSource(hf=HFSource(name=args.source_hf))
    elif target is not None:
        raise ValueError(f"the recipe reads the cache {target}; say what to encode with --source-folder or --source-hf")
    out = args.out or target
    if out is None:
        raise ValueError("--out is required when the recipe's data.source is not a cache")
    resolutions = args.resolution or sorted({s.resolution for s in cfg.stages})
    for res in resolutions:
        check_bucket(res, cfg.data.bucket_multiple, "--resolution")
    if args.device is not None:
        from ..eval.measure import resolve_device

        resolve_device(args.device)
    from ..io import FolderLock

    existed = Path(out).exists()
    try:
        with FolderLock(out):
            claim_cache(Path(out), cfg, args.shard_size)
            for folder in encode(cfg, out, resolutions, args.batch_size, args.shard_size, args.device):
                print(f"wrote {folder}")
    except BaseException:
        _forget_if_empty(Path(out), existed)
        raise
    return 0


def _forget_if_empty(out: Path, existed: bool) -> None:
    """A cache that failed before its first shard (a wrong source folder) leaves nothing behind."""
    from ..training.cache import RECORD

    if out.is_dir() and {p.name for p in out.iterdir()} <= {RECORD}:
        (out / RECORD).unlink(missing_ok=True)
        if not existed:
            out.rmdir()
