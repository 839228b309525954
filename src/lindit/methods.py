"""The registry of attention methods: name -> how to build it for one teacher layer, and where it comes from.

Every method of the two papers and of their baselines is one entry. ``kind`` says which teacher layer it
replaces: ``self`` (image self-attention: PixArt's ``attn1``, DiT's ``attn1``, SD3.5's ``attn2``) or
``joint`` (MM-DiT joint attention: SD3's ``attn``). A joint method names the self method that replaces the
image-only ``attn2`` of SD3.5's dual-attention blocks. The CLI's choices and ``lindit.methods()`` come
from here, and the tests run every entry.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable

from torch import nn

from .functional import DEFAULT_NORMALISER, NORMALISERS, normaliser
from .modules import JointAttention, LinearAttention, SoftmaxAttention, TokenMapOptions


@dataclass(frozen=True)
class LayerSpec:
    """What a replacement must match in the teacher's attention layer."""

    dim: int  # width of the tokens entering the layer
    heads: int  # the teacher's heads
    inner_dim: int  # heads * head_dim
    out_dim: int
    qk_norm: str | None = None  # "rms_norm" for SD3.5
    bias: bool = True
    context_dim: int | None = None  # joint layers: width of prompt tokens
    context_pre_only: bool = False  # joint layers: SD3's last block produces no prompt output


@dataclass(frozen=True)
class Method:
    name: str
    kind: str  # "self" or "joint"
    source: str  # paper and table
    summary: str
    build: Callable[..., nn.Module] = field(repr=False)
    self_method: str | None = None  # joint methods: what replaces SD3.5's image-only attn2
    feed_forward: str | None = None  # "mixffn": the method also replaces the block's feed-forward
    options: tuple[str, ...] = ()  # options the method accepts (besides token-map options)


def _token_options(opts: dict[str, Any]) -> TokenMapOptions:
    names = {f.name for f in fields(TokenMapOptions)}
    return replace(TokenMapOptions(), **{k: v for k, v in opts.items() if k in names})


def _eps(opts: dict[str, Any]):
    """The normaliser convention option (``eps``: sana, lit, linfusion, lindit or a float), checked here."""
    eps = opts.get("eps", DEFAULT_NORMALISER)
    normaliser(eps)
    return eps


def _linear_self(query, key, value, phi="relu", value_conv=None, heads=None):
    def build(spec: LayerSpec, **opts) -> nn.Module:
        return LinearAttention(
            spec.dim,
            opts.get("heads", heads or spec.heads),
            query=query,
            key=key,
            value=value,
            phi=phi,
            value_conv=opts.get("value_conv", value_conv),
            value_conv_shared=opts.get("value_conv_shared", False),
            qk_norm=spec.qk_norm,
            inner_dim=spec.inner_dim,
            out_dim=spec.out_dim,
            bias=spec.bias,
            eps=_eps(opts),
            options=_token_options(opts),
        )

    return build


def _kv_compress(spec: LayerSpec, **opts) -> nn.Module:
    return SoftmaxAttention(
        spec.dim,
        spec.heads,
        inner_dim=spec.inner_dim,
        out_dim=spec.out_dim,
        kv_compress=opts.get("factor", 2),
        qk_norm=spec.qk_norm,
        bias=spec.bias,
    )


def _joint(mode, query="convfusion", key="compressor", value="compressor", prompt_qk="linear", prompt_phi="relu", eta="approx"):
    def build(spec: LayerSpec, **opts) -> nn.Module:
        return JointAttention(
            spec.dim,
            spec.heads,
            mode=mode,
            query=query,
            key=key,
            value=value,
            prompt_query=prompt_qk,
            prompt_key=prompt_qk,
            prompt_phi=prompt_phi,
            eta=opts.get("eta", eta),
            softmax_qk=opts.get("softmax_qk", "phi"),
            qk_norm=spec.qk_norm,
            context_dim=spec.context_dim,
            inner_dim=spec.inner_dim,
            out_dim=spec.out_dim,
            context_pre_only=spec.context_pre_only,
            bias=spec.bias,
            eps=_eps(opts),
            options=_token_options(opts),
        )

    return build


_CF = ("cf_reduction", "cf_groups", "cf_negative_slope")
_SC = ("sc_kernel", "sc_stride")
_EPS = ("eps",)  # the normaliser convention, an option of every linear method
_FFN = ("mlp_ratio", "mlp_out_bias")  # Mix-FFN: hidden width, bias of its last 1x1 conv (SANA: none)

REGISTRY: dict[str, Method] = {
    m.name: m
    for m in [
        Method("edit", "self", "EDiT Sec. 3.1, Table 1", "linear compressed attention: ConvFusion Q, Spatial Compressor K/V",
               _linear_self("convfusion", "compressor", "compressor"), options=_CF + _SC + _EPS),
        Method("edit_cf_qk", "self", "EDiT Table 1 (ablation)", "ConvFusion on Q and K, linear V, no compression",
               _linear_self("convfusion", "convfusion", "linear"), options=_CF + _EPS),
        Method("edit_sc_only", "self", "EDiT Table 1 (ablation)", "linear Q, Spatial Compressor K/V",
               _linear_self("linear", "compressor", "compressor"), options=_SC + _EPS),
        Method("edit_cf_q", "self", "EDiT Table 1 (ablation)", "ConvFusion on Q only, K/V uncompressed",
               _linear_self("convfusion", "linear", "linear"), options=_CF + _EPS),
        Method("lit", "self", "LiT Sec. 3 (Guidelines 1-2), Tables 1-2", "ReLU linear attention, 2 heads, 5x5 depthwise conv on V",
               _linear_self("linear", "linear", "linear", value_conv=5, heads=2),
               options=("heads", "value_conv", "value_conv_shared", *_EPS)),
        Method("sana", "self", "EDiT Table 1 (SANA-DiT baseline)", "ReLU linear attention with Mix-FFN in place of the feed-forward",
               _linear_self("linear", "linear", "linear"), feed_forward="mixffn", options=_FFN + _EPS),
        Method("linfusion", "self", "EDiT Table 1 (LinFusion-DiT baseline)", "LinFusion's 1+ELU(Linear(x + MLP(x))) features",
               _linear_self("linfusion", "linfusion", "linear", phi="elu1"), options=("lf_mid_dim", *_EPS)),
        Method("kv_compress", "self", "EDiT Table 1 (KV Comp.), PixArt-Sigma", "softmax attention with KV token compression",
               _kv_compress, options=("factor", "layers")),
        Method("mm_edit", "joint", "EDiT Sec. 3.2, Table 2", "hybrid attention, eta approximated by token counts",
               _joint("hybrid"), self_method="edit", options=("eta", "softmax_qk") + _CF + _SC + _EPS),
        Method("mm_edit_exact", "joint", "EDiT Table 2 (MM-EDiT with eta^Lin)", "hybrid attention with the exact eta^Lin",
               _joint("hybrid", eta="exact"), self_method="edit", options=("softmax_qk",) + _CF + _SC + _EPS),
        Method("mm_edit_plain", "joint", "EDiT Table 2 (no phi_CF, phi_SC)", "hybrid attention with plain linear maps",
               _joint("hybrid", "linear", "linear", "linear"), self_method="sana", options=("eta", "softmax_qk", *_EPS)),
        Method("linear_mmdit_alpha", "joint", "EDiT Table 2 (Linear MM-DiT-alpha)", "linear attention for all pairs, CF/SC image maps",
               _joint("linear"), self_method="edit", options=_CF + _SC + _EPS),
        Method("linear_mmdit_beta", "joint", "EDiT Table 2 (Linear MM-DiT-beta)", "alpha with LinFusion features for prompt tokens",
               _joint("linear", prompt_qk="linfusion", prompt_phi="elu1"), self_method="edit", options=_CF + _SC + ("lf_mid_dim",) + _EPS),
        Method("sana_mmdit", "joint", "EDiT Table 2 (SANA-MM-DiT)", "ReLU linear attention everywhere, Mix-FFN feed-forwards",
               _joint("linear", "linear", "linear", "linear"), self_method="sana", feed_forward="mixffn", options=_FFN + _EPS),
    ]
}


def get_method(name: str, kind: str | None = None) -> Method:
    """The registry entry for ``name``; ValueError naming the valid methods (of ``kind``) otherwise."""
    valid = sorted(n for n, m in REGISTRY.items() if kind is None or m.kind == kind)
    if name not in valid:
        raise ValueError(f"unknown method {name!r}; valid methods here: {', '.join(valid)}")
    return REGISTRY[name]


def methods(kind: str | None = None) -> dict[str, str]:
    """Every method name -> 'source: summary' (of one kind, if given)."""
    return {n: f"{m.source}: {m.summary}" for n, m in REGISTRY.items() if kind is None or m.kind == kind}


def _is_int(v, lo: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _is_number(v, lo: float, hi: float = math.inf, open_lo: bool = False) -> bool:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    return ok and (v > lo if open_lo else v >= lo) and v <= hi


# option -> (check, what is valid). Each method accepts the options of its Method.options (and layers, inherit).
OPTION_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "heads": (lambda v: _is_int(v, 1), "a positive integer"),
    "value_conv": (lambda v: v is None or (_is_int(v, 1) and v % 2 == 1), "an odd kernel size (3, 5, ...) or null"),
    "mlp_ratio": (lambda v: _is_number(v, 0, open_lo=True), "a positive number"),
    "lf_mid_dim": (lambda v: v is None or _is_int(v, 1), "a positive integer or null"),
    "factor": (lambda v: _is_int(v, 2), "an integer >= 2 (the KV token grid shrinks by factor^2)"),
    "eta": (lambda v: v in ("approx", "exact", "learned", "moments") or _is_number(v, 0, 1),
            "approx, exact, learned, moments or a number in [0, 1]"),
    "softmax_qk": (lambda v: v in ("phi", "raw"), "phi or raw"),
    "cf_reduction": (lambda v: _is_int(v, 1), "a positive integer"),
    "cf_groups": (lambda v: _is_int(v, 1), "a positive integer"),
    "cf_negative_slope": (lambda v: _is_number(v, 0), "a number >= 0"),
    "sc_kernel": (lambda v: _is_int(v, 1), "a positive integer"),
    "sc_stride": (lambda v: _is_int(v, 1), "a positive integer"),
    "value_conv_shared": (lambda v: isinstance(v, bool), "true or false"),
    "mlp_out_bias": (lambda v: isinstance(v, bool), "true or false"),
    "layers": (lambda v: isinstance(v, list) and bool(v) and all(_is_int(i, 0) for i in v), "a list of block indices >= 0"),
    "inherit": (lambda v: isinstance(v, (str, list)), "letters of qkvo, 'all' or 'none'"),
    "eps": (lambda v: (isinstance(v, str) and v in NORMALISERS) or _is_number(v, 0),
            ", ".join(NORMALISERS) + " (a normaliser convention) or a number >= 0 (added to the sum over keys)"),
    "keep_softmax": (lambda v: isinstance(v, list) and all(_is_int(i, -math.inf) for i in v),
                     "a list of block indices (negative ones count from the end)"),
}


def check_options(method: str, options: dict) -> None:
    """Refuse lindit.convert options that ``method`` does not take or whose values cannot work, naming the
    bad value and what is valid (before any model is loaded). Block indices are checked against the model
    by convert itself."""
    entry = get_method(method)
    accepted = set(entry.options) | {"layers", "inherit", "keep_softmax"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for method {method!r}; valid: {', '.join(sorted(accepted))}")
    for key, value in options.items():
        ok, valid = OPTION_RULES[key]
        if not ok(value):
            raise ValueError(f"option {key}={value!r} of method {method!r}: must be {valid}")


def parse_options(pairs: list[str]) -> dict:
    """KEY=VALUE strings -> dict, values read as JSON where possible (2 -> int, 0.5 -> float)."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"an option must be KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def method_variant(spec: str) -> tuple[str, dict]:
    """'edit' -> ('edit', {}); 'edit:cf_reduction=8,sc_kernel=5' -> ('edit', {'cf_reduction': 8, 'sc_kernel': 5}):
    a method with lindit.convert options, so that variants run as their own rows (bench, demo). Commas inside
    brackets belong to a JSON list: 'mm_edit:layers=[0,1,2]'."""
    name, _, opts = spec.partition(":")
    return name, parse_options(re.split(r",(?![^\[]*\])", opts)) if opts else {}
