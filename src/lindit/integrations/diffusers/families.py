"""The diffusers model families lindit converts, and where their attention layers sit.

* ``pixart``: ``PixArtTransformer2DModel``; self-attention ``transformer_blocks[i].attn1`` (``attn2`` is
  cross-attention to the prompt and stays), feed-forward ``ff``; used by ``PixArtSigmaPipeline``.
* ``sd3``: ``SD3Transformer2DModel``; joint attention ``transformer_blocks[i].attn``, and in SD3.5's
  dual-attention blocks an image-only self-attention ``attn2``; used by ``StableDiffusion3Pipeline``.
* ``dit``: ``DiTTransformer2DModel`` (class-conditional, learned variance); self-attention ``attn1``;
  used by ``DiTPipeline``.

A ``Family`` is everything lindit knows of one family: convert (classes, attention slots), generate and
low-memory generation (pipeline, prompt encoding, size rules), the trainer (conditioning, objective,
micro-conditions), export and latency measurement (``example_inputs``, published prompt lengths, VAE factor).
Code elsewhere reads these fields instead of testing ``family == "sd3"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers import DiTTransformer2DModel, PixArtTransformer2DModel, SD3Transformer2DModel
from torch import nn

from ...methods import LayerSpec


# Prompt encodings: what a family's pipeline encodes a prompt into and the transformer reads.
#   "t5":      T5 embeddings and their attention mask (PixArt-Sigma):
#              encoder_hidden_states (B, L, C_text), encoder_attention_mask (B, L)
#   "clip_t5": CLIP + T5 embeddings and a pooled CLIP vector (SD3): encoder_hidden_states, pooled_projections (B, P)
#   "labels":  class ids, nothing to encode (DiT): class_labels (B,)
PROMPT_ENCODINGS = ("t5", "clip_t5", "labels")


@dataclass(frozen=True)
class Family:
    name: str
    model_class: type
    kind: str  # the method kind of its main attention: "self" or "joint"
    default_method: str
    attention: str  # attribute of each block that holds the main attention
    pipeline: str  # the stock diffusers pipeline class name
    prompt_encoding: str  # one of PROMPT_ENCODINGS
    prompt_tokens: int  # prompt length of the published pipelines (T5 300; CLIP 77 + T5 256; none)
    timesteps: str  # "discrete" (DDPM ids 0..999) or "continuous" (flow matching: fractional, in [0, 1000))
    objective: str | None = None  # the training objective the family fixes (SD3: "flow"); None: its scheduler's
    # keyword arguments of every forward that are not tensors (PixArt's micro-conditions, off unless the model
    # uses_additional_conditions; the trainer fills them in then)
    static_kwargs: dict = field(default_factory=dict)
    micro_conditions: bool = False  # PixArt's resolution / aspect-ratio conditions (use_additional_conditions)
    square_only: bool = False  # the transformer and pipeline take square latents only (DiT)
    size_multiple: int = 1  # px multiple the pipeline itself asks for (PixArtSigmaPipeline.check_inputs: 8)
    pipeline_kwargs: dict = field(default_factory=dict)  # of every pipeline call (PixArt: the user's size, not
    # the nearest training bucket)
    vae_factor: int = 8  # px per latent pixel of the published pipelines' VAE
    teacher_attention: str = "softmax"  # lindit.bench.attention name of its unconverted attention

    @property
    def class_conditional(self) -> bool:
        return self.prompt_encoding == "labels"

    def pipeline_class(self) -> type:
        """The stock diffusers pipeline class of this family (``diffusers.<pipeline>``)."""
        import diffusers

        return getattr(diffusers, self.pipeline)

    def text_conditions(self, embeds: torch.Tensor, mask: torch.Tensor | None,
                        pooled: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """The transformer's prompt keyword arguments from encoded prompts (B, L, D), (B, L), (B, P)."""
        if self.prompt_encoding == "clip_t5":
            return {"encoder_hidden_states": embeds, "pooled_projections": pooled}
        if self.prompt_encoding == "t5":
            return {"encoder_hidden_states": embeds, "encoder_attention_mask": mask}
        raise ValueError(f"{self.name} models are class-conditional: they take class labels, not prompts")

    def trained_size(self, config, vae_factor: int | None = None) -> int:
        """The pixel size a transformer of ``config`` was trained at: its latent sample size times the VAE
        factor (``vae_factor`` of its pipeline's VAE; default the published one's)."""
        return int(config["sample_size"]) * (self.vae_factor if vae_factor is None else int(vae_factor))

    def example_inputs(self, config, latent_hw: tuple[int, int], batch: int = 1, prompt_tokens: int | None = None,
                       *, generator: torch.Generator | None = None, dtype: torch.dtype | None = None,
                       device=None, timestep: float | None = None, class_label: int | None = None,
                       conditions: dict | None = None) -> dict[str, torch.Tensor]:
        """Random tensor inputs of one forward of a model with ``config`` (its ``.config`` or a dict) at a
        latent of (H, W) = ``latent_hw``, drawn from ``generator`` in the order latent, prompt embeddings,
        pooled vector, timestep, class label. ``timestep`` / ``class_label`` fix those instead of drawing them;
        ``conditions`` (e.g. real encoded prompts) replaces the random conditioning. Floating tensors are cast
        to ``dtype``; all go to ``device``. The non-tensor keywords are ``static_kwargs``."""
        g = torch.Generator().manual_seed(0) if generator is None else generator
        h, w = latent_hw
        tokens = self.prompt_tokens if prompt_tokens is None else prompt_tokens
        out = {"hidden_states": torch.randn(batch, config["in_channels"], h, w, generator=g)}  # (B, C, H, W)
        if conditions is None and self.prompt_encoding == "t5":
            out["encoder_hidden_states"] = torch.randn(batch, tokens, config["caption_channels"], generator=g)
        elif conditions is None and self.prompt_encoding == "clip_t5":
            out["encoder_hidden_states"] = torch.randn(batch, tokens, config["joint_attention_dim"], generator=g)
            out["pooled_projections"] = torch.randn(batch, config["pooled_projection_dim"], generator=g)
        if timestep is not None:
            out["timestep"] = torch.full((batch,), timestep)
        elif self.timesteps == "continuous":
            out["timestep"] = torch.rand(batch, generator=g) * 1000
        else:
            out["timestep"] = torch.randint(0, 1000, (batch,), generator=g)
        if conditions is None and self.class_conditional:
            out["class_labels"] = (torch.full((batch,), class_label) if class_label is not None else
                                   torch.randint(0, config["num_embeds_ada_norm"], (batch,), generator=g))
        out.update(conditions or {})
        return {k: v.to(device=device, dtype=dtype if dtype is not None and v.is_floating_point() else v.dtype)
                for k, v in out.items()}


_PIXART_STATIC = {"added_cond_kwargs": {"resolution": None, "aspect_ratio": None}}

FAMILIES = {
    "pixart": Family("pixart", PixArtTransformer2DModel, "self", "edit", "attn1", "PixArtSigmaPipeline",
                     prompt_encoding="t5", prompt_tokens=300, timesteps="discrete", static_kwargs=_PIXART_STATIC,
                     micro_conditions=True, size_multiple=8, pipeline_kwargs={"use_resolution_binning": False}),
    "sd3": Family("sd3", SD3Transformer2DModel, "joint", "mm_edit", "attn", "StableDiffusion3Pipeline",
                  prompt_encoding="clip_t5", prompt_tokens=333, timesteps="continuous", objective="flow",
                  teacher_attention="joint_softmax"),
    "dit": Family("dit", DiTTransformer2DModel, "self", "lit", "attn1", "DiTPipeline",
                  prompt_encoding="labels", prompt_tokens=0, timesteps="discrete", square_only=True),
}
# Earlier names of a family, accepted with a warning (the demo called SD3 "mmdit", its built-in teacher's name).
FAMILY_ALIASES = {"mmdit": "sd3"}


def family_named(name: str) -> Family:
    """The family ``name`` (or a deprecated alias of one, with a warning); ValueError naming the families."""
    if name in FAMILY_ALIASES:
        import warnings

        warnings.warn(f"family {name!r} is now called {FAMILY_ALIASES[name]!r}", DeprecationWarning, stacklevel=2)
        name = FAMILY_ALIASES[name]
    if name not in FAMILIES:
        raise ValueError(f"unknown family {name!r}; choose from {', '.join(FAMILIES)}")
    return FAMILIES[name]


def vae_factor_of(vae_config) -> int:
    """px per latent pixel of a diffusers VAE with ``vae_config`` (its ``.config`` or config.json's dict)."""
    return 2 ** (len(vae_config["block_out_channels"]) - 1)


def family_of(model: nn.Module) -> Family:
    """The family of a diffusers transformer; ValueError naming the supported classes otherwise."""
    for fam in FAMILIES.values():
        if isinstance(model, fam.model_class):
            return fam
    supported = ", ".join(f.model_class.__name__ for f in FAMILIES.values())
    raise ValueError(f"cannot convert a {type(model).__name__}; supported model classes: {supported}")


def family_by_class_name(name: str) -> Family:
    """The family whose transformer class is called ``name``; ValueError naming the supported classes."""
    for fam in FAMILIES.values():
        if fam.model_class.__name__ == name:
            return fam
    supported = ", ".join(f.model_class.__name__ for f in FAMILIES.values())
    raise ValueError(f"unsupported model class {name!r}; supported: {supported}")


def _qk_norm_kind(norm: nn.Module | None) -> str | None:
    if norm is None:
        return None
    kinds = {"RMSNorm": "rms_norm", "LayerNorm": "layer_norm"}
    if type(norm).__name__ not in kinds:
        raise ValueError(f"unsupported qk norm {type(norm).__name__}; supported: {', '.join(kinds)}")
    return kinds[type(norm).__name__]


def layer_spec(attn: nn.Module) -> LayerSpec:
    """Read what a replacement must match from a diffusers ``Attention`` layer."""
    add_k = getattr(attn, "add_k_proj", None)
    return LayerSpec(
        dim=attn.to_q.in_features,
        heads=attn.heads,
        inner_dim=attn.to_q.out_features,
        out_dim=attn.to_out[0].out_features,
        qk_norm=_qk_norm_kind(getattr(attn, "norm_q", None)),
        bias=attn.to_q.bias is not None,
        context_dim=None if add_k is None else add_k.in_features,
        context_pre_only=bool(getattr(attn, "context_pre_only", False)),
    )


def patch_size(model: nn.Module) -> int:
    return int(model.config.patch_size)
