"""The layer-by-layer int8 text-encoder loader of --low-memory and its plain safetensors reader."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from lindit.deploy.text_encoders import load_int8_encoder, read_safetensors


def test_read_safetensors_equals_the_library_for_every_dtype(tmp_path):
    tensors = {"bf16": torch.randn(3, 5).bfloat16(), "f16": torch.randn(7).half(), "f32": torch.randn(2, 3, 4),
               "i64": torch.arange(5), "u8": torch.arange(6, dtype=torch.uint8).reshape(2, 3),
               "bool": torch.tensor([True, False]), "empty": torch.zeros(0, 4)}
    save_file(tensors, str(tmp_path / "w.safetensors"), metadata={"format": "pt"})
    ours = dict(read_safetensors(tmp_path / "w.safetensors"))
    ref = load_file(str(tmp_path / "w.safetensors"))
    assert ours.keys() == ref.keys()
    for name, t in ref.items():
        assert ours[name].dtype == t.dtype and torch.equal(ours[name], t), name


def test_unreadable_dtype_is_named(tmp_path):
    header = json.dumps({"x": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]}}).encode()
    (tmp_path / "w.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"\0\0")
    with pytest.raises(ValueError, match="F8_E4M3; readable: BF16"):
        list(read_safetensors(tmp_path / "w.safetensors"))


def test_int8_encoder_matches_the_full_one_and_names_missing_weights(tmp_path):
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    full = T5EncoderModel(T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                   feed_forward_proj="gated-gelu")).eval()
    full.save_pretrained(str(tmp_path / "t5"))
    int8 = load_int8_encoder(T5EncoderModel, tmp_path / "t5", torch.float32)
    ids = torch.randint(0, 64, (2, 9))
    with torch.no_grad():
        a, b = full(ids).last_hidden_state, int8(ids).last_hidden_state
    assert "Int8" in type(int8.encoder.block[1].layer[1].DenseReluDense.wo.weight).__name__
    assert not torch.equal(a, b) and (a - b).abs().max() < 0.05 * a.abs().max()  # int8 weights: close, not equal
    state = load_file(str(tmp_path / "t5" / "model.safetensors"))
    save_file({k: v for k, v in state.items() if "block.1." not in k}, str(tmp_path / "t5" / "model.safetensors"))
    with pytest.raises(ValueError, match="lacks weights for .*block.1"):
        load_int8_encoder(T5EncoderModel, tmp_path / "t5", torch.float32)
