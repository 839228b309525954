"""Deployment: quantized and exported linear-time models, measured against the teacher.

* ``quantize(model, scheme)``: int8 / int4 Linear weights with torchao (or torch.ao's int8 dynamic
  kernels); saved and loaded by ``lindit.save`` / ``lindit.load`` as plain safetensors tensors.
* ``export_model(model, format, out, latent_hw)``: ONNX or torch.export with the token grid fixed,
  verified against eager PyTorch in onnxruntime or torch.export's runtime.
* ``quantization_quality(pipe, request, schemes)``: MSE / PSNR of images from the same noise and prompt.
* ``lindit generate --low-memory`` (``low_memory.StagedGeneration``): one large component at a time.

torchao, onnx, onnxruntime and onnxscript are the ``deploy`` extra, imported only when used.
"""

from .export import ExportResult, export_model, verify
from .quality import image_difference, quantization_quality
from .quantize import quantize
from .schemes import SCHEMES

__all__ = ["SCHEMES", "ExportResult", "export_model", "image_difference", "quantization_quality", "quantize",
           "verify"]
