"""The diffusers model families lindit converts, and where their attention layers sit.

* ``pixart``: ``PixArtTransformer2DModel``; self-attention ``transformer_blocks[i].attn1`` (``attn2`` is
  cross-attention to the prompt and stays), feed-forward ``ff``; used by ``PixArtSigmaPipeline``.
* ``sd3``: ``SD3Transformer2DModel``; joint attention ``transformer_blocks[i].attn``, and in SD3.5's
  dual-attention blocks an image-only self-attention ``attn2``; used by ``StableDiffusion3Pipeline``.
* ``dit``: ``DiTTransformer2DModel`` (class-conditional, learned variance); self-attention ``attn1``;
  used by ``DiTPipeline``.
"""

from __future__ import annotations

from dataclasses import dataclass

from diffusers import DiTTransformer2DModel, PixArtTransformer2DModel, SD3Transformer2DModel
from torch import nn

from ...methods import LayerSpec


@dataclass(frozen=True)
class Family:
    name: str
    model_class: type
    kind: str  # the method kind of its main attention: "self" or "joint"
    default_method: str
    attention: str  # attribute of each block that holds the main attention
    pipeline: str  # the stock diffusers pipeline class name

    def pipeline_class(self) -> type:
        """The stock diffusers pipeline class of this family (``diffusers.<pipeline>``)."""
        import diffusers

        return getattr(diffusers, self.pipeline)


FAMILIES = {
    "pixart": Family("pixart", PixArtTransformer2DModel, "self", "edit", "attn1", "PixArtSigmaPipeline"),
    "sd3": Family("sd3", SD3Transformer2DModel, "joint", "mm_edit", "attn", "StableDiffusion3Pipeline"),
    "dit": Family("dit", DiTTransformer2DModel, "self", "lit", "attn1", "DiTPipeline"),
}


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
