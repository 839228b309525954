"""lindit's diffusers model classes, under the module path that saved pipelines record.

``pipe.save_pretrained`` writes ``["lindit.students", "LinditPixArtTransformer2DModel"]`` into
``model_index.json``, and ``DiffusionPipeline.from_pretrained`` finds the class here (once ``import lindit``
has run; diffusers never imports a module a repository names). This path stays stable whatever lindit's
internal layout. diffusers picks a component's loading method from the base classes its module exports,
hence ``ModelMixin`` below.
"""

from diffusers import ModelMixin  # noqa: F401  (looked up on this module by diffusers' pipeline loader)

from .integrations.diffusers.students import (
    LinditDiTTransformer2DModel,
    LinditPixArtTransformer2DModel,
    LinditSD3Transformer2DModel,
)

__all__ = ["LinditDiTTransformer2DModel", "LinditPixArtTransformer2DModel", "LinditSD3Transformer2DModel"]
