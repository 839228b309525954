"""What a run is made of, built from its config: teachers per stage, the student, the noise objective,
encoders and the data of each stage. The loop (``loop.py``) only consumes these."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..dtypes import MIXED_PRECISION
from ..integrations.diffusers.families import FAMILIES, family_of
from .cache import CachedDataset, cache_dir, check_cache
from .config import RunConfig, StageConfig
from .data import RawDataset, make_buckets, open_source
from .encoders import build_encoders, conditioning_kind
from .losses import make_objective
from .student import adopt_teacher_config, build_student, disable_label_dropout, load_teacher_source

class Teachers:
    """The teacher of each stage, loaded when first needed: ``same`` keeps the previous stage's teacher.

    Key -1 is the run's teacher (``model.teacher`` or the base pipeline's transformer); key i >= 0 is the
    teacher named by stage i. Only one teacher is held at a time.
    """

    def __init__(self, cfg: RunConfig, device: torch.device, dtype: torch.dtype):
        self.cfg, self.device, self.dtype = cfg, device, dtype
        self.key: int | None = None
        self.model: nn.Module | None = None

    def key_of(self, stage: int) -> int:
        """The stage whose teacher ``stage`` uses (-1: the run's teacher)."""
        while stage >= 0 and self.cfg.stages[stage].teacher.same:
            stage -= 1
        return stage

    def release(self) -> None:
        self.model, self.key = None, None

    def load(self, key: int, to_device: bool = True) -> nn.Module:
        if key != self.key:
            self.model = None  # free the previous teacher first
            source = self.cfg.model.teacher if key < 0 else self.cfg.stages[key].teacher
            self.model, self.key = load_teacher_source(source, self.cfg.model.base), key
            disable_label_dropout(self.model)
        weight = next(self.model.parameters())
        if to_device and (weight.device != self.device or weight.dtype != self.dtype):
            self.model.to(self.device, self.dtype)
        return self.model


@dataclass
class Components:
    cfg: RunConfig
    teachers: Teachers
    student: nn.Module  # float32, unwrapped
    family: str
    objective: object
    encoders: object | None  # None when training reads a cache
    vae_scale: int  # pixels per latent pixel (PixArt's resolution conditioning)
    _source: object = field(default=None, repr=False)

    @property
    def in_channels(self) -> int:
        return int(self.student.config.in_channels)

    @property
    def num_classes(self) -> int | None:
        return getattr(self.student.config, "num_embeds_ada_norm", None)


def build_components(cfg: RunConfig, device: torch.device) -> Components:
    """Teachers, the student (converted from the run's teacher, or loaded), objective and encoders."""
    dtype = MIXED_PRECISION[cfg.training.mixed_precision]
    teachers = Teachers(cfg, device, dtype)
    first_teacher = None if cfg.model.student is not None else teachers.load(-1, to_device=False)
    student = build_student(cfg.model, first_teacher)
    disable_label_dropout(student)
    family = family_of(student).name
    objective = make_objective(objective_kind(cfg, family), scheduler_config(cfg), cfg.noise)
    cached = cfg.data.source.kind() == "cache"
    num_classes = getattr(student.config, "num_embeds_ada_norm", None)
    encoders = None if cached else build_encoders(cfg.model, family, num_classes, device, dtype)
    vae_scale = getattr(encoders.images, "scale_factor", 1) if encoders is not None else 1
    return Components(cfg, teachers, student, family, objective, encoders, vae_scale)


def check_sources(cfg: RunConfig) -> None:
    """Every path the run will read, checked before anything is loaded: a wrong path fails at once, not after
    the teacher has loaded. (Hub ids are checked when fetched, by ``lindit.hub``.)"""
    from pathlib import Path

    from ..hub import is_hub_id
    from ..integrations.diffusers import is_lindit_dir

    models = [("model.base", cfg.model.base), ("model.teacher", cfg.model.teacher and cfg.model.teacher.path)]
    models += [(f"stages[{i}].teacher", s.teacher.path) for i, s in enumerate(cfg.stages)]
    for key, path in models:
        if path is not None and not Path(path).exists() and not is_hub_id(path):
            raise FileNotFoundError(f"{key}: no model folder {path!r}, and it is not a hub id (owner/name)")
    student = cfg.model.student and cfg.model.student.lindit
    if student is not None and not is_lindit_dir(student):
        raise FileNotFoundError(f"model.student.lindit: {student} is not a lindit student folder (its config.json names no lindit class)")
    source = cfg.data.source
    for key, folder in (("data.source.folder", source.folder), ("data.source.cache", source.cache)):
        if folder is not None and not Path(folder).is_dir():
            raise FileNotFoundError(f"{key}: {folder} does not exist")


def scheduler_config(cfg: RunConfig) -> dict:
    """The base pipeline's scheduler config (if any) updated by ``model.scheduler``."""
    config = {}
    if cfg.model.base:
        from diffusers import DDPMScheduler

        config = dict(DDPMScheduler.load_config(cfg.model.base, subfolder="scheduler"))
    return {**config, **cfg.model.scheduler}


def objective_kind(cfg: RunConfig, family: str) -> str:
    """``model.objective``, or the base model's: its family's (rectified flow for SD3), else the scheduler's
    prediction type."""
    if cfg.model.objective != "auto":
        return cfg.model.objective
    return FAMILIES[family].objective or scheduler_config(cfg).get("prediction_type", "epsilon")


def student_for_stage(comp: Components, stage_index: int) -> nn.Module:
    """The student, rebuilt on the config of its stage's own teacher if the stage names one (EDiT stage 2
    continues next to the 1024 px teacher with that model's position-embedding scale)."""
    key = comp.teachers.key_of(stage_index)
    if key >= 0 and getattr(comp.student, "lindit_config", None):
        teacher = comp.teachers.load(key, to_device=False)
        if _public(teacher.config) != _public(comp.student.config):
            comp.student = adopt_teacher_config(comp.student, teacher)
            disable_label_dropout(comp.student)
    return comp.student


def _public(config) -> dict:
    """The architecture part of a config (what a stage teacher and the student must share)."""
    return {k: v for k, v in config.items() if not k.startswith(("_", "lindit_"))}


def stage_data(comp: Components, stage: StageConfig):
    """(dataset, bucket of each sample, null conditioning or None) for a stage's resolution."""
    cfg = comp.cfg
    if cfg.data.source.kind() == "cache":
        folder = cache_dir(cfg.data.source.cache, stage.resolution)
        data = CachedDataset(folder)
        expected = {"family": comp.family, "conditioning": conditioning_kind(cfg.model.conditioning, comp.family),
                    "vae": cfg.model.vae}  # fmt: skip
        check_cache(data.index, expected, folder)
        comp.vae_scale = data.index.get("vae_scale_factor", comp.vae_scale)
        return data, data.bucket_of, data.null_condition()
    if comp._source is None:
        comp._source = open_source(cfg.data)
    buckets = make_buckets(stage.resolution, cfg.data.aspect_ratios, cfg.data.bucket_multiple)
    data = RawDataset(comp._source, buckets)
    return data, data.bucket_of, None
