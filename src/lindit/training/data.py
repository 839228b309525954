"""Training data: image sources, aspect-ratio buckets, and a deterministic, resumable, sharded batch order.

A source maps index -> (image, prompt): an image folder (``x.png`` + ``x.txt``, or ``metadata.jsonl`` with
``file_name`` and ``text``), a Hugging Face ``datasets`` dataset (``datasets`` imported only then), or the
shapes world (rendered directly at the bucket size). ``lindit cache`` output is read by ``cache.py``.

Every sample is assigned to the aspect-ratio bucket nearest its own (buckets keep about resolution**2
pixels, sides multiples of ``bucket_multiple``); a batch holds one bucket. The batch order is a pure function
of (seed, epoch): resuming at position p (global batches consumed) replays exactly what an uninterrupted run
would have seen. Process r of W takes global batches r, r + W, r + 2W, ...
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .config import DataConfig, HFSource, WorldSource

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def make_buckets(resolution: int, ratios: list[float], multiple: int) -> list[tuple[int, int]]:
    """(height, width) per aspect ratio (height / width), about resolution**2 pixels, sides multiples of ``multiple``."""
    buckets = []
    for r in ratios:
        h = max(multiple, round(resolution * math.sqrt(r) / multiple) * multiple)
        w = max(multiple, round(resolution / math.sqrt(r) / multiple) * multiple)
        if (h, w) not in buckets:
            buckets.append((h, w))
    return buckets


def nearest_bucket(size: tuple[int, int], buckets: list[tuple[int, int]]) -> int:
    """Index of the bucket whose aspect ratio is closest (in log space) to ``size`` = (height, width)."""
    ratio = math.log(size[0] / size[1])
    return min(range(len(buckets)), key=lambda i: abs(math.log(buckets[i][0] / buckets[i][1]) - ratio))


def fit_to_bucket(image: Image.Image, hw: tuple[int, int]) -> torch.Tensor:
    """Resize to cover (h, w), centre-crop to it; -> (3, h, w) float32 in [-1, 1]."""
    h, w = hw
    scale = max(h / image.height, w / image.width)
    size = (max(w, round(image.width * scale)), max(h, round(image.height * scale)))
    image = image.convert("RGB").resize(size, Image.BICUBIC)
    left, top = (size[0] - w) // 2, (size[1] - h) // 2
    image = image.crop((left, top, left + w, top + h))
    pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)  # (3, h, w)
    return pixels.float() / 127.5 - 1.0


class FolderSource:
    """Images in a folder (recursively) with captions from ``metadata.jsonl`` or a ``.txt`` beside each image."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"data folder {self.root} does not exist")
        self.files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise ValueError(f"data folder {self.root} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        self.captions = self._metadata()

    def _metadata(self) -> dict[str, str] | None:
        meta = self.root / "metadata.jsonl"
        if not meta.is_file():
            return None
        rows = [json.loads(line) for line in meta.read_text().splitlines() if line.strip()]
        return {row["file_name"]: str(row["text"]) for row in rows}

    def __len__(self) -> int:
        return len(self.files)

    def size(self, i: int) -> tuple[int, int]:
        with Image.open(self.files[i]) as im:  # reads the header only
            return im.height, im.width

    def prompt(self, i: int) -> str:
        path = self.files[i]
        if self.captions is not None:
            key = path.relative_to(self.root).as_posix()
            if key not in self.captions:
                raise ValueError(f"{self.root / 'metadata.jsonl'} has no caption for {key}")
            return self.captions[key]
        txt = path.with_suffix(".txt")
        if not txt.is_file():
            raise ValueError(f"{path} has no caption: write {txt.name} beside it or a metadata.jsonl")
        return txt.read_text().strip()

    def image(self, i: int, hw: tuple[int, int]) -> torch.Tensor:
        with Image.open(self.files[i]) as im:
            return fit_to_bucket(im, hw)


class HFSourceData:
    """A Hugging Face ``datasets`` dataset with an image column and a text (or class label) column."""

    def __init__(self, spec: HFSource):
        try:
            import datasets
        except ImportError:
            raise ValueError("data.source.hf needs the `datasets` package: pip install datasets") from None
        local = Path(spec.name)
        if (local / "dataset_info.json").is_file() or (local / "state.json").is_file():
            ds = datasets.load_from_disk(str(local))
        else:
            ds = datasets.load_dataset(spec.name, spec.config_name, split=spec.split)
        for col in (spec.image_column, spec.text_column):
            if col not in ds.column_names:
                raise ValueError(f"dataset {spec.name} has no column {col!r}; columns: {', '.join(ds.column_names)}")
        if isinstance(ds.features[spec.image_column], datasets.Image):
            ds = ds.cast_column(spec.image_column, datasets.Image(decode=False))  # sizes from headers only
        self.ds, self.spec = ds, spec

    def __len__(self) -> int:
        return len(self.ds)

    def _open(self, i: int) -> Image.Image:
        value = self.ds[i][self.spec.image_column]
        if isinstance(value, Image.Image):
            return value
        if isinstance(value, dict):
            import io

            return Image.open(io.BytesIO(value["bytes"])) if value.get("bytes") else Image.open(value["path"])
        return Image.open(value)

    def size(self, i: int) -> tuple[int, int]:
        im = self._open(i)
        return im.height, im.width

    def prompt(self, i: int):
        return self.ds[i][self.spec.text_column]

    def image(self, i: int, hw: tuple[int, int]) -> torch.Tensor:
        return fit_to_bucket(self._open(i), hw)


class WorldData:
    """The shapes world: captions (``kind: text``) or class ids (``kind: class``), any aspect ratio."""

    def __init__(self, spec: WorldSource, ratios: list[float]):
        from ..world.shapes import ShapesClassDataset, ShapesDataset

        cls = ShapesDataset if spec.kind == "text" else ShapesClassDataset
        extra = {"max_objects": spec.max_objects} if spec.kind == "text" else {}
        self.data = cls(spec.n, seed=spec.seed, **extra)
        self.spec, self.ratios = spec, ratios

    def __len__(self) -> int:
        return len(self.data)

    def size(self, i: int) -> tuple[int, int]:
        """A nominal size whose aspect ratio is drawn per sample (a pure function of seed and index)."""
        r = self.ratios[np.random.default_rng([self.spec.seed, i, 7]).integers(len(self.ratios))]
        return round(1000 * r), 1000

    def prompt(self, i: int):
        if self.spec.kind == "text":
            return self.data.caption(i)
        return self.data.scene(i)[1]

    def image(self, i: int, hw: tuple[int, int]) -> torch.Tensor:
        from ..world.shapes import render_scene

        scene = self.data.scene(i) if self.spec.kind == "text" else self.data.scene(i)[0]
        return render_scene(scene, hw)  # (3, h, w) in [-1, 1]


def open_source(cfg: DataConfig):
    """The raw source named by ``cfg.source`` (not ``cache``, which ``cache.CachedDataset`` reads)."""
    kind = cfg.source.kind()
    if kind == "folder":
        return FolderSource(cfg.source.folder)
    if kind == "hf":
        return HFSourceData(cfg.source.hf)
    if kind == "world":
        return WorldData(cfg.source.world, cfg.aspect_ratios)
    raise ValueError(f"open_source: {kind!r} is not a raw image source")


class RawDataset(Dataset):
    """Item i: {"image": (3, h, w) in [-1, 1] at sample i's bucket, "prompt": caption or class id}."""

    def __init__(self, source, buckets: list[tuple[int, int]]):
        self.source, self.buckets = source, buckets
        self.bucket_of = [nearest_bucket(source.size(i), buckets) for i in range(len(source))]

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.source.image(i, self.buckets[self.bucket_of[i]]), "prompt": self.source.prompt(i)}


def collate(items: list[dict]) -> dict:
    """Stack tensors (one bucket, so equal shapes); keep other values (captions) as lists."""
    out = {}
    for key in items[0]:
        values = [it[key] for it in items]
        out[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return out


class BucketBatches:
    """The global batch order: per epoch, shuffled indices cut into one-bucket batches, batches shuffled.

    ``rounds_per_epoch`` is fixed (bucket sizes do not change), so a position (global batches consumed /
    world size) maps to (epoch, round) without any stored state. Incomplete batches are dropped.
    """

    def __init__(self, bucket_of: list[int], batch_size: int, seed: int, rank: int = 0, world: int = 1):
        self.bucket_of = np.asarray(bucket_of)
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world
        per_bucket = np.bincount(self.bucket_of) // batch_size if len(self.bucket_of) else np.zeros(1, int)
        self.rounds_per_epoch = int(per_bucket.sum()) // world
        if self.rounds_per_epoch == 0:
            raise ValueError(f"too little data: {len(self.bucket_of)} samples give no full batch of {batch_size} "
                             f"per bucket for each of {world} process(es)")  # fmt: skip

    def epoch(self, epoch: int) -> list[np.ndarray]:
        """The global batches of ``epoch`` (all processes' batches, interleaved)."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.bucket_of))
        batches = []
        for b in np.unique(self.bucket_of):
            members = order[self.bucket_of[order] == b]
            full = len(members) // self.batch_size * self.batch_size
            batches += list(members[:full].reshape(-1, self.batch_size))
        perm = rng.permutation(len(batches))
        return [batches[i] for i in perm[: self.rounds_per_epoch * self.world]]

    def iterate(self, position: int = 0):
        """This process's batches (lists of indices) from ``position`` (rounds consumed) on, forever."""
        epoch, start = divmod(position, self.rounds_per_epoch)
        while True:
            batches = self.epoch(epoch)
            for r in range(start, self.rounds_per_epoch):
                yield batches[r * self.world + self.rank].tolist()
            epoch, start = epoch + 1, 0


class BatchOrder:
    """A re-iterable batch sampler for a DataLoader, starting at a position."""

    def __init__(self, batches: BucketBatches, position: int):
        self.batches, self.position = batches, position

    def __iter__(self):
        return self.batches.iterate(self.position)


def drop_captions(cond: dict, null: dict, p: float, gen: torch.Generator) -> dict:
    """Classifier-free guidance dropout: each sample's conditioning becomes the empty prompt's (or the null
    class) with probability ``p``. cond: key -> (B, ...); null: key -> (1, ...)."""
    b = next(iter(cond.values())).shape[0]
    drop = torch.rand(b, generator=gen) < p  # (B,)
    out = {}
    for key, value in cond.items():
        empty = null[key].to(value.device, value.dtype).expand_as(value)
        out[key] = torch.where(drop.to(value.device).view(b, *([1] * (value.ndim - 1))), empty, value)
    return out
