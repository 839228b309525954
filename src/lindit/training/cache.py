"""``lindit cache``: encode a dataset once (VAE latent moments, prompt conditioning) into safetensors shards.

Layout of a cache folder (one subfolder per resolution, since buckets and latents depend on it):

    CACHE/512px/index.json                  what was encoded, the buckets, where each sample lives
    CACHE/512px/shard-00000.safetensors     "<i>.mean", "<i>.std" (B=1 latent moments), "<i>.cond.<key>"
    CACHE/512px/null.safetensors            the empty prompt's / null class's conditioning ("cond.<key>")

Shards are written atomically one by one and ``index.json`` last, so an interrupted ``lindit cache`` is
rerun and skips the shards it already wrote; a folder without ``index.json`` is never read.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset

from ..io import atomic_path, write_json
from .data import RawDataset, collate

INDEX = "index.json"
NULL = "null.safetensors"
FORMAT = 1


def cache_dir(root: str | Path, resolution: int) -> Path:
    return Path(root) / f"{resolution}px"


def _shard_name(k: int) -> str:
    return f"shard-{k:05d}.safetensors"


def write_cache(root: str | Path, dataset: RawDataset, encoders, resolution: int, meta: dict,
                batch_size: int = 8, shard_size: int = 1024, progress=None) -> Path:  # fmt: skip
    """Encode every sample of ``dataset`` (already bucketed for ``resolution``) into ``root/<resolution>px``."""
    out = cache_dir(root, resolution)
    out.mkdir(parents=True, exist_ok=True)
    order = sorted(range(len(dataset)), key=lambda i: (dataset.bucket_of[i], i))  # one bucket per encoder batch
    shards = [order[s : s + shard_size] for s in range(0, len(order), shard_size)]
    for k, members in enumerate(shards):
        if not (out / _shard_name(k)).is_file():  # written by an earlier, interrupted run
            _write_shard(out / _shard_name(k), dataset, encoders, members, batch_size)
        if progress is not None:
            progress(len(members))
    null = {f"cond.{key}": v.detach().cpu().contiguous() for key, v in encoders.null_condition().items()}
    with atomic_path(out / NULL) as tmp:
        save_file(null, str(tmp))
    write_json(out / INDEX, {
        **meta, "format": FORMAT, "resolution": resolution, "count": len(dataset), "fields": ["mean", "std", *null],
        "buckets": [list(b) for b in dataset.buckets], "bucket_of": dataset.bucket_of,
        "shards": [{"file": _shard_name(k), "indices": members} for k, members in enumerate(shards)],
    })  # fmt: skip
    return out


def _write_shard(path: Path, dataset: RawDataset, encoders, members: list[int], batch_size: int) -> None:
    tensors: dict[str, torch.Tensor] = {}
    for chunk in _bucket_chunks(dataset, members, batch_size):
        batch = collate([dataset[i] for i in chunk])
        moments = encoders.encode_images(batch["image"])  # {"mean", "std"}: (B, C, h, w)
        cond = encoders.encode_prompts(batch["prompt"])
        for row, i in enumerate(chunk):
            for key, value in moments.items():
                tensors[f"{i}.{key}"] = value[row].detach().cpu().contiguous()
            for key, value in cond.items():
                tensors[f"{i}.cond.{key}"] = value[row].detach().cpu().contiguous()
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": str(FORMAT)})


def _bucket_chunks(dataset: RawDataset, members: list[int], batch_size: int):
    """Consecutive runs of one bucket, at most ``batch_size`` long (members are sorted by bucket)."""
    chunk: list[int] = []
    for i in members:
        if chunk and (len(chunk) == batch_size or dataset.bucket_of[i] != dataset.bucket_of[chunk[0]]):
            yield chunk
            chunk = []
        chunk.append(i)
    if chunk:
        yield chunk


def read_index(folder: str | Path) -> dict:
    folder = Path(folder)
    if not (folder / INDEX).is_file():
        raise FileNotFoundError(f"{folder} is not a complete lindit cache ({INDEX} missing): run `lindit cache`")
    index = json.loads((folder / INDEX).read_text())
    if index.get("format") != FORMAT:
        raise ValueError(f"{folder / INDEX}: unsupported cache format {index.get('format')!r}")
    return index


class CachedDataset(Dataset):
    """Item i: {"mean", "std": (C, h, w), "cond.<key>": conditioning tensors} read from the shards."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.index = read_index(self.folder)
        self.bucket_of = self.index["bucket_of"]
        self.shard_of = {i: s["file"] for s in self.index["shards"] for i in s["indices"]}
        self._handles: dict = {}  # opened lazily: one per shard and DataLoader worker

    def __len__(self) -> int:
        return self.index["count"]

    def _shard(self, name: str):
        if name not in self._handles:
            self._handles[name] = safe_open(str(self.folder / name), framework="pt")
        return self._handles[name]

    def __getitem__(self, i: int) -> dict:
        shard = self._shard(self.shard_of[i])
        return {field: shard.get_tensor(f"{i}.{field}") for field in self.index["fields"]}

    def null_condition(self) -> dict[str, torch.Tensor]:
        """The empty prompt's conditioning, batch 1: {"encoder_hidden_states": (1, L, D), ...}."""
        return {k[len("cond.") :]: v for k, v in load_file(str(self.folder / NULL)).items()}

    def __getstate__(self):  # DataLoader workers reopen the shards themselves
        return {**self.__dict__, "_handles": {}}


def check_cache(index: dict, expected: dict, folder: Path) -> None:
    """Refuse a cache made for another model family, conditioning or VAE setting."""
    for key, value in expected.items():
        if index.get(key) != value:
            raise ValueError(f"cache {folder} was made with {key}={index.get(key)!r}, this run needs {value!r}; "
                             "rerun `lindit cache` with this config")  # fmt: skip


RECORD = "lindit_cache.json"


def claim_cache(out: Path, cfg, shard_size: int) -> None:
    """Record what ``out`` holds, or check that a rerun encodes the same (an interrupted run resumes)."""
    from ..errors import UserError
    from ..io import LOCK_NAME, write_json
    from .run_folder import differences
    from .schema import to_dict

    model = {k: v for k, v in to_dict(cfg.model).items() if k in ("base", "teacher", "vae", "conditioning",
                                                                   "max_sequence_length")}
    record = {"source": to_dict(cfg.data.source), "model": model, "aspect_ratios": cfg.data.aspect_ratios,
              "bucket_multiple": cfg.data.bucket_multiple, "shard_size": shard_size}
    record = json.loads(json.dumps(record))  # the types a JSON round trip gives (tuples -> lists)
    if (out / RECORD).is_file():
        diffs = differences(json.loads((out / RECORD).read_text()), record)
        if diffs:
            raise UserError(f"--out {out} holds a cache of other data or settings ({'; '.join(diffs[:6])}); "
                            "choose a new --out")
        return
    if any(p.name != LOCK_NAME for p in out.iterdir()):
        raise UserError(f"--out {out} exists and is not a lindit cache folder (no {RECORD}); choose a new --out")
    write_json(out / RECORD, record)


def encode(cfg, out: Path, resolutions: list[int], batch_size: int = 16, shard_size: int = 1024,
           device: str | None = None) -> list[Path]:  # fmt: skip
    """Encode ``cfg.data.source`` at each resolution into ``out/<resolution>px``; returns the folders."""
    import torch
    from tqdm.auto import tqdm

    from ..integrations.diffusers.families import family_by_class_name
    from ..dtypes import MIXED_PRECISION
    from .data import RawDataset, make_buckets, open_source
    from .encoders import build_encoders, conditioning_kind
    from .student import model_config

    config = model_config(cfg.model)
    family = family_by_class_name(config["_class_name"]).name
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    encoders = build_encoders(cfg.model, family, config.get("num_embeds_ada_norm"), device,
                              MIXED_PRECISION[cfg.training.mixed_precision])  # fmt: skip
    meta = {"family": family, "conditioning": conditioning_kind(cfg.model.conditioning, family),
            "vae": cfg.model.vae, "base": cfg.model.base, "vae_scale_factor": encoders.images.scale_factor}
    source, folders = open_source(cfg.data), []
    for res in resolutions:
        dataset = RawDataset(source, make_buckets(res, cfg.data.aspect_ratios, cfg.data.bucket_multiple))
        with tqdm(total=len(dataset), desc=f"cache {res}px") as bar:
            folders.append(write_cache(out, dataset, encoders, res, meta, batch_size, shard_size, bar.update))
    return folders
