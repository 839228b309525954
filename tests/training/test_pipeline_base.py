"""A run whose VAE, T5, scheduler and teacher come from a diffusers pipeline folder (``model.base``), as the
paper-scale configs use PixArt-Sigma's: here a tiny PixArtSigmaPipeline saved to disk, loaded offline."""

import pytest
import torch
import yaml
from diffusers import DDPMScheduler, PixArtSigmaPipeline, PixArtTransformer2DModel
from tiny_models import tiny_vae
from tokenizers import Tokenizer, models, pre_tokenizers
from training_helpers import tiny_dict
from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

import lindit
from lindit.cli import main
from lindit.training import distill, parse_config
from lindit.training.cache import CachedDataset
from lindit.training.encoders import build_encoders
from lindit.world.grammar import vocabulary


def _tokenizer():
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(vocabulary())}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


@pytest.fixture(scope="module")
def pipeline_folder(tmp_path_factory):
    torch.manual_seed(0)
    t5 = T5EncoderModel(T5Config(vocab_size=len(vocabulary()) + 3, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2))
    transformer = PixArtTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=2,
        cross_attention_dim=16, sample_size=8, patch_size=2, caption_channels=16, use_additional_conditions=False)
    pipe = PixArtSigmaPipeline(tokenizer=_tokenizer(), text_encoder=t5, vae=tiny_vae(), transformer=transformer,
                               scheduler=DDPMScheduler(beta_schedule="linear", prediction_type="epsilon"))
    folder = tmp_path_factory.mktemp("pipe") / "pixart-sigma-tiny"
    pipe.save_pretrained(folder)
    return folder


def _data(folder):
    data = tiny_dict("pixart", "edit", steps=4)
    data["model"] = {"base": str(folder), "method": "edit", "max_sequence_length": 8}  # teacher: base/transformer
    return data


def test_encoders_come_from_the_pipeline(pipeline_folder):
    cfg = parse_config(_data(pipeline_folder))
    enc = build_encoders(cfg.model, "pixart", None, torch.device("cpu"), torch.float32)
    moments = enc.encode_images(torch.zeros(2, 3, 16, 16))
    assert moments["mean"].shape == (2, 4, 8, 8) and (moments["std"] > 0).all()  # VAE posterior, 2x down
    cond = enc.encode_prompts(["a red circle in the center", ""])
    assert cond["encoder_hidden_states"].shape == (2, 8, 16)
    assert cond["encoder_attention_mask"].tolist()[0][:6] == [1] * 6 and cond["encoder_attention_mask"][1].sum() == 0


def test_distill_and_cache_from_a_pipeline_folder(pipeline_folder, tmp_path):
    out = distill(parse_config(_data(pipeline_folder)), tmp_path / "raw")
    student = lindit.load(out)
    assert student.config.in_channels == 4 and student.lindit_config["method"] == "edit"
    config = tmp_path / "recipe.yaml"
    config.write_text(yaml.safe_dump(_data(pipeline_folder)))
    assert main(["cache", "--config", str(config), "--out", str(tmp_path / "cache")]) == 0
    item = CachedDataset(tmp_path / "cache" / "16px")[0]
    assert item["mean"].shape == (4, 8, 8) and item["cond.encoder_hidden_states"].shape == (8, 16)
    cached = _data(pipeline_folder)
    cached["data"]["source"] = {"cache": str(tmp_path / "cache")}
    assert lindit.load(distill(parse_config(cached), tmp_path / "cached")) is not None
