"""lindit: linear-time diffusion transformers (EDiT, MM-EDiT, LiT) for diffusers models.

    import lindit
    student = lindit.convert(teacher, "edit")      # PixArt-Sigma -> EDiT; the teacher is untouched
    lindit.save(student, "edit-student")
    student = lindit.load("edit-student")
"""

import logging

# With the deploy extra installed, diffusers imports torchao at start-up, and torchao and torch log
# warnings about CUDA-only kernels and deprecated pytree registrations on every command; none concern CPU
# use or lindit, so these three loggers report errors only.
for _name in ("torchao", "torch.utils._pytree", "diffusers.quantizers.torchao.torchao_quantizer"):
    logging.getLogger(_name).setLevel(logging.ERROR)

from . import functional  # noqa: E402
from .generate import pipeline  # noqa: E402
from .integrations.diffusers import (  # noqa: E402
    LinditDiTTransformer2DModel,
    LinditPixArtTransformer2DModel,
    LinditSD3Transformer2DModel,
    allow_any_resolution,
    convert,
    convert_pipeline,
    load,
    save,
)
from .methods import methods  # noqa: E402
from .modules import JointAttention, LinearAttention, MixFFN, SoftmaxAttention  # noqa: E402
from . import students  # noqa: E402,F401  (the module saved pipelines name for lindit's classes)

__version__ = "0.1.0"

__all__ = [
    "JointAttention",
    "LinditDiTTransformer2DModel",
    "LinditPixArtTransformer2DModel",
    "LinditSD3Transformer2DModel",
    "LinearAttention",
    "MixFFN",
    "SoftmaxAttention",
    "allow_any_resolution",
    "convert",
    "convert_pipeline",
    "functional",
    "load",
    "methods",
    "pipeline",
    "save",
]
