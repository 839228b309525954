"""Folders written by lindit 0.1 (format 1): ``config.json`` (the teacher class's config), ``lindit.json``
(the plan) and ``lindit_model.safetensors``, with each lindit layer inside an adapter (``attn1.inner.*``)
and each projection inside its token map (``to_q.proj``). ``load_format1`` maps those names to today's
(``attn1.to_q``, ``attn1.conv_fusion_q.*``, ``attn1.to_out.0``) and loads strictly; ``lindit.save`` of the
result writes today's format.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from accelerate import init_empty_weights
from torch import nn

from .families import FAMILIES

LEGACY_PLAN = "lindit.json"
LEGACY_WEIGHTS = "lindit_model.safetensors"

# (pattern on a format-1 tensor or module name, replacement); the first match wins. {role}: q, k, v or
# added_q, added_k, ...; a tensor's remaining path ({rest}: weight, bias, ...) is kept.
_MAP = r"(?P<pre>.*)\.inner\.(?P<map>to_(?P<r>[qkv])|add_(?P<a>[qkv])_proj)\."
_REST = r"(?:\.(?P<rest>.*))?"
RENAMES = [
    (_MAP + "proj" + _REST, "{pre}.{map}"),
    (_MAP + "(?P<part>conv3x3|norm|conv1x1)" + _REST, "{pre}.conv_fusion_{role}.{part}"),
    (_MAP + "conv" + _REST, "{pre}.spatial_compressor_{role}.conv"),
    (_MAP + r"mlp\.(?P<part>\d+)" + _REST, "{pre}.linfusion_{role}.mlp.{part}"),
    (r"(?P<pre>.*)\.inner\.to_out" + _REST, "{pre}.to_out.0"),
    (r"(?P<pre>.*)\.inner\.(?P<part>[^.]+)" + _REST, "{pre}.{part}"),
]


def rename_format1(name: str) -> str:
    """A format-1 tensor or module name -> today's name (names outside lindit layers are unchanged)."""
    for pattern, template in RENAMES:
        m = re.fullmatch(pattern, name)
        if m:
            groups = {k: v for k, v in m.groupdict().items() if v is not None}
            role = groups.get("r") or f"added_{groups.get('a')}"
            return template.format(role=role, **groups) + (f".{groups['rest']}" if "rest" in groups else "")
    return name


def upgrade_format2_options(method: str, options: dict) -> dict:
    """Format 2 (and 1) left a linear method's normaliser unnamed: it was lindit's own (``eps="lindit"``)
    until LinFusion's became the default, so old folders keep their outputs."""
    from ...methods import get_method

    if "eps" in get_method(method).options and "eps" not in options:
        return {**options, "eps": "lindit"}
    return options


def load_format1(folder: Path, device, dtype) -> nn.Module:
    """Load a lindit 0.1 folder as today's student class."""
    from .persistence import load_state_strictly, read_weights
    from .students import STUDENT_CLASSES

    plan = _read_json(folder / LEGACY_PLAN)
    config = _read_json(folder / "config.json")
    if not isinstance(plan, dict) or plan.get("family") not in STUDENT_CLASSES:
        raise ValueError(f"{folder / LEGACY_PLAN} is not a lindit plan: it needs a family among "
                         f"{sorted(STUDENT_CLASSES)}")
    quantization = plan.pop("quantization", None)
    plan["format_version"] = 2  # the same options as format 2 (upgrade_format2_options)
    cls = STUDENT_CLASSES[plan["family"]]
    if config.get("_class_name") != FAMILIES[plan["family"]].model_class.__name__:
        raise ValueError(f"{folder}: config class {config.get('_class_name')} does not match plan family {plan['family']}")
    with init_empty_weights(include_buffers=False):  # parameters on meta; computed buffers stay real
        model = cls.from_config({**config, "lindit_conversion": plan})
    state = {rename_format1(k): v for k, v in read_weights(folder / LEGACY_WEIGHTS).items()}
    if quantization:
        from ...deploy.quantize import restore_quantized

        quantization = {**quantization, "layers": [rename_format1(n) for n in quantization["layers"]]}
        state = restore_quantized(model, quantization, state)
    model = load_state_strictly(model, state, folder / LEGACY_WEIGHTS)
    model = model.to(device=device) if dtype is None else model.to(device=device, dtype=dtype)
    return model.eval()


def _read_json(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"{path.parent} is not a lindit model folder: {path.name} is missing")
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from None
