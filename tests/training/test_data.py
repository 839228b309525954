"""Data: sources, aspect-ratio buckets, caption dropout, and a deterministic, resumable, sharded order."""

import io
import json
import math
import sys
import types
from itertools import islice

import numpy as np
import pytest
import torch
from PIL import Image

from lindit.training.config import HFSource, WorldSource
from lindit.training.data import (BucketBatches, FolderSource, RawDataset, WorldData, drop_captions, fit_to_bucket,
                                  make_buckets, nearest_bucket)  # fmt: skip


def test_buckets_keep_the_pixel_count_and_the_multiple():
    buckets = make_buckets(512, [0.5, 0.75, 1.0, 1.333, 2.0], 64)
    assert (512, 512) in buckets and len(buckets) == 5
    for h, w in buckets:
        assert h % 64 == 0 and w % 64 == 0 and abs(h * w / 512**2 - 1) < 0.2
    assert buckets[nearest_bucket((300, 1000), buckets)] == buckets[0]  # 0.3 -> the widest bucket (h/w 0.5)
    assert buckets[nearest_bucket((1000, 990), buckets)] == (512, 512)


def test_fit_to_bucket_covers_and_centre_crops():
    image = Image.new("RGB", (100, 50), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 10, 50))  # a blue strip on the far left is cropped away
    out = fit_to_bucket(image, (32, 48))
    assert out.shape == (3, 32, 48) and out.min() >= -1 and out.max() <= 1
    assert torch.allclose(out[:, :, 0], torch.tensor([1.0, -1.0, -1.0])[:, None].expand(3, 32), atol=0.02)


def _write_images(folder, sizes):
    folder.mkdir()
    for i, (w, h) in enumerate(sizes):
        Image.new("RGB", (w, h), (i * 40, 0, 0)).save(folder / f"img{i}.png")


def test_folder_source_reads_txt_captions_and_buckets_by_aspect(tmp_path):
    _write_images(tmp_path / "d", [(64, 32), (32, 64), (40, 40)])
    for i, text in enumerate(["wide", "tall", "square"]):
        (tmp_path / "d" / f"img{i}.txt").write_text(text + "\n")
    source = FolderSource(tmp_path / "d")
    data = RawDataset(source, make_buckets(32, [0.5, 1.0, 2.0], 8))
    assert [data[i]["prompt"] for i in range(3)] == ["wide", "tall", "square"]
    assert [tuple(data[i]["image"].shape[1:]) for i in range(3)] == [(24, 48), (48, 24), (32, 32)]


def test_folder_source_reads_metadata_jsonl_and_names_missing_captions(tmp_path):
    _write_images(tmp_path / "d", [(16, 16), (16, 16)])
    rows = [{"file_name": "img0.png", "text": "a"}, {"file_name": "img1.png", "text": "b"}]
    (tmp_path / "d" / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    assert [FolderSource(tmp_path / "d").prompt(i) for i in range(2)] == ["a", "b"]
    (tmp_path / "d" / "metadata.jsonl").unlink()
    with pytest.raises(ValueError, match="img0.png has no caption"):
        FolderSource(tmp_path / "d").prompt(0)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        FolderSource(tmp_path / "nowhere")


def test_hf_source_without_datasets_is_a_clear_error(monkeypatch):
    from lindit.training.data import HFSourceData

    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed
    with pytest.raises(ValueError, match="pip install datasets"):
        HFSourceData(HFSource(name="x"))


def test_world_source_renders_at_the_bucket_size():
    world = WorldData(WorldSource(n=20, seed=3), [0.75, 1.333])
    data = RawDataset(world, make_buckets(32, [0.75, 1.333], 8))
    assert set(data.bucket_of) == {0, 1}
    item = data[0]
    assert item["image"].shape[1:] == data.buckets[data.bucket_of[0]] and isinstance(item["prompt"], str)
    assert WorldData(WorldSource(n=4, kind="class"), [1.0]).prompt(0) in range(18)


def _ids(batches):
    return [tuple(b) for b in batches]


def test_batch_order_is_deterministic_one_bucket_per_batch_and_resumable():
    bucket_of = list(np.random.default_rng(0).integers(0, 3, size=50))
    order = BucketBatches(bucket_of, batch_size=4, seed=7)
    first = list(islice(order.iterate(0), 3 * order.rounds_per_epoch))
    assert first == list(islice(BucketBatches(bucket_of, 4, seed=7).iterate(0), len(first)))
    assert first != list(islice(BucketBatches(bucket_of, 4, seed=8).iterate(0), len(first)))
    for batch in first:
        assert len(batch) == 4 and len({bucket_of[i] for i in batch}) == 1
    epoch0 = first[: order.rounds_per_epoch]
    assert len({i for b in epoch0 for i in b}) == 4 * order.rounds_per_epoch  # no sample twice in an epoch
    for p in (0, 5, order.rounds_per_epoch, order.rounds_per_epoch + 3):  # resume anywhere, also across epochs
        assert list(islice(order.iterate(p), 6)) == first[p : p + 6]


def test_processes_get_disjoint_shards_of_the_same_global_order():
    bucket_of = [i % 2 for i in range(40)]
    one = BucketBatches(bucket_of, 2, seed=1)
    two = [BucketBatches(bucket_of, 2, seed=1, rank=r, world=2) for r in range(2)]
    assert two[0].rounds_per_epoch == one.rounds_per_epoch // 2
    global_batches = _ids(one.epoch(0))
    shards = [_ids(islice(t.iterate(0), t.rounds_per_epoch)) for t in two]
    assert shards[0] == global_batches[0::2] and shards[1] == global_batches[1::2]
    with pytest.raises(ValueError, match="too little data"):
        BucketBatches([0, 1, 2], 2, seed=0)


def test_caption_dropout_replaces_whole_samples_with_the_null_condition():
    b = 4000
    cond = {"encoder_hidden_states": torch.ones(b, 3, 2), "encoder_attention_mask": torch.ones(b, 3, dtype=torch.long)}
    null = {"encoder_hidden_states": torch.zeros(1, 3, 2), "encoder_attention_mask": torch.tensor([[1, 0, 0]])}
    out = drop_captions(cond, null, 0.25, torch.Generator().manual_seed(0))
    dropped = out["encoder_hidden_states"].flatten(1).eq(0).all(1)
    kept = out["encoder_hidden_states"].flatten(1).eq(1).all(1)
    assert bool((dropped | kept).all()) and math.isclose(dropped.float().mean().item(), 0.25, abs_tol=0.03)
    assert torch.equal(out["encoder_attention_mask"][dropped], null["encoder_attention_mask"].expand(int(dropped.sum()), 3))
    labels = drop_captions({"class_labels": torch.arange(8)}, {"class_labels": torch.tensor([18])}, 1.0 - 1e-9,
                           torch.Generator().manual_seed(0))["class_labels"]  # fmt: skip
    assert labels.tolist() == [18] * 8


class _FakeImageFeature:
    def __init__(self, decode=True):
        self.decode = decode


class _FakeDataset:
    """The slice of ``datasets.Dataset`` the HF source uses (``datasets`` is optional and not installed here)."""

    def __init__(self, rows):
        self.rows, self.column_names = rows, list(rows[0])
        self.features = {"image": _FakeImageFeature(), "caption": "string"}

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]

    def cast_column(self, name, feature):
        assert name == "image" and feature.decode is False  # sizes are read from encoded headers
        return self


def _png(w, h):
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (10, 200, 30)).save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


def test_hf_source_reads_image_and_text_columns(monkeypatch):
    from lindit.training.data import HFSourceData

    rows = [{"image": _png(64, 32), "caption": "wide"}, {"image": _png(20, 40), "caption": "tall"}]
    calls = []
    fake = types.SimpleNamespace(Image=_FakeImageFeature,
                                 load_dataset=lambda *a, **k: calls.append((a, k)) or _FakeDataset(rows))  # fmt: skip
    monkeypatch.setitem(sys.modules, "datasets", fake)
    source = HFSourceData(HFSource(name="someone/images", text_column="caption"))
    assert calls == [(("someone/images", None), {"split": "train"})]
    data = RawDataset(source, make_buckets(32, [0.5, 2.0], 8))
    assert [data[i]["prompt"] for i in range(2)] == ["wide", "tall"]
    assert [tuple(data[i]["image"].shape[1:]) for i in range(2)] == [(24, 48), (48, 24)]
    with pytest.raises(ValueError, match="no column 'text'"):
        HFSourceData(HFSource(name="someone/images"))
