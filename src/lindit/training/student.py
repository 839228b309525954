"""Teachers and students: where they come from, how they are frozen, and the trainable set of a stage.

A teacher source is one entry of ``TEACHER_SOURCES`` (a path, a random tiny model, a built-in teacher), so a
new kind of source (e.g. the shapes world's shipped tiny teachers) is one function added there.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

import torch
from accelerate import init_empty_weights
from diffusers import ConfigMixin
from torch import nn

from ..integrations.diffusers import convert, converted_layers, load, save
from ..io import atomic_dir
from ..integrations.diffusers.families import FAMILIES, family_of
from ..integrations.diffusers.loading import load_teacher
from ..integrations.diffusers.model_card import is_lindit_card
from ..integrations.diffusers.persistence import CONFIG_NAME
from .config import ModelConfig, ModelSource, RandomModel


def _from_path(source: ModelSource) -> nn.Module:
    return load_teacher(source.path, subfolder=source.subfolder)


def _from_random(source: ModelSource) -> nn.Module:
    return random_model(source.random)


def _from_builtin(source: ModelSource) -> nn.Module:
    from ..world.teachers import load_builtin_teacher

    return load_builtin_teacher(source.builtin)  # the shapes world's shipped tiny teachers


TEACHER_SOURCES: dict[str, Callable[[ModelSource], nn.Module]] = {
    "path": _from_path,
    "random": _from_random,
    "builtin": _from_builtin,
}


def random_model(spec: RandomModel) -> nn.Module:
    """A diffusers transformer of class ``spec.cls`` built from ``spec.config`` with weights drawn from ``spec.seed``.

    The global RNG is left as it was, so building a teacher does not shift the training run's randomness.
    """
    classes = {f.model_class.__name__: f.model_class for f in FAMILIES.values()}
    if spec.cls not in classes:
        raise ValueError(f"random model class {spec.cls!r} is not supported; choose one of {', '.join(classes)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        try:
            return classes[spec.cls](**spec.config).eval()
        except TypeError as err:
            raise ValueError(f"random model {spec.cls}: bad config ({err})") from None


def load_teacher_source(source: ModelSource | None, base: str | None) -> nn.Module:
    """A frozen (eval, no-grad) teacher from ``source``, or the ``base`` pipeline's transformer."""
    if source is None:
        if base is None:
            raise ValueError("no teacher: set model.base or model.teacher")
        source = ModelSource(path=base, subfolder="transformer")  # base is a pipeline (folder or hub id)
    kind = source.kind()
    if kind not in TEACHER_SOURCES:
        raise ValueError(f"a teacher cannot come from {kind!r}; use one of {', '.join(TEACHER_SOURCES)}")
    return freeze(TEACHER_SOURCES[kind](source))


def model_config(cfg: ModelConfig) -> dict:
    """The diffusers config of the run's model (to learn its family without loading weights)."""
    if cfg.student is not None and cfg.student.lindit is not None:
        return _ConfigFile.load_config(cfg.student.lindit)
    source = cfg.teacher or ModelSource(path=cfg.base, subfolder="transformer")
    if source.random is not None:
        return {"_class_name": source.random.cls, **source.random.config}
    if source.builtin is not None:
        from ..world.teachers import teacher_dir

        return _ConfigFile.load_config(str(teacher_dir(source.builtin)))
    if source.path is None:
        raise ValueError("model: cannot read the model config of this teacher source")
    return _ConfigFile.load_config(source.path, subfolder=source.subfolder)


class _ConfigFile(ConfigMixin):
    """Reads any diffusers ``config.json`` (local or hub). Not AutoModel.load_config: AutoModel.from_pretrained
    of a pipeline folder leaves AutoModel.config_name set to model_index.json (diffusers 0.42)."""

    config_name = "config.json"


def freeze(model: nn.Module) -> nn.Module:
    model.requires_grad_(False)
    return model.eval()


def build_student(cfg: ModelConfig, teacher: nn.Module | None) -> nn.Module:
    """The student in float32: a saved lindit model (``student.lindit``) or ``lindit.convert(teacher)``."""
    if cfg.student is not None:
        if cfg.student.kind() != "lindit":
            raise ValueError("model.student: give a folder written by lindit.save as {lindit: PATH}")
        student = load(cfg.student.lindit).float().train()
    elif teacher is None:
        raise ValueError("model: a teacher is needed to build the student")
    else:
        student = convert(teacher, cfg.method, **cfg.convert).float().train()
    if cfg.lora is not None:
        add_lora(student, cfg.lora)
    return student


def adopt_teacher_config(student: nn.Module, teacher: nn.Module) -> nn.Module:
    """The student rebuilt on ``teacher``'s diffusers config (sample size, position-embedding scale), its
    weights unchanged: how EDiT continues at 1024 px next to the 1024 px teacher. Parameter shapes must match.
    """
    if family_of(teacher) is not family_of(student):
        raise ValueError(f"stage teacher {type(teacher).__name__} is not of the student's class {type(student).__name__}")
    config = {**teacher.config, "lindit_conversion": student.config.lindit_conversion}
    try:
        rebuilt = rebuild(student, student.state_dict(), config=config)
    except ValueError as err:
        raise ValueError(f"the stage teacher's architecture differs from the student's: {err}") from None
    return rebuilt.train(student.training)


def rebuild(like: nn.Module, state: dict[str, torch.Tensor], config=None) -> nn.Module:
    """A student of ``like``'s class (on ``config``, default its own) holding ``state``.

    Built on the meta device and filled by assignment, so nothing is initialised twice; also turns a
    gathered state dict (FSDP, DeepSpeed ZeRO-3) back into a plain float32 model.
    """
    with init_empty_weights(include_buffers=False):  # parameters on meta; computed buffers stay real
        model = type(like).from_config(config if config is not None else like.config)
        for name, adapter in (getattr(like, "peft_config", None) or {}).items():
            model.add_adapter(adapter, adapter_name=name)
    expected = model.state_dict()
    bad = [k for k in expected if k not in state or state[k].shape != expected[k].shape]
    bad += sorted(set(state) - set(expected))
    if bad:
        raise ValueError(f"tensor {bad[0]} is missing, extra or of another shape")
    model.load_state_dict({k: v.detach().cpu() for k, v in state.items()}, strict=True, assign=True)
    return model.float()


LORA_ADAPTER = "lindit"  # the adapter name model.lora trains


def add_lora(student: nn.Module, lora) -> None:
    """PEFT LoRA adapters (``model.lora``) on the converted layers' projections named by ``target_modules``."""
    from peft import LoraConfig

    targets = [f"{name}.{t}" for name in converted_layers(student, attention_only=True) for t in lora.target_modules
               if isinstance(_submodule(student, f"{name}.{t}"), nn.Linear)]
    if not targets:
        raise ValueError(f"model.lora.target_modules {lora.target_modules} name no Linear layer of the converted "
                         "layers; use to_q, to_k, to_v, to_out.0, add_q_proj, ...")
    student.add_adapter(LoraConfig(r=lora.rank, lora_alpha=lora.alpha or lora.rank, lora_dropout=lora.dropout,
                                   target_modules=targets), adapter_name=LORA_ADAPTER)


def _submodule(model: nn.Module, name: str) -> nn.Module | None:
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


def has_lora(model: nn.Module) -> bool:
    return LORA_ADAPTER in (getattr(model, "peft_config", None) or {})


def merge_lora(student: nn.Module, adapter_dir: Path) -> nn.Module:
    """Save the trained adapter to ``adapter_dir`` (diffusers' LoRA format), then merge it into the
    projections, so the saved student is a plain one; a student without adapters is returned as it is."""
    if not has_lora(student):
        return student
    with atomic_dir(adapter_dir, overwrite=True) as tmp:
        student.save_lora_adapter(tmp, adapter_name=LORA_ADAPTER)
    student.fuse_lora(adapter_names=[LORA_ADAPTER])
    student.unload_lora()
    return student


def trainable_parameters(student: nn.Module, which: str) -> list[nn.Parameter]:
    """Set requires_grad for a stage and return the trainable parameters.

    ``attention``: only the layers lindit put in (EDiT stage 1); ``lora``: the LoRA adapters and the converted
    layers' weights other than the adapted projections; ``all``: every weight.
    """
    if which == "all":
        student.requires_grad_(True)
        return list(student.parameters())
    student.requires_grad_(False)
    layers = converted_layers(student)
    if not layers:
        raise ValueError(f"trainable: {which} needs a converted student, but this model has no lindit layers")
    if which == "lora" and not has_lora(student):
        raise ValueError("trainable: lora needs the adapters of model.lora")
    for layer in layers.values():
        layer.requires_grad_(True)
        for module in layer.modules() if which == "lora" else ():
            if hasattr(module, "base_layer"):  # a peft LoRA layer: its adapters train, its projection does not
                module.base_layer.requires_grad_(False)
    return [p for p in student.parameters() if p.requires_grad]


def disable_label_dropout(model: nn.Module) -> None:
    """Turn off DiT's built-in 10% class-label dropout: lindit drops labels itself (seeded, resumable), and
    the teacher, in eval mode, must see the same labels as the student."""
    for module in model.modules():
        if type(module).__name__ == "LabelEmbedding":
            module.dropout_prob = 0.0


def save_student(student: nn.Module, out_dir: str | Path) -> Path:
    """Save a trained student into ``out_dir`` itself (beside run.yaml, metrics.csv, checkpoints/), so that
    ``lindit.load(out_dir)`` opens it. The files are written by ``lindit.save`` into a temporary sibling and
    moved in one by one, the config (which marks a lindit folder) last."""
    from .run_folder import clean_leftovers

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / ".student.partial"
    clean_leftovers(out_dir)  # of a save that was killed; the run folder's lock is held
    try:
        save(student, tmp)
        for path in sorted(tmp.iterdir(), key=lambda p: p.name == CONFIG_NAME):
            if path.name == "README.md" and not is_lindit_card(out_dir / path.name):
                continue  # the user's own README in the run folder stays
            os.replace(path, out_dir / path.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
