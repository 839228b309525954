"""lindit's diffusers model classes: one per family, each a subclass of the teacher's class.

A student is ``LinditPixArtTransformer2DModel``, ``LinditSD3Transformer2DModel`` or
``LinditDiTTransformer2DModel``: the teacher's ``__init__`` arguments plus ``lindit_conversion`` (method,
layers, inherited projections, options: the ``Plan``), so diffusers' own machinery rebuilds it from
(class, config) like any diffusers model: ``from_pretrained`` (``torch_dtype``, ``variant``, sharded
weights, ``low_cpu_mem_usage``, ``device_map``), ``from_config``, ``EMAModel(model_cls=..., model_config=...)``,
pipelines' ``save_pretrained`` / ``from_pretrained`` (``model_index.json`` records
``["lindit.students", class]``; ``import lindit`` before loading the pipeline, as for any library outside
diffusers). Each class also has
diffusers' ``PeftAdapterMixin`` (PEFT LoRA: ``add_adapter``, ``load_lora_adapter``, ...).

Loading a student folder with the teacher's class would silently build the teacher and drop the lindit
layers' weights, so importing lindit makes the three teacher classes refuse configs that name a lindit
class, with a message saying which class to use.
"""

from __future__ import annotations

import inspect
import os
import tempfile
from pathlib import Path

import torch.utils.checkpoint
from diffusers import DiTTransformer2DModel, ModelMixin, PixArtTransformer2DModel, SD3Transformer2DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.loaders import PeftAdapterMixin
from diffusers.utils.peft_utils import get_adapter_name

from .lora import filter_lora_state, read_lora_state, unprefixed, warn_dropped
from .model_card import write_model_card
from .positions import allow_any_resolution
from .families import FAMILIES
from .legacy import upgrade_format2_options
from .convert import build_structure, converted_layers
from .plan import FORMAT_VERSION, Plan, make_plan
from .token_grid import TokenGrid

CONVERSION_KEYS = {"family", "method", "layers", "inherit", "options", "teacher", "format_version"}


class LinditModelMixin:
    """What every student class adds to its teacher's class (listed first in the bases)."""

    lindit_family: str = ""

    def _lindit_build(self, conversion: dict | None, quantization: dict | None) -> None:
        if quantization is not None:
            raise ValueError(f"this {type(self).__name__} config holds a quantized model "
                             f"({quantization.get('scheme')}); load it with lindit.load(path)")
        plan = plan_from_config(conversion, type(self).__name__, self.lindit_family, len(self.transformer_blocks))
        self.lindit_grid = TokenGrid(int(self.config.patch_size))
        allow_any_resolution(self)  # SD3: positions beyond the trained table; PixArt/DiT: no change
        build_structure(self, plan, self.lindit_grid)
        self.register_to_config(lindit_conversion=plan.as_dict())  # today's format, every default named

    @property
    def lindit_config(self) -> dict:
        """The conversion (``Plan.as_dict()``): family, method, layers, inherit, options, teacher."""
        return dict(self.config.lindit_conversion)

    def forward(self, *args, **kwargs):
        self.lindit_grid.capture(args, kwargs)  # the latent's (h, w) for every converted layer
        return super().forward(*args, **kwargs)

    def _set_gradient_checkpointing(self, enable: bool = True,
                                    gradient_checkpointing_func=torch.utils.checkpoint.checkpoint) -> None:
        """diffusers' switch, with each checkpointed block recomputed on the grid of its own forward."""
        super()._set_gradient_checkpointing(enable, self.lindit_grid.checkpointed(gradient_checkpointing_func))

    def set_attn_processor(self, processor):
        """diffusers' processors apply to the Attention layers left unconverted (``attn_processors``); a dict
        that names a converted layer is an error, as is a processor for a model with none left."""
        method = self.lindit_config["method"]
        if isinstance(processor, dict):
            converted = {f"{name}.processor" for name in converted_layers(self, attention_only=True)}
            named = sorted(set(processor) & converted)
            if named:
                raise ValueError(f"{named[0]} is a lindit {method} layer, not a diffusers "
                                 f"Attention; processors can be set on: {', '.join(self.attn_processors) or 'none'}")
        elif not self.attn_processors:  # diffusers would set it on nothing and say nothing
            raise ValueError(f"every attention layer of this {method} student is a lindit layer; there is no "
                             f"diffusers Attention left to set {type(processor).__name__} on")
        return super().set_attn_processor(processor)

    def load_lora_adapter(self, pretrained_model_name_or_path_or_dict, prefix: str | None = "transformer",
                          **kwargs):
        """diffusers' ``load_lora_adapter`` (pipelines' ``load_lora_weights`` call it too), keeping the LoRA
        entries whose target modules this student has and warning with the list of the others (a LoRA
        trained on the teacher targets layers a method may have replaced)."""
        hub = {k: kwargs.pop(k) for k in ("weight_name", "cache_dir", "revision", "token", "subfolder",
                                          "local_files_only") if k in kwargs}
        weight_name = hub.pop("weight_name", None)
        state, metadata = read_lora_state(pretrained_model_name_or_path_or_dict, weight_name, **hub)
        metadata = unprefixed(kwargs.pop("metadata", None) or metadata, prefix)  # the LoraConfig: rank, alpha
        kept, dropped = filter_lora_state(self, state, prefix)
        if not kept:
            raise ValueError(f"none of the LoRA's {len(dropped)} target modules exist in this student: "
                             f"{', '.join(dropped[:5])}")
        adapter_name = kwargs.pop("adapter_name", None) or get_adapter_name(self)  # diffusers' default_0, ...
        warn_dropped(dropped, adapter_name)
        return super().load_lora_adapter(kept, prefix=None, metadata=metadata, adapter_name=adapter_name, **kwargs)

    def save_pretrained(self, save_directory: str | os.PathLike, *args, push_to_hub: bool = False, **kwargs):
        """diffusers' ``save_pretrained``, plus a model card (README.md) describing the conversion."""
        hub = {k: kwargs.pop(k) for k in ("commit_message", "private", "create_pr", "token", "repo_id")
               if k in kwargs}
        if getattr(self, "lindit_quantization", None):
            raise ValueError("save a quantized model with lindit.save(model, path)")
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            write_model_card(self, Path(save_directory))
        if push_to_hub:
            self._push_folder(Path(save_directory), **hub)

    def push_to_hub(self, repo_id: str, commit_message: str | None = None, private: bool | None = None,
                    token=None, create_pr: bool = False, safe_serialization: bool = True, variant: str | None = None,
                    subfolder: str | None = None):
        """diffusers' ``push_to_hub`` with lindit's model card (diffusers' own would replace it with a generic one)."""
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp, safe_serialization=safe_serialization, variant=variant)
            return self._push_folder(Path(tmp), repo_id, token=token, private=private, create_pr=create_pr,
                                     commit_message=commit_message, subfolder=subfolder)

    def _push_folder(self, folder: Path, repo_id: str | None = None, token=None, private=None,
                     create_pr: bool = False, commit_message: str | None = None, subfolder: str | None = None):
        from huggingface_hub import create_repo

        repo_id = create_repo(repo_id or folder.name, exist_ok=True, private=private, token=token).repo_id
        write_model_card(self, folder, where=repo_id)  # its usage names the repository, not the local folder
        return self._upload_folder(str(folder), repo_id, token=token, commit_message=commit_message,
                                   create_pr=create_pr, subfolder=subfolder)


# diffusers' pipelines pass variant, safe_serialization and max_shard_size only to a save_pretrained whose
# signature names them: the override shows the one it forwards to.
LinditModelMixin.save_pretrained.__signature__ = inspect.signature(ModelMixin.save_pretrained)


def plan_from_config(conversion: dict | None, class_name: str, family: str, depth: int) -> Plan:
    """Check a config's ``lindit_conversion`` as ``lindit.convert`` checks its arguments; the Plan.
    Errors are one line naming the bad entry and what would be valid."""
    if conversion is None:
        raise ValueError(f"{class_name} needs lindit_conversion in its config: build students with "
                         "lindit.convert(teacher, method), or load them with lindit.load(path)")
    if not isinstance(conversion, dict):
        raise ValueError(f"lindit_conversion must be a mapping, got {type(conversion).__name__}")
    unknown = sorted(set(conversion) - CONVERSION_KEYS)
    if unknown:
        raise ValueError(f"lindit_conversion has unknown entries {unknown}; valid: {sorted(CONVERSION_KEYS)}")
    version = conversion.get("format_version", FORMAT_VERSION)
    if version not in (2, FORMAT_VERSION):
        raise ValueError(f"lindit_conversion format {version!r} is not one this lindit reads (2, {FORMAT_VERSION})")
    if conversion.get("family", family) != family:
        raise ValueError(f"lindit_conversion is for the {conversion['family']} family, but {class_name} is {family}")
    options = conversion.get("options") or {}
    if not isinstance(options, dict) or "method" not in conversion:
        raise ValueError("lindit_conversion needs a method and options as a mapping")
    if version == 2:
        options = upgrade_format2_options(conversion["method"], options)
    return make_plan(FAMILIES[family], depth, conversion["method"],
                     {**options, "layers": conversion.get("layers"), "inherit": conversion.get("inherit")},
                     teacher=conversion.get("teacher"))


def _student_init(teacher_cls: type):
    """The student's ``__init__``: the teacher's arguments plus ``lindit_conversion`` and ``lindit_quantized``
    (what ``lindit.deploy.quantize`` did, for ``lindit.load``), with that signature, so that
    ``register_to_config`` records all of them."""
    teacher_init = teacher_cls.__init__.__wrapped__  # undecorated: our own decorator registers the config

    def __init__(self, *args, lindit_conversion: dict | None = None, lindit_quantized: dict | None = None,
                 **kwargs):
        teacher_init(self, *args, **kwargs)
        self._lindit_build(lindit_conversion, lindit_quantized)

    signature = inspect.signature(teacher_init)
    extra = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=None)
             for n in ("lindit_conversion", "lindit_quantized")]
    __init__.__signature__ = signature.replace(parameters=[*signature.parameters.values(), *extra])
    __init__.__doc__ = f"{teacher_cls.__name__}'s arguments, plus the conversion lindit recorded."
    return register_to_config(__init__)


def _student_class(teacher_cls: type, family: str) -> type:
    name = f"Lindit{teacher_cls.__name__}"
    bases = (LinditModelMixin, teacher_cls) + (() if issubclass(teacher_cls, PeftAdapterMixin) else (PeftAdapterMixin,))
    doc = (f"A lindit student of {teacher_cls.__name__}: its blocks' attention replaced as the config's "
           "``lindit_conversion`` says; everything else is the teacher's architecture.")
    # __module__: what pipelines' model_index.json records (lindit/students.py), stable across lindit's layout
    return type(name, bases, {"__init__": _student_init(teacher_cls), "__doc__": doc, "__module__": "lindit.students",
                              "lindit_family": family})


LinditPixArtTransformer2DModel = _student_class(PixArtTransformer2DModel, "pixart")
LinditSD3Transformer2DModel = _student_class(SD3Transformer2DModel, "sd3")
LinditDiTTransformer2DModel = _student_class(DiTTransformer2DModel, "dit")
STUDENT_CLASSES = {cls.lindit_family: cls for cls in
                   (LinditPixArtTransformer2DModel, LinditSD3Transformer2DModel, LinditDiTTransformer2DModel)}
STUDENTS_BY_NAME = {cls.__name__: cls for cls in STUDENT_CLASSES.values()}


def student_class_of(config: dict) -> type | None:
    """The student class a config names (``_class_name``), or None for any other class."""
    return STUDENTS_BY_NAME.get(config.get("_class_name")) if isinstance(config, dict) else None


def _refusing_from_config(cls, config=None, return_unused_kwargs=False, **kwargs):
    student = student_class_of(config)
    if student is not None and not issubclass(cls, student):
        raise ValueError(f"this config is a lindit student ({student.__name__}, method "
                         f"{config.get('lindit_conversion', {}).get('method')}); {cls.__name__} would drop its "
                         f"converted layers: load it with lindit.load(path) or {student.__name__}.from_pretrained(path)")
    return ConfigMixin.from_config.__func__(cls, config, return_unused_kwargs, **kwargs)


for _teacher in (PixArtTransformer2DModel, SD3Transformer2DModel, DiTTransformer2DModel):
    _teacher.from_config = classmethod(_refusing_from_config)
