"""The built-in shapes world: a procedural text-to-image world to train and evaluate diffusion models on.

* ``shapes``: datasets of coloured shapes at positions with captions (text-to-image and class-conditional)
  and held-out evaluation prompts; ``grammar`` holds the vocabulary, ``draw`` the anti-aliased renderer.
* ``text``: a word-level tokenizer and a tiny frozen text encoder shipped as safetensors.
* ``detect``: prompt adherence from pixels, in the spirit of GenEval.
* ``features`` / ``fid``: a small shipped classifier of the world and FID on its features.

Its command-line tools are ``lindit world ...`` (``lindit world --help``). See docs/WORLD.md.
"""

from __future__ import annotations

import importlib

# Public name -> submodule. Imported on first use, so that `python -m lindit.world.<module>` (kept for old
# scripts; `lindit world ...` is the command) does not run a module that importing the package already loaded.
_EXPORTS = {
    **dict.fromkeys(["adherence", "classify_pixels", "detect", "matches"], "detect"),
    **dict.fromkeys(["WorldClassifier", "train_classifier"], "features"),
    **dict.fromkeys(["WorldFeatures", "fid_metric", "frechet_distance"], "fid"),
    **dict.fromkeys(["COLOURS", "POSITIONS", "SHAPES", "WorldObject"], "grammar"),
    **dict.fromkeys(["caption", "parse_caption", "vocabulary"], "grammar"),
    **dict.fromkeys(["ShapesClassDataset", "ShapesDataset", "collate", "evaluation_prompts"], "shapes"),
    **dict.fromkeys(["render_scene", "sample_scene"], "shapes"),
    **dict.fromkeys(["TextEncoder", "Tokenizer", "build_text_encoder"], "text"),
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
