"""lindit: linear-time diffusion transformers (EDiT, MM-EDiT, LiT) for diffusers models.

    import lindit
    student = lindit.convert(teacher, "edit")      # PixArt-Sigma -> EDiT; the teacher is untouched
    lindit.save(student, "edit-student")
    student = lindit.load("edit-student")
"""

from . import functional
from .generate import pipeline
from .integrations.diffusers import allow_any_resolution, convert, load, save
from .methods import methods
from .modules import JointAttention, LinearAttention, MixFFN, SoftmaxAttention

__version__ = "0.1.0"

__all__ = [
    "JointAttention",
    "LinearAttention",
    "MixFFN",
    "SoftmaxAttention",
    "allow_any_resolution",
    "convert",
    "functional",
    "load",
    "methods",
    "pipeline",
    "save",
]
