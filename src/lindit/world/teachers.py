"""The built-in tiny teachers: real diffusers transformers trained on the shapes world, shipped as safetensors.

    model = load_builtin_teacher("pixart")           # a PixArtTransformer2DModel, eval mode
    pipe = builtin_pipeline("pixart")                 # the stock PixArtSigmaPipeline around it
    lindit generate --model builtin:pixart --prompt "a red circle at the top left" --out x.png

Each teacher works in the latent space of the world's autoencoder (``lindit.world.autoencoder``: 32x32
pixels <-> 8x8x4 latents, patch size 1, so 64 tokens per image), which is its pipeline's VAE, so the stock
pipelines run unchanged. Prompts go through the world's tiny text encoder (``lindit.world.text``), supplied to the pipeline as embeddings by ``pipe.lindit_encode_prompts``. The settings that trained each
teacher sit next to its weights (``teachers/NAME/train_settings.json``); ``lindit train-teacher NAME``
remakes it.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from .autoencoder import FACTOR, load_world_autoencoder

ASSETS = Path(__file__).parent / "assets" / "teachers"
SETTINGS_NAME = "train_settings.json"


@dataclass
class TeacherSettings:
    """Everything that defines a built-in teacher: architecture, objective, data and training schedule."""

    family: str  # pixart | sd3 | dit
    model_class: str
    config: dict
    scheduler: dict  # the sampling scheduler's class and config (also the training noise schedule)
    objective: str  # ddpm (learned sigma: + iDDPM's L_vlb on the variance channels) | flow
    conditioning: str  # builtin (the world's text encoder) | labels (class-conditional)
    size: int = 32  # image size in px; the transformer sees size / 4 latents of the world's autoencoder
    max_objects: int = 2
    steps: int = 5000
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 100
    ema_decay: float = 0.999
    # iDDPM's L_hybrid = L_simple + 0.001 L_vlb, where L_vlb sums the per-timestep KL over T = 1000 steps;
    # with one uniformly drawn timestep per sample that is weight 0.001 * 1000 on the per-timestep KL, as DiT.
    vlb_weight: float = 1.0
    caption_dropout: float = 0.1
    dataset_size: int = 20000
    seed: int = 0
    sample_steps: int = 20
    guidance: float = 3.0
    # Shipped in float16 (as PixArt-Sigma and SD3.5 are) to stay under 5 MB; loaded as float32. The shipped
    # float16 teachers are what the adherence test and the demo measure.
    weights_dtype: str = "float16"
    extra: dict = field(default_factory=dict)

    @property
    def latent_size(self) -> int:
        return self.size // FACTOR

    def as_dict(self) -> dict:
        return asdict(self)


# PixArt-Sigma's and DiT's DDPM schedule. v-prediction rather than their epsilon: a tiny pixel-space model
# trained for minutes on a CPU predicts epsilon too coarsely at high noise for its x0 estimates to form
# shapes (measured: 0% adherence after 3000 steps), and v is a prediction type of the same schedulers.
_DDPM = {"num_train_timesteps": 1000, "beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02,
         "prediction_type": "v_prediction"}

BUILTIN_TEACHERS: dict[str, TeacherSettings] = {
    # PixArt-Sigma in miniature: self-attention, cross-attention to the prompt, adaLN-single, learned sigma.
    "pixart": TeacherSettings(
        family="pixart", model_class="PixArtTransformer2DModel",
        config=dict(num_attention_heads=3, attention_head_dim=32, in_channels=4, out_channels=8, num_layers=6,
                    cross_attention_dim=96, caption_channels=64, sample_size=8, patch_size=1,
                    use_additional_conditions=False, norm_type="ada_norm_single", interpolation_scale=1),
        scheduler={"class": "DPMSolverMultistepScheduler", **_DDPM},
        objective="ddpm", conditioning="builtin"),
    # SD3.5-Medium in miniature: joint attention, one dual-attention block, RMS qk-norm, rectified flow.
    # pos_embed_max_size 64 lets it (and its students) run up to 256 px for the latency plot.
    "mmdit": TeacherSettings(
        family="sd3", model_class="SD3Transformer2DModel",
        config=dict(sample_size=8, patch_size=1, in_channels=4, out_channels=4, num_layers=4,
                    attention_head_dim=32, num_attention_heads=3, joint_attention_dim=64,
                    caption_projection_dim=96, pooled_projection_dim=64, pos_embed_max_size=64,
                    dual_attention_layers=[0], qk_norm="rms_norm"),
        scheduler={"class": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 1.0},
        objective="flow", conditioning="builtin"),
    # DiT in miniature: class-conditional, learned sigma. The world has 18 classes (shape x colour, ids 0-17);
    # the table has DiT's 1000 because DiTPipeline hard-codes 1000 as the null (guidance) class.
    "dit": TeacherSettings(
        family="dit", model_class="DiTTransformer2DModel",
        config=dict(num_attention_heads=4, attention_head_dim=16, in_channels=4, out_channels=8, num_layers=6,
                    sample_size=8, patch_size=1, num_embeds_ada_norm=1000),
        scheduler={"class": "DPMSolverMultistepScheduler", **_DDPM},
        objective="ddpm", conditioning="labels", max_objects=1, steps=4000),
}


def settings_of(name: str) -> TeacherSettings:
    if name not in BUILTIN_TEACHERS:
        raise ValueError(f"no built-in teacher {name!r}; choose one of {', '.join(sorted(BUILTIN_TEACHERS))}")
    return copy.deepcopy(BUILTIN_TEACHERS[name])


def teacher_dir(name: str) -> Path:
    return ASSETS / name


def model_class(settings: TeacherSettings):
    import diffusers

    return getattr(diffusers, settings.model_class)


def build_teacher(settings: TeacherSettings) -> nn.Module:
    """A freshly initialised (untrained) teacher of ``settings``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        return model_class(settings).from_config(settings.config)


def load_builtin_teacher(name: str, path: str | Path | None = None) -> nn.Module:
    """The shipped teacher ``name`` (or the one written to ``path`` by ``lindit train-teacher``), eval mode."""
    settings = settings_of(name)
    folder = Path(path) if path is not None else teacher_dir(name)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"built-in teacher {name!r} has no weights at {folder}; make them with "
                                f"`lindit train-teacher {name}`")
    model = model_class(settings).from_pretrained(str(folder), local_files_only=True, torch_dtype=torch.float32)
    return model.eval()


class BuiltinPromptEncoder:
    """Prompts -> the embedding keyword arguments of a PixArtSigmaPipeline or StableDiffusion3Pipeline call,
    through the world's text encoder (the pipelines have no text encoder of their own)."""

    def __init__(self, family: str, device: torch.device | str = "cpu", dtype: torch.dtype | None = None):
        from ..integrations.diffusers.families import FAMILIES
        from .text import TextEncoder

        self.family, self.device, self.dtype = family, device, dtype
        self.pooled = FAMILIES[family].prompt_encoding == "clip_t5"
        self.encoder = TextEncoder.builtin().to(device)

    def _encode(self, prompts: list[str]):
        embeds, mask, pooled = self.encoder.encode(prompts)  # (B, L, D), (B, L), (B, P)
        cast = (lambda t: t) if self.dtype is None else (lambda t: t.to(self.dtype))  # noqa: E731
        return cast(embeds), mask, cast(pooled)

    def __call__(self, prompts: list[str], negative_prompt: str | None = None, batch: int = 1) -> dict:
        """Keyword arguments for the pipeline call; ``batch`` images per prompt."""
        embeds, mask, pooled = self._encode(list(prompts))
        n_embeds, n_mask, n_pooled = self._encode([negative_prompt or ""] * len(prompts))
        if self.pooled:
            # StableDiffusion3Pipeline does not repeat given embeddings per image: repeat them here.
            rep = lambda t: t.repeat_interleave(batch, dim=0)  # noqa: E731
            return {"prompt_embeds": rep(embeds), "pooled_prompt_embeds": rep(pooled), "num_images_per_prompt": 1,
                    "negative_prompt_embeds": rep(n_embeds), "negative_pooled_prompt_embeds": rep(n_pooled)}
        return {"prompt_embeds": embeds, "prompt_attention_mask": mask, "negative_prompt": None,  # default is ""
                "negative_prompt_embeds": n_embeds, "negative_prompt_attention_mask": n_mask}


def scheduler_of(settings: TeacherSettings):
    import diffusers

    spec = dict(settings.scheduler)
    return getattr(diffusers, spec.pop("class"))(**spec)


def builtin_pipeline(name: str, transformer: nn.Module | None = None, device: str | torch.device = "cpu",
                     dtype: torch.dtype | None = None):
    """The stock diffusers pipeline of built-in teacher ``name`` (or of ``transformer``, e.g. its student):
    PixArtSigmaPipeline, StableDiffusion3Pipeline or DiTPipeline, with the world's autoencoder and the
    teacher's scheduler. Text pipelines carry ``lindit_encode_prompts`` (see ``BuiltinPromptEncoder``)."""
    from ..integrations.diffusers.families import FAMILIES

    settings = settings_of(name)
    transformer = load_builtin_teacher(name) if transformer is None else transformer
    if dtype is not None and dtype != transformer.dtype:
        transformer = transformer.to(dtype=dtype)
    transformer = transformer.to(device)
    parts = dict(transformer=transformer.eval(), vae=load_world_autoencoder().to(device),
                 scheduler=scheduler_of(settings))
    fam = FAMILIES[settings.family]
    cls = fam.pipeline_class()
    if fam.class_conditional:
        from .shapes import ShapesClassDataset

        pipe = cls(id2label={i: n for i, n in enumerate(ShapesClassDataset.class_names)}, **parts)
    else:  # no text encoders or tokenizers: prompts go through lindit_encode_prompts
        import inspect

        none = {k: None for k in inspect.signature(cls).parameters if k.startswith(("text_encoder", "tokenizer"))}
        pipe = cls(**none, **parts)
    if settings.conditioning == "builtin":
        pipe.lindit_encode_prompts = BuiltinPromptEncoder(settings.family, device, dtype)
    pipe.lindit_builtin = name
    return pipe
