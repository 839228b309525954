"""``lindit cache``: shards read back equal what the encoders produced, and training on them is identical."""

import pytest
import torch
import yaml
from safetensors.torch import load_file
from training_helpers import assert_same_weights, tiny_config, tiny_dict

import lindit
from lindit.cli import main
from lindit.training import distill, parse_config
from lindit.training.cache import CachedDataset, cache_dir, read_index, write_cache
from lindit.training.cache import encode
from lindit.training.data import RawDataset, collate, make_buckets, open_source
from lindit.training.encoders import BuiltinPrompts, Encoders, PixelImages


def _world_dataset(cfg, resolution):
    return RawDataset(open_source(cfg.data), make_buckets(resolution, cfg.data.aspect_ratios, cfg.data.bucket_multiple))


def test_cache_round_trip_equals_the_encoder_outputs(tmp_path):
    cfg = parse_config(tiny_dict(n=10), ["data.aspect_ratios=[0.75, 1.0, 1.333]"])
    dataset = _world_dataset(cfg, 32)
    encoders = Encoders(PixelImages(), BuiltinPrompts("pixart", torch.device("cpu")))
    folder = write_cache(tmp_path, dataset, encoders, 32, {"family": "pixart"}, batch_size=3, shard_size=4)
    assert folder == cache_dir(tmp_path, 32) and len(read_index(folder)["shards"]) == 3
    cached = CachedDataset(folder)
    assert len(cached) == 10 and cached.bucket_of == dataset.bucket_of and len(set(dataset.bucket_of)) > 1
    for i in range(10):
        raw = collate([dataset[i]])
        moments, cond = encoders.encode_images(raw["image"]), encoders.encode_prompts(raw["prompt"])
        item = cached[i]
        assert torch.equal(item["mean"], moments["mean"][0]) and torch.equal(item["std"], moments["std"][0])
        for key, value in cond.items():
            assert torch.equal(item[f"cond.{key}"], value[0]), key
    null = encoders.null_condition()
    assert all(torch.equal(cached.null_condition()[k], v) for k, v in null.items())


def test_an_interrupted_cache_run_keeps_its_finished_shards(tmp_path):
    cfg = parse_config(tiny_dict(n=6))
    dataset = _world_dataset(cfg, 16)
    encoders = Encoders(PixelImages(), BuiltinPrompts("pixart", torch.device("cpu")))
    folder = write_cache(tmp_path, dataset, encoders, 16, {}, shard_size=4)
    first = (folder / "shard-00000.safetensors").stat().st_mtime_ns
    (folder / "shard-00001.safetensors").unlink()
    (folder / "index.json").unlink()  # as if killed before the index was written
    write_cache(tmp_path, dataset, encoders, 16, {}, shard_size=4)
    assert (folder / "shard-00000.safetensors").stat().st_mtime_ns == first
    assert set(load_file(str(folder / "shard-00001.safetensors"))) == {"4.mean", "4.std", "5.mean", "5.std",
        "4.cond.encoder_hidden_states", "4.cond.encoder_attention_mask",
        "5.cond.encoder_hidden_states", "5.cond.encoder_attention_mask"}  # fmt: skip


def test_training_on_the_cache_matches_training_on_raw_data(tmp_path):
    overrides = ["data.aspect_ratios=[0.75, 1.333]", "data.source.world.n=8", "data.batch_size=2",
                 "stages[0].resolution=32"]
    raw_cfg = tiny_config("pixart", "edit", steps=6, overrides=overrides)
    assert len(set(_world_dataset(raw_cfg, 32).bucket_of)) == 2
    encode(raw_cfg, tmp_path / "cache", [32])
    cached_cfg = tiny_config("pixart", "edit", steps=6, overrides=overrides + [f"data.source={{cache: {tmp_path / 'cache'}}}"])
    raw = lindit.load(distill(raw_cfg, tmp_path / "raw"))
    cached = lindit.load(distill(cached_cfg, tmp_path / "cached"))
    assert_same_weights(raw, cached)


def test_cache_command_and_a_mismatched_cache(tmp_path, capsys):
    config = tmp_path / "lit.yaml"
    config.write_text(yaml.safe_dump(tiny_dict("dit", "lit", n=4)))
    assert main(["cache", "--config", str(config), "--out", str(tmp_path / "c")]) == 0
    index = read_index(tmp_path / "c" / "16px")
    assert index["family"] == "dit" and index["conditioning"] == "labels" and index["count"] == 4
    assert CachedDataset(tmp_path / "c" / "16px")[0]["cond.class_labels"].dtype == torch.long
    wrong = tiny_config("pixart", "edit", overrides=[f"data.source={{cache: {tmp_path / 'c'}}}"])
    assert main(["cache", "--config", str(config)]) == 2
    assert "--out is required" in capsys.readouterr().err
    with pytest.raises(ValueError, match="family='dit'"):
        distill(wrong, tmp_path / "run")
