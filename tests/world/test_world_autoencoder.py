"""The world's shipped autoencoder: small, faithful enough for the detector, unit-scale latents, remakeable."""

import json

import pytest
import torch

from lindit.world.autoencoder import ASSET, DEFAULTS, FACTOR, SETTINGS_NAME, load_world_autoencoder, train_autoencoder
from lindit.world.detect import adherence
from lindit.world.shapes import ShapesDataset


@pytest.fixture(scope="module")
def vae():
    return load_world_autoencoder()


@pytest.fixture(scope="module")
def held_out():
    data = ShapesDataset(300, seed=4242, size=32)  # a seed no training run uses
    return torch.stack([data[i][0] for i in range(len(data))]), [data.label(i) for i in range(len(data))]


def test_shipped_autoencoder_is_small_and_matches_its_recorded_settings(vae):
    assert (ASSET / "diffusion_pytorch_model.safetensors").stat().st_size < 2 * 2**20
    record = json.loads((ASSET / SETTINGS_NAME).read_text())
    assert record["config"] == DEFAULTS["config"] and record["steps"] == DEFAULTS["steps"]
    assert record["command"].startswith("lindit train-teacher autoencoder")
    assert vae.config.scaling_factor == record["scaling_factor"] and not vae.training
    assert FACTOR == 4 and 2 ** (len(vae.config.block_out_channels) - 1) == FACTOR  # what the pipelines read


def test_reconstructions_read_back_as_the_prompt(vae, held_out):
    images, labels = held_out
    with torch.no_grad():
        latents = vae.encode(images).latent_dist.mean  # (N, 4, 8, 8)
        recon = vae.decode(latents).sample  # (N, 3, 32, 32)
    assert latents.shape == (len(images), 4, 8, 8)
    assert adherence(images, labels) == 1.0
    # The teachers cannot be more faithful than their decoder: it must keep shapes, colours and cells.
    assert adherence(recon, labels) >= 0.93  # measured 0.949 on 1,000 (lindit world autoencoder)
    assert ((recon - images) ** 2).mean() < 5e-3  # mean image: 0.055


def test_scaled_latents_have_unit_scale_for_diffusion(vae, held_out):
    with torch.no_grad():
        latents = vae.encode(held_out[0]).latent_dist.mean * vae.config.scaling_factor
    assert 0.85 < latents.std().item() < 1.15


def test_bad_shapes_are_named(vae):
    with pytest.raises(ValueError, match=r"images must be \(B, 3, H, W\) with H and W multiples of 4"):
        vae.encode(torch.zeros(1, 3, 30, 32))
    with pytest.raises(ValueError, match=r"latents must be \(B, 4, H, W\)"):
        vae.decode(torch.zeros(1, 3, 8, 8))


def test_any_size_decodes_at_four_times_the_latent_size(vae):
    with torch.no_grad():
        assert vae.decode(torch.zeros(2, 4, 6, 10)).sample.shape == (2, 3, 24, 40)


def test_train_autoencoder_writes_a_loadable_model_and_refuses_zero_steps(tmp_path):
    out = train_autoencoder(tmp_path / "ae", steps=2, command="test", dataset_size=64, decoder_steps=2)
    record = json.loads((out / SETTINGS_NAME).read_text())
    assert record["steps"] == 2 and record["command"] == "test" and record["scaling_factor"] > 0
    assert set(record["final_losses_smoothed"]) == {"phase1", "phase2"}
    first = load_world_autoencoder(out)
    assert first.config.scaling_factor == record["scaling_factor"]
    # Phase 2 alone, from a phase-1 model: the encoder (the teachers' latent space) must not move.
    again = train_autoencoder(tmp_path / "ae2", command="test", dataset_size=64, decoder_steps=2, phase1=out)
    second = load_world_autoencoder(again)
    for (name, a), b in zip(first.encoder.state_dict().items(), second.encoder.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    assert any(not torch.equal(a, b) for a, b in zip(first.decoder.parameters(), second.decoder.parameters()))
    assert second.config.scaling_factor == first.config.scaling_factor
    with pytest.raises(ValueError, match=r"unknown autoencoder settings \['colour'\]"):
        train_autoencoder(tmp_path / "bad", colour=1)
    with pytest.raises(ValueError, match="steps must be positive"):
        train_autoencoder(tmp_path / "bad", steps=0)
    assert not (tmp_path / "bad").exists()


def test_missing_weights_say_how_to_make_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="lindit train-teacher autoencoder"):
        load_world_autoencoder(tmp_path)
