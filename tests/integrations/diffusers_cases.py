"""The models every generic check runs on: each family's tiny teacher and its students (tests/tiny_models.py).

A check parametrized over ``CASES`` runs for the teacher and every student of its family, so whatever passes
for the teacher is seen to pass for its students; a student that differs by design is marked where the check
is, with the reason (docs/DIFFUSERS.md lists them).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

import lindit
from lindit.integrations.diffusers import FAMILIES, converted_layers
from tiny_models import BUILDERS, inputs

STUDENTS = {"pixart": ("edit", "sana", "kv_compress"), "sd3": ("mm_edit", "mm_edit_exact", "linear_mmdit_beta"),
            "dit": ("lit",)}
# Latent sizes: odd, non-square token grids (5 x 7, 7 x 5; DiT samples square images only).
LATENT = {"pixart": (10, 14), "sd3": (14, 10), "dit": (10, 10)}
OTHER_LATENT = {"pixart": (14, 10), "sd3": (10, 14), "dit": (6, 6)}  # the same token count where it can be
ATOL = 1e-5  # identical weights, different memory alignment: float32 kernels may differ in the last bits


@dataclass(frozen=True)
class Case:
    family: str
    method: str | None = None  # None: the teacher

    def __str__(self) -> str:
        return f"{self.family}-{self.method or 'teacher'}"

    @property
    def is_student(self) -> bool:
        return self.method is not None

    @property
    def teacher_class(self) -> type:
        return FAMILIES[self.family].model_class

    def build(self, seed: int = 0, **options) -> torch.nn.Module:
        teacher = BUILDERS[self.family](seed=seed)
        return lindit.convert(teacher, self.method, **options) if self.is_student else teacher

    def inputs(self, latent: tuple[int, int] | None = None, seed: int = 1) -> dict:
        return inputs(self.family, *(latent or LATENT[self.family]), seed=seed)

    def run(self, model: torch.nn.Module, latent: tuple[int, int] | None = None, seed: int = 1) -> torch.Tensor:
        """One forward without gradients -> the model's sample (B, C_out, H, W)."""
        with torch.no_grad():
            return model(**self.inputs(latent, seed), return_dict=False)[0]


TEACHERS = [Case(fam) for fam in STUDENTS]
STUDENT_CASES = [Case(fam, method) for fam, methods in STUDENTS.items() for method in methods]
CASES = [case for fam in STUDENTS for case in [Case(fam)] + [c for c in STUDENT_CASES if c.family == fam]]
# One student per family, where the check exercises nothing that differs between methods of a family.
REPRESENTATIVES = [case for case in CASES if case.method in (None, "edit", "mm_edit", "lit")]
FIRST_STUDENTS = [case for case in REPRESENTATIVES if case.is_student]


def cases(selection=CASES, marks: dict | None = None) -> list:
    """``selection`` as pytest params with readable ids; ``marks``: {family or str(case): mark}."""
    marks = marks or {}
    return [pytest.param(c, id=str(c), marks=marks.get(str(c), marks.get(c.family, ()))) for c in selection]


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    """Same class, same tensor names and exactly the same values (none left on the meta device)."""
    assert type(a) is type(b)
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for name, tensor in sa.items():
        assert not sb[name].is_meta, name
        assert sb[name].dtype == tensor.dtype and torch.equal(sb[name], tensor), name


def attention_names(model: torch.nn.Module) -> set[str]:
    """The diffusers ``Attention`` layers left in a model (what ``attn_processors`` should list)."""
    from diffusers.models.attention_processor import Attention

    return {name for name, m in model.named_modules() if isinstance(m, Attention)}


def converted_names(model: torch.nn.Module) -> list[str]:
    return list(converted_layers(model, attention_only=True))
