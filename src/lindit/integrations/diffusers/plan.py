"""The conversion plan: which method, which blocks, which inherited projections and options, checked.

A ``Plan`` is what a student's config records (``lindit_conversion``), so ``make_plan`` runs at conversion
and again when a student class is built from its config; ``convert.build_structure`` turns it into modules.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ...functional import DEFAULT_NORMALISER
from ...methods import REGISTRY, check_options, get_method
from .families import Family

# 1: lindit.json + lindit_model.safetensors with adapters (.inner); 2: diffusers classes; 3: every linear
# method's normaliser convention recorded (``eps``; before, the unnamed convention was lindit's own).
FORMAT_VERSION = 3
COMMON_OPTIONS = ("layers", "inherit", "keep_softmax")


@dataclass
class Plan:
    """What a conversion did: enough to rebuild the module tree, recorded in the student's config."""

    family: str
    method: str
    layers: list[int]
    inherit: str = ""
    options: dict = field(default_factory=dict)
    teacher: str | None = None  # the teacher's hub id or folder, when it was loaded from one
    format_version: int = FORMAT_VERSION

    def as_dict(self) -> dict:
        return asdict(self)


def make_plan(fam: Family, depth: int, method_name: str, options: dict, teacher: str | None = None) -> Plan:
    """Check a method and its options for a model of family ``fam`` with ``depth`` blocks; the Plan."""
    try:
        method = get_method(method_name, kind=fam.kind)
    except ValueError:
        valid = ", ".join(n for n, m in REGISTRY.items() if m.kind == fam.kind)
        raise ValueError(
            f"method {method_name!r} does not fit {fam.model_class.__name__}; valid methods: {valid}"
        ) from None
    opts = {k: v for k, v in options.items() if v is not None or k not in COMMON_OPTIONS}
    check_options(method.name, opts)  # names and values; block indices are checked below, against the model
    layers = _layers(opts.pop("layers", None), depth, method_name)
    keep = _blocks(opts.pop("keep_softmax", None) or [], depth, "keep_softmax")
    layers = [i for i in layers if i not in keep]
    if not layers:
        raise ValueError(f"keep_softmax={sorted(keep)} leaves no block to convert")
    inherit = _inherit(opts.pop("inherit", "qkvo" if method_name == "kv_compress" else ""))
    if "eps" in method.options:  # named, so that a later default cannot change a saved model's outputs
        opts.setdefault("eps", DEFAULT_NORMALISER)
    return Plan(fam.name, method_name, layers, inherit, opts, teacher=teacher)


def _layers(layers, depth: int, method_name: str) -> list[int]:
    if layers is None:  # PixArt-Sigma's 1024px kv-compress config: layers 14-27 of 28, i.e. the second half
        return list(range(depth // 2, depth)) if method_name == "kv_compress" else list(range(depth))
    if isinstance(layers, (str, bytes)) or not all(isinstance(i, int) for i in _iterable(layers)):
        raise ValueError(f"layers must be a list of block indices, got {layers!r}")
    layers = sorted(set(layers))
    bad = [i for i in layers if not 0 <= i < depth]
    if bad or not layers:
        raise ValueError(f"layers {bad or layers} out of range; the model has blocks 0-{depth - 1}")
    return layers


def _blocks(indices, depth: int, name: str) -> set[int]:
    """Block indices, negative ones counted from the end (-1: the last block)."""
    bad = [i for i in indices if not -depth <= i < depth]
    if bad:
        raise ValueError(f"{name} {bad} out of range; the model has blocks 0-{depth - 1} (or -{depth} to -1)")
    return {i % depth for i in indices}


def _iterable(value) -> list:
    try:
        return list(value)
    except TypeError:
        return [value, None]  # not a sequence: fails the check


def _inherit(inherit) -> str:
    """Normalise "qv", ["q", "v"], "all" or "none" to a string in q, k, v, o order."""
    if inherit in (None, "none"):
        return ""
    if inherit == "all":
        return "qkvo"
    letters = set("".join(inherit)) if isinstance(inherit, (str, list, tuple)) else {"?"}
    if not letters <= set("qkvo"):
        raise ValueError(f"inherit must use the letters q, k, v, o (or 'all' / 'none'), got {inherit!r}")
    return "".join(c for c in "qkvo" if c in letters)
