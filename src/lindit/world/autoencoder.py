"""The shapes world's tiny autoencoder: 32x32 RGB <-> 8x8x4 latents, as SD's VAE is 1024 px <-> 128x128x4.

The built-in teachers work in its latent space, like PixArt-Sigma, SD3.5 and DiT in theirs: a transformer
with patch size 1 keeps 64 tokens per 32 px image while the convolutional decoder draws the shapes' edges
(a linear unpatchify of 4x4 pixel patches cannot, and 256 pixel tokens cost 4x per step).

It is a diffusers ``ModelMixin`` with the config fields and methods the stock pipelines read
(``block_out_channels`` gives the VAE factor 4, ``scaling_factor``, ``shift_factor``; ``encode`` returns a
``latent_dist``, ``decode`` a ``DecoderOutput``), so PixArtSigmaPipeline, StableDiffusion3Pipeline and
DiTPipeline decode with it unchanged, and lindit's trainer encodes with it as with any AutoencoderKL.

    vae = load_world_autoencoder()
    z = vae.encode(images).latent_dist.mean * vae.config.scaling_factor   # (B, 4, H/4, W/4)
    lindit train-teacher autoencoder          # remakes src/lindit/world/assets/autoencoder
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKLOutput
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from torch import nn
from tqdm.auto import tqdm

from ..io import atomic_dir, write_json

ASSET = Path(__file__).parent / "assets" / "autoencoder"
SETTINGS_NAME = "train_settings.json"

__all__ = ["ASSET", "FACTOR", "WorldAutoencoder", "load_world_autoencoder", "train_autoencoder"]


class ResBlock(nn.Module):
    """x + conv(silu(conv(silu(x)))): residual, so the plain stack trains in minutes (measured: a non-residual
    stack of the same convolutions was still at the mean image's error after 500 steps)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))  # (B, C, H, W)


class WorldAutoencoder(ModelMixin, ConfigMixin):
    """A KL autoencoder of plain convolutions; each level after the first halves the size.

    block_out_channels (c0, c1, ..., cK): channels at full size, 1/2, ..., 1/2**K; K = 2 gives 32 px -> 8x8.
    """

    @register_to_config
    def __init__(self, in_channels: int = 3, latent_channels: int = 4, block_out_channels: tuple = (16, 32, 64),
                 scaling_factor: float = 1.0, shift_factor: float = 0.0):
        super().__init__()
        chans = list(block_out_channels)
        down = [nn.Conv2d(in_channels, chans[0], 3, padding=1), ResBlock(chans[0])]
        for cin, cout in zip(chans, chans[1:]):  # stride-2 conv to the next level, then a residual block
            down += [nn.Conv2d(cin, cout, 4, stride=2, padding=1), ResBlock(cout)]
        self.encoder = nn.Sequential(*down, nn.SiLU(), nn.Conv2d(chans[-1], 2 * latent_channels, 1))
        up = [nn.Conv2d(latent_channels, chans[-1], 3, padding=1), ResBlock(chans[-1])]
        for cin, cout in zip(chans[::-1], chans[::-1][1:]):  # nearest x2, a 3x3 conv, a residual block (SD's)
            up += [nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(cin, cout, 3, padding=1), ResBlock(cout)]
        self.decoder = nn.Sequential(*up, nn.SiLU(), nn.Conv2d(chans[0], in_channels, 3, padding=1))

    @property
    def factor(self) -> int:
        return 2 ** (len(self.config.block_out_channels) - 1)

    def _check(self, x: torch.Tensor, channels: int, what: str, multiple: int = 1) -> None:
        if x.ndim != 4 or x.shape[1] != channels or x.shape[-2] % multiple or x.shape[-1] % multiple:
            sizes = f" with H and W multiples of {multiple}" if multiple > 1 else ""
            raise ValueError(f"{what} must be (B, {channels}, H, W){sizes}, got {tuple(x.shape)}")

    def encode(self, x: torch.Tensor, return_dict: bool = True):
        """Images (B, 3, H, W) in [-1, 1] -> posterior over latents (B, C, H/f, W/f), unscaled."""
        self._check(x, self.config.in_channels, "images", self.factor)
        dist = DiagonalGaussianDistribution(self.encoder(x))  # moments (B, 2C, H/f, W/f)
        return AutoencoderKLOutput(latent_dist=dist) if return_dict else (dist,)

    def decode(self, z: torch.Tensor, return_dict: bool = True, generator=None):
        """Unscaled latents (B, C, h, w) -> images (B, 3, f h, f w) in about [-1, 1]."""
        self._check(z, self.config.latent_channels, "latents")
        image = self.decoder(z)  # (B, 3, f h, f w)
        return DecoderOutput(sample=image) if return_dict else (image,)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """Reconstruction of a sampled latent and the posterior (for the training loss)."""
        dist = self.encode(x).latent_dist
        return self.decode(dist.sample(generator)).sample, dist

    def enable_tiling(self, *args, **kwargs) -> None:  # 32 px images; large ones decode whole (convolutions)
        return None

    def enable_slicing(self) -> None:
        return None


def load_world_autoencoder(path: str | Path | None = None) -> WorldAutoencoder:
    """The shipped autoencoder (or one written by ``lindit train-teacher autoencoder --out``), eval mode."""
    folder = Path(path) if path is not None else ASSET
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"the world's autoencoder has no weights at {folder}; make them with "
                                f"`lindit train-teacher autoencoder`")
    return WorldAutoencoder.from_pretrained(str(folder), local_files_only=True).eval().requires_grad_(False)


# Training settings, recorded beside the weights. Phase 1 trains everything on MSE; a small KL weight keeps
# the latents smooth and near unit scale for diffusion without costing reconstruction. Phase 2 trains the
# decoder alone, so the latent space the teachers learnt in stays fixed, on latents drawn from the posterior
# with an added L1 term: it pulls on the small errors of rims and corners that decide a shape (after phase 1
# alone, 9% of held-out reconstructions lost a square's corners to the detector). L1 from the start learns
# far slower (16x phase 1's MSE after 1,000 steps: its median is the background).
DEFAULTS = {"steps": 2500, "batch_size": 64, "lr": 1e-3, "warmup_steps": 50, "kl_weight": 1e-4,
            "decoder_steps": 2500, "decoder_lr": 3e-4, "decoder_l1_weight": 0.1,
            "dataset_size": 20000, "size": 32, "max_objects": 2, "seed": 0,
            "config": {"in_channels": 3, "latent_channels": 4, "block_out_channels": [16, 32, 64]}}
FACTOR = 2 ** (len(DEFAULTS["config"]["block_out_channels"]) - 1)  # pixels per latent pixel


def _loss(model: WorldAutoencoder, x: torch.Tensor, kl_weight: float, l1_weight: float,
          generator) -> dict[str, torch.Tensor]:
    """MSE + l1_weight * L1 reconstruction + kl_weight * KL to N(0, 1), per element."""
    recon, dist = model(x, generator)  # (B, 3, H, W)
    kl = 0.5 * (dist.mean.pow(2) + dist.var - 1.0 - dist.logvar).mean()
    mse = F.mse_loss(recon, x)
    terms = {"recon": mse, "kl": kl, "total": mse + kl_weight * kl}
    if l1_weight:
        terms["l1"] = F.l1_loss(recon, x)
        terms["total"] = terms["total"] + l1_weight * terms["l1"]
    return terms


@torch.no_grad()
def _latent_std(model: WorldAutoencoder, images: torch.Tensor) -> float:
    """Standard deviation of the posterior means: scaling_factor = 1 / it gives unit-variance latents."""
    return float(torch.cat([model.encode(x).latent_dist.mean for x in images.split(256)]).std())


def _phase(model, params, images, settings: dict, steps: int, lr: float, kl_weight: float, l1_weight: float,
           generator, name: str) -> dict[str, float]:
    """``steps`` AdamW steps with warm-up and cosine decay on ``params``; the smoothed final losses."""
    from diffusers.optimization import get_scheduler

    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    schedule = get_scheduler("cosine", optimizer, num_warmup_steps=settings["warmup_steps"],
                             num_training_steps=steps)
    recent: dict[str, float] = {}
    bar = tqdm(range(steps), desc=f"train-teacher autoencoder: {name}")
    for _ in bar:
        idx = torch.randint(len(images), (settings["batch_size"],), generator=generator)
        terms = _loss(model, images[idx], kl_weight, l1_weight, generator)
        optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        optimizer.step()
        schedule.step()
        recent = {k: 0.98 * recent.get(k, v.item()) + 0.02 * v.item() for k, v in terms.items()}
        bar.set_postfix({k: f"{v:.5f}" for k, v in recent.items()}, refresh=False)
    return {k: round(v, 6) for k, v in recent.items()}


def _settings(steps: int | None, overrides: dict) -> dict:
    unknown = sorted(set(overrides) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown autoencoder settings {unknown}; valid: {sorted(DEFAULTS)}")
    settings = {**DEFAULTS, **overrides, **({"steps": steps} if steps is not None else {})}
    if settings["steps"] <= 0 or settings["decoder_steps"] < 0:
        raise ValueError(f"steps must be positive and decoder_steps non-negative, got {settings['steps']} "
                         f"and {settings['decoder_steps']}")
    return settings


def train_autoencoder(out: str | Path | None = None, steps: int | None = None, overwrite: bool = False,
                      command: str | None = None, phase1: str | Path | None = None, **overrides) -> Path:
    """Train the world's autoencoder, set its scaling factor, write it to ``out`` (default: the package's).

    ``steps`` overrides phase 1's steps, ``overrides`` any entry of ``DEFAULTS`` (e.g. ``dataset_size`` for
    a quick run). ``phase1``: a saved autoencoder from phase 1 with the same settings, to run phase 2 only
    (its encoder and scaling factor are kept, so models trained in its latent space stay valid).
    """
    from .shapes import ShapesDataset

    settings = _settings(steps, overrides)
    torch.manual_seed(settings["seed"])
    generator = torch.Generator().manual_seed(settings["seed"])
    data = ShapesDataset(settings["dataset_size"], seed=settings["seed"], size=settings["size"],
                         max_objects=settings["max_objects"])
    images = torch.stack([data[i][0] for i in tqdm(range(len(data)), desc="rendering", leave=False)])
    start, losses = time.perf_counter(), {}
    if phase1 is None:
        model = WorldAutoencoder(**settings["config"]).train()
        losses["phase1"] = _phase(model, model.parameters(), images, settings, settings["steps"], settings["lr"],
                                  settings["kl_weight"], 0.0, generator, "phase 1 (all)")
        model.register_to_config(scaling_factor=round(1.0 / _latent_std(model.eval(), images[:4096]), 5))
    else:
        model = WorldAutoencoder.from_pretrained(str(phase1), local_files_only=True)
        losses["phase1"] = json.loads((Path(phase1) / SETTINGS_NAME).read_text())["final_losses_smoothed"]
    if settings["decoder_steps"]:
        model.train().encoder.requires_grad_(False)
        losses["phase2"] = _phase(model, model.decoder.parameters(), images, settings, settings["decoder_steps"],
                                  settings["decoder_lr"], 0.0, settings["decoder_l1_weight"], generator,
                                  "phase 2 (decoder)")
    model.eval().requires_grad_(True)
    record = {**settings, "command": command or "lindit train-teacher autoencoder",
              "scaling_factor": model.config.scaling_factor, "final_losses_smoothed": losses,
              "train_seconds": round(time.perf_counter() - start, 1), "torch": torch.__version__,
              "parameters": sum(p.numel() for p in model.parameters())}
    if phase1 is not None:
        record["phase1_from"] = str(phase1)
    out = Path(out) if out is not None else ASSET
    with atomic_dir(out, overwrite=overwrite or out == ASSET) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        write_json(Path(tmp) / SETTINGS_NAME, record)
    last = losses.get("phase2", losses["phase1"])
    print(f"wrote {out} ({record['parameters']:,} parameters, {record['train_seconds']:.0f} s, "
          f"reconstruction MSE {last.get('recon', float('nan')):.5f})")
    return out


@torch.no_grad()
def reconstruction_report(n: int = 1000, seed: int = 4242, path: str | Path | None = None) -> dict[str, float]:
    """How faithful the autoencoder is on ``n`` held-out world images: MSE, PSNR (on [0, 1] pixels) and
    the detector's adherence of the real images and of their reconstructions (posterior mean and sample)."""
    from .detect import adherence
    from .shapes import ShapesDataset

    vae = load_world_autoencoder(path)
    data = ShapesDataset(n, seed=seed, size=32)
    images = torch.stack([data[i][0] for i in range(n)])  # (n, 3, 32, 32)
    labels = [data.label(i) for i in range(n)]
    dist = [vae.encode(x).latent_dist for x in images.split(256)]
    mean = torch.cat([vae.decode(d.mean).sample for d in dist])  # (n, 3, 32, 32)
    sampled = torch.cat([vae.decode(d.sample(torch.Generator().manual_seed(0))).sample for d in dist])
    mse = ((mean.clamp(-1, 1) - images) / 2).pow(2).mean().item()
    return {"n": n, "mse": round(mse, 6), "psnr": round(10 * math.log10(1 / mse), 2),
            "adherence_real": adherence(images, labels), "adherence_reconstructed": adherence(mean, labels),
            "adherence_sampled": adherence(sampled, labels)}


def main(argv: list[str] | None = None) -> int:
    """``python -m lindit.world.autoencoder ARGS``, kept for old scripts: runs ``lindit world autoencoder ARGS``."""
    from ..cli import forward

    return forward(["world", "autoencoder"], argv)


if __name__ == "__main__":
    raise SystemExit(main())
