"""Deployment: quantized and exported linear-time models, measured against the teacher.

* ``quantize(model, scheme)``: int8 / int4 Linear weights with torchao (or torch.ao's int8 dynamic
  kernels); saved and loaded by ``lindit.save`` / ``lindit.load`` as plain safetensors tensors.
* ``export_model(model, format, out, latent_hw)``: ONNX or torch.export with the token grid fixed,
  verified against eager PyTorch in onnxruntime or torch.export's runtime.
* ``quantization_quality(pipe, request, schemes)``: MSE / PSNR of images from the same noise and prompt.
* ``lindit generate --low-memory`` (``low_memory.StagedGeneration``): one large component at a time.
* ``lindit deploy bench | quality | synthetic | encoder-memory``: the measurements in docs/DEPLOYMENT.md.

torchao, onnx, onnxruntime and onnxscript are the ``deploy`` extra, imported only when used.
"""

from .export import ExportResult, export_model, verify
from .quantize import quantize
from .schemes import SCHEMES

_LAZY = {"image_difference": ".fidelity", "quantization_quality": ".fidelity"}


def __getattr__(name: str):
    # fidelity is imported on first use, not with the package: `python -m lindit.deploy.fidelity` (kept for old
    # scripts; `lindit deploy quality` is the command) runs that module as __main__, and runpy warns when the
    # package has already imported it under its own name.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["SCHEMES", "ExportResult", "export_model", "image_difference", "quantization_quality", "quantize",
           "verify"]
