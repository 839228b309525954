"""Tiny recipes for tests: the widths of tests/tiny_models.py, but pixel space (3 channels) and the width
of the built-in text encoder (64), so the shapes world feeds them without a VAE or T5."""

import torch

from lindit.training.config import RandomModel, parse_config
from lindit.training.student import random_model
from lindit.training.schema import from_dict

TINY = {
    "pixart": ("PixArtTransformer2DModel", "edit", dict(
        num_attention_heads=2, attention_head_dim=8, in_channels=3, out_channels=6, num_layers=2,
        cross_attention_dim=16, sample_size=8, patch_size=2, caption_channels=64, use_additional_conditions=False)),
    "sd3": ("SD3Transformer2DModel", "mm_edit", dict(
        sample_size=8, patch_size=2, in_channels=3, out_channels=3, num_layers=3, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=64, caption_projection_dim=16, pooled_projection_dim=64,
        pos_embed_max_size=32, dual_attention_layers=[0], qk_norm="rms_norm")),
    "dit": ("DiTTransformer2DModel", "lit", dict(
        num_attention_heads=2, attention_head_dim=8, in_channels=3, out_channels=6, num_layers=2,
        sample_size=8, patch_size=2, num_embeds_ada_norm=18)),
}


def teacher_spec(family, seed=0, **config):
    cls, _, base = TINY[family]
    return {"random": {"class": cls, "config": {**base, **config}, "seed": seed}}


def build_teacher(family, seed=0, **config):
    """The teacher ``teacher_spec`` describes, built exactly as a run builds it."""
    return random_model(from_dict(RandomModel, teacher_spec(family, seed, **config)["random"]))


def tiny_dict(family="pixart", recipe="edit", steps=20, n=4, batch=4, resolution=16):
    """A run config (plain data) training a tiny ``family`` model on ``n`` world samples."""
    _, method, _ = TINY[family]
    return {
        "recipe": recipe,
        "seed": 0,
        "model": {
            "teacher": teacher_spec(family), "method": method, "vae": "none",
            "conditioning": "labels" if family == "dit" else "builtin",
            "scheduler": {"num_train_timesteps": 1000, "shift": 3.0} if family == "sd3" else {},
        },
        "data": {
            "source": {"world": {"n": n, "seed": 0, "kind": "class" if family == "dit" else "text"}},
            "batch_size": batch, "caption_dropout": 0.1, "aspect_ratios": [1.0], "bucket_multiple": 8,
            "num_workers": 0,
        },
        "stages": [{"steps": steps, "lr": 2.0e-3, "resolution": resolution, "trainable": "all"}],
        "optimizer": {"warmup_steps": 0},
        "checkpointing": {"every": 1000, "keep": 2},
        "logging": {"every": 1, "progress_bar": False, "tensorboard": False},
    }


def tiny_config(family="pixart", recipe="edit", overrides=(), **kw):
    return parse_config(tiny_dict(family, recipe, **kw), list(overrides))


def state_of(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"{k} differs"
