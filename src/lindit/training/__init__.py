"""Distillation and fine-tuning of converted models (EDiT, MM-EDiT, LiT recipes) on Hugging Face accelerate.

    from lindit.training import distill, load_config
    distill("configs/tiny-edit.yaml", "runs/tiny-edit")            # or a RunConfig / dict
    student = lindit.load("runs/tiny-edit")

The command line is ``lindit distill --config recipe.yaml --out DIR`` (and ``lindit cache``); multi-GPU and
multi-node runs go through ``accelerate launch``. See docs/TRAINING.md.
"""

from .config import RECIPES, LossWeights, RunConfig, StageConfig, dump_config, load_config, parse_config
from .loop import distill

__all__ = ["RECIPES", "LossWeights", "RunConfig", "StageConfig", "distill", "dump_config", "load_config", "parse_config"]
