"""The training recipe as typed dataclasses, read from YAML. Every weight and schedule is a value here.

    cfg = load_config("configs/edit-pixart-sigma.yaml", overrides=["stages[0].steps=10"])

Unknown keys and wrong types are errors that name the key path (``stages[1].lr: expected float, got
'fast'``). ``recipe`` supplies the loss weights a stage leaves out (``RECIPES``); ``resolve`` fills them in
and checks what only makes sense across sections (a teacher for distillation losses, a method, ...).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .schema import from_dict, set_path, to_dict

Recipe = Literal["edit", "mm_edit", "lit", "finetune"]


@dataclass
class LossWeights:
    """Weights of the loss terms; None: the recipe's default. kd and variance compare student and teacher
    outputs (the prediction channels and, for learned-sigma models, the variance channels); feature compares
    the outputs of every replaced attention layer; guidance compares the guidance direction, the prediction
    with the prompt minus the prediction with the null prompt (every sample then runs with both)."""

    task: float | None = None
    kd: float | None = None
    feature: float | None = None
    variance: float | None = None
    guidance: float | None = None

    def filled(self, defaults: LossWeights) -> LossWeights:
        return LossWeights(**{k: getattr(defaults, k) if v is None else v for k, v in dataclasses.asdict(self).items()})

    def needs_teacher(self) -> bool:
        return any((getattr(self, k) or 0.0) > 0 for k in ("kd", "feature", "variance", "guidance"))


# Default loss weights per recipe. EDiT: task + KD + feature distillation "following [12, 14]" (EDiT Sec. 4);
# LinFusion [14] weighs both distillation terms 0.5. LiT Eq. 7: lambda1 = 0.5 (L_noise), lambda2 = 0.05
# (L_var) for ImageNet 256 (Sec. 4.1). Fine-tuning (EDiT App. C): the base model's loss alone.
RECIPES: dict[str, LossWeights] = {
    "edit": LossWeights(task=1.0, kd=0.5, feature=0.5, variance=0.0, guidance=0.0),
    "mm_edit": LossWeights(task=1.0, kd=0.5, feature=0.5, variance=0.0, guidance=0.0),
    "lit": LossWeights(task=1.0, kd=0.5, feature=0.0, variance=0.05, guidance=0.0),
    "finetune": LossWeights(task=1.0, kd=0.0, feature=0.0, variance=0.0, guidance=0.0),
}
WEIGHTS = tuple(f.name for f in dataclasses.fields(LossWeights))


@dataclass
class RandomModel:
    """A freshly initialised diffusers transformer (tiny configs, tests): ``class`` is the diffusers class name."""

    cls: str = field(metadata={"key": "class"})
    config: dict[str, Any] = field(default_factory=dict)
    seed: int = 0


@dataclass
class ModelSource:
    """Where a model comes from; exactly one of the fields. A plain string is a ``path``; ``same`` (stages
    only) keeps the previous stage's teacher."""

    path: str | None = None  # diffusers model folder, pipeline folder (its transformer/) or hub id
    subfolder: str | None = None
    random: RandomModel | None = None
    builtin: str | None = None  # a teacher shipped with lindit (see training/student.py)
    lindit: str | None = None  # a folder written by lindit.save (students only: continue training it)
    same: bool = False

    @classmethod
    def _coerce(cls, value: Any, path: str) -> Any:
        if value == "same":
            return {"same": True}
        if isinstance(value, str) and value.startswith("builtin:"):  # the spelling every command accepts
            return {"builtin": value[len("builtin:"):]}
        return {"path": value} if isinstance(value, str) else value

    def kind(self) -> str:
        set_ = [k for k in ("path", "random", "builtin", "lindit") if getattr(self, k) is not None]
        set_ += ["same"] if self.same else []
        if len(set_) != 1:
            raise ValueError(f"a model source needs exactly one of path, random, builtin, lindit, same; got {set_ or 'none'}")
        return set_[0]


@dataclass
class LoraSettings:
    """PEFT LoRA adapters on the projections of the layers lindit converted (``stages[i].trainable: lora``)."""

    rank: int = 16
    alpha: float | None = None  # default: rank (scale 1)
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])


@dataclass
class ModelConfig:
    base: str | None = None  # diffusers pipeline folder or hub id: VAE, text encoder(s), scheduler, teacher
    teacher: ModelSource | None = None  # default: the base pipeline's transformer
    student: ModelSource | None = None  # default: lindit.convert(teacher, method, **convert)
    method: str | None = None  # default: the family's own (edit, mm_edit, lit)
    convert: dict[str, Any] = field(default_factory=dict)  # lindit.convert options (layers, inherit, heads, ...)
    objective: Literal["auto", "epsilon", "v_prediction", "flow"] = "auto"  # auto: the base model's
    scheduler: dict[str, Any] = field(default_factory=dict)  # noise-scheduler config overrides (e.g. shift)
    # pipeline: the base pipeline's VAE; builtin: the shapes world's autoencoder; none: images are the latents
    vae: Literal["pipeline", "builtin", "none"] = "pipeline"
    conditioning: Literal["auto", "pipeline", "builtin", "labels"] = "auto"  # auto: labels for DiT, else pipeline
    max_sequence_length: int | None = None  # text tokens; default: the pipeline's (PixArt 300, SD3 256)
    lora: LoraSettings | None = None  # adapters for LoRA training; the saved student has them merged


@dataclass
class WorldSource:
    """The built-in shapes world (lindit.world): ``text`` captions or ``class`` labels."""

    n: int = 1024
    seed: int = 0
    kind: Literal["text", "class"] = "text"
    max_objects: int = 2


@dataclass
class HFSource:
    name: str
    split: str = "train"
    config_name: str | None = None
    image_column: str = "image"
    text_column: str = "text"


@dataclass
class DataSource:
    """Exactly one: an image folder, a Hugging Face dataset, a ``lindit cache`` folder, the shapes world."""

    folder: str | None = None
    hf: HFSource | None = None
    cache: str | None = None
    world: WorldSource | None = None

    def kind(self) -> str:
        set_ = [k for k in ("folder", "hf", "cache", "world") if getattr(self, k) is not None]
        if len(set_) != 1:
            raise ValueError(f"data.source needs exactly one of folder, hf, cache, world; got {set_ or 'none'}")
        return set_[0]


@dataclass
class DataConfig:
    source: DataSource
    batch_size: int = 4  # per process and micro-step
    caption_dropout: float = 0.1  # probability a caption becomes the empty prompt (class: the null class)
    aspect_ratios: list[float] = field(default_factory=lambda: [0.5, 0.75, 1.0, 1.333, 2.0])  # height / width
    bucket_multiple: int = 64  # bucket sides are multiples of this many pixels
    num_workers: int = 2


@dataclass
class StageConfig:
    steps: int
    lr: float
    resolution: int  # pixels; buckets keep about resolution**2 pixels
    name: str = ""
    # attention: only the layers lindit replaced; lora: model.lora's adapters and the converted layers' own new
    # weights (ConvFusion, Spatial Compressor, ...), their projections frozen; all: every weight
    trainable: Literal["attention", "lora", "all"] = "all"
    teacher: ModelSource = field(default_factory=lambda: ModelSource(same=True))
    loss: LossWeights = field(default_factory=LossWeights)
    batch_size: int | None = None  # default: data.batch_size
    warmup_steps: int | None = None  # default: optimizer.warmup_steps
    # What the replaced layers see for the feature term. student: the student's own hidden states (EDiT's
    # feature distillation). teacher: the input the teacher's layer got, so each layer is fitted to its
    # teacher layer alone (layer-wise attention transfer, as LoLCATs' first stage); the student's output is
    # then not its own, so this stage trains the replaced layers on the feature term only.
    feature_inputs: Literal["student", "teacher"] = "student"


@dataclass
class OptimizerConfig:
    """AdamW; the learning-rate schedule is a diffusers ``get_scheduler`` name."""

    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    eps: float = 1e-8
    schedule: str = "constant_with_warmup"
    warmup_steps: int = 0


@dataclass
class NoiseConfig:
    """Timestep sampling of the rectified-flow objective (diffusers' SD3 example); DDPM samples uniformly."""

    weighting_scheme: Literal["logit_normal", "mode", "uniform", "sigma_sqrt", "cosmap", "none"] = "logit_normal"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    mode_scale: float = 1.29


@dataclass
class TrainingConfig:
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    gradient_accumulation_steps: int = 1
    max_grad_norm: float | None = 1.0
    gradient_checkpointing: bool = False
    find_unused_parameters: bool = False  # DDP: set when some trainable weights get no gradient
    allow_tf32: bool = True
    # Optimisation steps in a row whose loss or gradients are NaN/inf that are skipped (weights untouched)
    # before the run stops as diverged; fp16's gradient scaler skips a few while it finds its scale.
    max_nonfinite_steps: int = 10


@dataclass
class EMAConfig:
    decay: float = 0.9999
    update_after_step: int = 0
    use_warmup: bool = False


@dataclass
class CheckpointConfig:
    every: int = 500  # optimisation steps
    keep: int = 3  # the last K complete checkpoints are kept


@dataclass
class LoggingConfig:
    every: int = 10  # optimisation steps per metrics row
    tensorboard: bool = True  # used when the tensorboard package is installed
    progress_bar: bool = True


@dataclass
class RunConfig:
    model: ModelConfig
    data: DataConfig
    stages: list[StageConfig]
    recipe: Recipe = "edit"
    seed: int = 0
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    ema: EMAConfig | None = None
    checkpointing: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def total_steps(self) -> int:
        return sum(s.steps for s in self.stages)


def parse_config(data: dict, overrides: list[str] = ()) -> RunConfig:
    """A RunConfig from YAML data and ``key.path=value`` overrides (values read as YAML), checked."""
    data = _deep_copy(data if data is not None else {}, _expanded_size(data))
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r}: expected KEY=VALUE, e.g. stages[0].steps=10")
        set_path(data, key.strip(), yaml.safe_load(value))
    return resolve(from_dict(RunConfig, data))


def load_config(path: str | Path, overrides: list[str] = ()) -> RunConfig:
    """Read and check a YAML recipe (see ``configs/``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"{path} is not valid YAML: {err}") from None
    return parse_config(data, overrides)


def resolve(cfg: RunConfig) -> RunConfig:
    """Fill stage loss weights from the recipe and check cross-field rules; returns ``cfg``."""
    if not cfg.stages:
        raise ValueError("stages: at least one stage is required")
    cfg.data.source.kind()
    named = False  # whether this or an earlier stage names its own teacher
    for i, stage in enumerate(cfg.stages):
        stage.loss = stage.loss.filled(RECIPES[cfg.recipe])
        _check_stage(stage, f"stages[{i}]")
        check_bucket(stage.resolution, cfg.data.bucket_multiple, f"stages[{i}].resolution")
        named = named or stage.teacher.kind() != "same"
        if stage.loss.needs_teacher() and not named and not _has_teacher(cfg):
            raise ValueError(f"stages[{i}].loss needs a teacher: set model.base, model.teacher or stages[{i}].teacher")
    for name, src in (("model.teacher", cfg.model.teacher), ("model.student", cfg.model.student)):
        if src is not None and src.kind() == "same":
            raise ValueError(f"{name}: 'same' is only meaningful for a stage's teacher")
    if cfg.model.student is None and not _has_teacher(cfg):
        raise ValueError("model: nothing to convert: set model.base or model.teacher (or model.student.lindit)")
    _check_positive(cfg)
    _check_optimizer(cfg)
    _check_averaging(cfg)
    _check_lora(cfg)
    if cfg.model.method is not None:
        from ..methods import check_options

        check_options(cfg.model.method, cfg.model.convert)
    return cfg


def _has_teacher(cfg: RunConfig) -> bool:
    return cfg.model.teacher is not None or cfg.model.base is not None


def _check_stage(stage: StageConfig, where: str) -> None:
    stage.teacher.kind()
    if stage.teacher.lindit is not None:
        raise ValueError(f"{where}.teacher: a teacher is a diffusers model, not a lindit student")
    for key in WEIGHTS:
        if getattr(stage.loss, key) < 0:
            raise ValueError(f"{where}.loss.{key}: must be >= 0")
    if not any(getattr(stage.loss, k) > 0 for k in WEIGHTS):
        raise ValueError(f"{where}.loss: every weight is zero")
    if stage.feature_inputs == "teacher":
        others = {k: getattr(stage.loss, k) for k in WEIGHTS if k != "feature" and getattr(stage.loss, k) > 0}
        if stage.loss.feature <= 0 or others or stage.trainable != "attention":
            raise ValueError(
                f"{where}.feature_inputs: teacher fits each replaced layer to its teacher layer, so the stage needs "
                f"trainable: attention and loss.feature > 0 alone; got trainable: {stage.trainable}, "
                f"loss.feature: {stage.loss.feature}, other loss terms: {others or 'none'}")
    if stage.steps < 1 or stage.resolution < 1 or stage.lr <= 0:
        raise ValueError(f"{where}: steps, resolution and lr must be positive")
    if stage.lr > MAX_LR:  # AdamW's first step (lr / 0.1) would overflow float32 near 3e37
        raise ValueError(f"{where}.lr: at most {MAX_LR:g}, got {stage.lr:g}")


MAX_LR = 1e6


def check_bucket(resolution: int, multiple: int, where: str) -> None:
    # Bucket sides are rounded to multiples of data.bucket_multiple (at least one multiple), so a resolution
    # that is not a multiple would silently train at another size: 32 px with the default 64 trains at
    # 64 px, where a teacher made for 32 px may be far off its training distribution.
    if multiple >= 1 and resolution % multiple:
        from .data import make_buckets

        side = make_buckets(resolution, [1.0], multiple)[0][0]
        raise ValueError(
            f"{where}: {resolution} is not a multiple of data.bucket_multiple ({multiple}), so its "
            f"square bucket would be {side} px; set "
            f"data.bucket_multiple to a divisor of {resolution} or a resolution that is a multiple of {multiple}")


def _check_positive(cfg: RunConfig) -> None:
    checks = {
        "data.batch_size": cfg.data.batch_size, "data.bucket_multiple": cfg.data.bucket_multiple,
        "training.gradient_accumulation_steps": cfg.training.gradient_accumulation_steps,
        "checkpointing.every": cfg.checkpointing.every, "checkpointing.keep": cfg.checkpointing.keep,
        "logging.every": cfg.logging.every,
    }
    for key, value in checks.items():
        if value < 1:
            raise ValueError(f"{key}: must be >= 1, got {value}")
    if not 0.0 <= cfg.data.caption_dropout < 1.0:
        raise ValueError(f"data.caption_dropout: must be in [0, 1), got {cfg.data.caption_dropout}")
    if not cfg.data.aspect_ratios or min(cfg.data.aspect_ratios) <= 0:
        raise ValueError("data.aspect_ratios: needs at least one positive ratio")


def _check_optimizer(cfg: RunConfig) -> None:
    """What AdamW, clipping and the seed would refuse (or silently turn into NaN) only once training starts."""
    opt, training = cfg.optimizer, cfg.training
    if len(opt.betas) != 2 or not all(0.0 <= b < 1.0 for b in opt.betas):
        raise ValueError(f"optimizer.betas: two numbers in [0, 1), got {opt.betas}")
    if opt.eps <= 0:
        raise ValueError(f"optimizer.eps: must be > 0 (0 divides by zero where a gradient is 0), got {opt.eps}")
    if opt.weight_decay < 0:
        raise ValueError(f"optimizer.weight_decay: must be >= 0, got {opt.weight_decay}")
    if training.max_grad_norm is not None and training.max_grad_norm <= 0:
        raise ValueError(f"training.max_grad_norm: must be > 0, or null for no clipping; got {training.max_grad_norm}")
    checks = {"optimizer.warmup_steps": opt.warmup_steps, "training.max_nonfinite_steps": training.max_nonfinite_steps,
              **{f"stages[{i}].warmup_steps": s.warmup_steps for i, s in enumerate(cfg.stages) if s.warmup_steps is not None}}
    for key, value in checks.items():
        if value < 0:
            raise ValueError(f"{key}: must be >= 0, got {value}")
    if not 0 <= cfg.seed < 2**32:
        raise ValueError(f"seed: must be in [0, 2**32), got {cfg.seed}")


def _check_averaging(cfg: RunConfig) -> None:
    """The lr schedule and EMA, checked here: get_scheduler and EMAModel would fail only when training starts."""
    from diffusers.optimization import SchedulerType

    valid = [t.value for t in SchedulerType]
    if cfg.optimizer.schedule not in valid:
        raise ValueError(f"optimizer.schedule: unknown learning-rate schedule {cfg.optimizer.schedule!r}; "
                         f"choose from {', '.join(valid)}")
    if cfg.ema is not None and not 0.0 < cfg.ema.decay < 1.0:
        raise ValueError(f"ema.decay: must be in (0, 1), got {cfg.ema.decay}")


def _check_lora(cfg: RunConfig) -> None:
    lora = cfg.model.lora
    uses = [i for i, stage in enumerate(cfg.stages) if stage.trainable == "lora"]
    if uses and lora is None:
        raise ValueError(f"stages[{uses[0]}].trainable: lora needs model.lora (e.g. model.lora: {{rank: 16}})")
    if lora is not None and (lora.rank < 1 or not lora.target_modules or lora.dropout < 0 or lora.dropout >= 1):
        raise ValueError(f"model.lora: rank must be >= 1, target_modules non-empty and dropout in [0, 1); "
                         f"got rank={lora.rank}, target_modules={lora.target_modules}, dropout={lora.dropout}")


def dump_config(cfg: RunConfig) -> str:
    """The resolved config as YAML (written beside a run, so it can be repeated exactly)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


MAX_VALUES = 100_000  # a recipe has a few hundred; YAML aliases of aliases can expand to billions


def _expanded_size(data: Any, memo: dict | None = None, path: tuple = ()) -> int:
    """How many values ``data`` holds once YAML aliases are expanded (shared nodes counted per use), in time
    linear in the YAML; ValueError beyond MAX_VALUES or for a node that contains itself."""
    memo = {} if memo is None else memo
    if not isinstance(data, (dict, list)):
        return 1
    if id(data) in path:
        raise ValueError("config: a YAML alias refers to a mapping or list that contains it")
    if id(data) not in memo:
        children = data.values() if isinstance(data, dict) else data
        memo[id(data)] = 1 + sum(_expanded_size(v, memo, path + (id(data),)) for v in children)
        if memo[id(data)] > MAX_VALUES:
            raise ValueError(f"config: its YAML aliases (*name) expand to more than {MAX_VALUES:,} values; a recipe "
                             "needs a few hundred, so write the repeated parts out or use fewer nested aliases")
    return memo[id(data)]


def _deep_copy(data: Any, size: int = 0) -> Any:
    """A copy whose aliases are separate objects (an override changes one place); ``size`` was checked."""
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data
