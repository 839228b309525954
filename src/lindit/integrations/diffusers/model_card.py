"""The model card (README.md) a saved student carries: teacher, method, paper, training recipe, usage.

The card is written by ``save_pretrained`` / ``lindit.save`` beside the weights. A README.md that lindit did
not write (no marker line) is never replaced: it belongs to whoever wrote it.
"""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import ModelCardData

from ...io import write_text
from ...methods import REGISTRY
from .families import FAMILIES

MARKER = "<!-- written by lindit: regenerated on every save; remove this line to keep your own edits -->"
PAPERS = {
    "EDiT": "Becker et al., *EDiT: Efficient Diffusion Transformers with Linear Compressed Attention*",
    "LiT": "Wang et al., *LiT: Delving into a Simple Linear Diffusion Transformer for Image Generation*",
}


def _paper(source: str) -> str:
    names = [name for name in PAPERS if source.startswith(name)]
    return PAPERS[names[0]] if names else source


def _usage(model, plan: dict, where: str) -> str:
    fam = FAMILIES[plan["family"]]
    base = plan.get("teacher") or "path/to/the/teacher/pipeline"
    if fam.class_conditional:
        call = 'image = pipe(class_labels=[207], num_inference_steps=25).images[0]'
    else:
        call = 'image = pipe("a polar bear walking through snow", height=1024, width=1024).images[0]'
    return (
        "```python\nimport lindit  # registers the student classes with diffusers\n"
        f"from diffusers import {fam.pipeline}\n\n"
        f'transformer = lindit.load("{where}")\n'
        f'pipe = {fam.pipeline}.from_pretrained("{base}", transformer=transformer)\n{call}\n```\n\n'
        f"Or with diffusers alone: `{type(model).__name__}.from_pretrained(\"{where}\")` after `import lindit`."
    )


def card_text(model, where: str) -> str:
    """The markdown of the model card of ``model``, saved at ``where`` (a folder or hub id)."""
    plan = model.lindit_config
    method = REGISTRY[plan["method"]]
    teacher = plan.get("teacher")
    data = ModelCardData(library_name="diffusers", tags=["lindit", "linear-attention", plan["method"]],
                         base_model=teacher if teacher and "/" in teacher and not Path(teacher).exists() else None)
    layers = plan["layers"]
    depth = len(model.transformer_blocks)
    recipe = getattr(model, "lindit_recipe", None)
    lines = [
        f"---\n{data.to_yaml()}\n---", MARKER, "",
        f"# {plan['method']} student of {teacher or 'a ' + FAMILIES[plan['family']].model_class.__name__}", "",
        f"A linear-time {type(model).__name__} converted with lindit: "
        f"**{plan['method']}** ({method.source}: {method.summary}).", "",
        f"- Paper: {_paper(method.source)}.",
        f"- Converted blocks: {len(layers)} of {depth}" + ("" if len(layers) == depth else f" ({layers})") + ".",
        f"- Inherited teacher projections: {plan['inherit'] or 'none'}; options: "
        f"{json.dumps(plan['options']) if plan['options'] else 'the paper defaults'}.",
        "", "## Training", "",
        _recipe_text(recipe), "", "## Usage", "", _usage(model, plan, where), "",
    ]
    return "\n".join(lines)


def _recipe_text(recipe: dict | None) -> str:
    if not recipe:
        return "Not recorded: this model was saved right after conversion, or trained outside `lindit distill`."
    return "Distilled with `lindit distill`:\n\n```json\n" + json.dumps(_set_values(recipe), indent=2) + "\n```"


def _set_values(value):
    """The recipe without its unset (None) entries, which only make the card longer."""
    if isinstance(value, dict):
        return {k: _set_values(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_set_values(v) for v in value]
    return value


def is_lindit_card(path: Path) -> bool:
    """True when ``path`` is free for a model card: absent, or a card lindit wrote."""
    return not path.exists() or MARKER in path.read_text(errors="replace")


def write_model_card(model, folder: Path, where: str | None = None) -> None:
    """Write README.md into ``folder`` unless a README.md that lindit did not write is there."""
    if is_lindit_card(folder / "README.md"):
        write_text(folder / "README.md", card_text(model, where or str(folder)))
