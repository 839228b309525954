"""Text encoders with int8 weights, loaded one layer at a time (``lindit generate --low-memory``).

T5-XXL, the text encoder of PixArt-Sigma and SD3.5, is 9.3 GB in bfloat16: more than a small machine's
whole budget. Quantizing after loading peaks at the bfloat16 size, and transformers' quantize-on-load
(``TorchAoConfig``) peaks above it (``lindit deploy encoder-memory``), so this module builds the
model on the meta device and quantizes each Linear as soon as its weights are read.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from .low_memory import release_memory

logger = logging.getLogger(__name__)


def _weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return sorted({folder / f for f in json.loads(index.read_text())["weight_map"].values()})
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no safetensors weights in {folder}")
    return files


_SAFETENSORS_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64,
                       "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                       "U8": torch.uint8, "BOOL": torch.bool}


def read_safetensors(path: Path):
    """Yield (name, tensor) from a safetensors file one tensor at a time, with plain reads: a memory map
    would keep every page it touched resident, i.e. the whole stored model by the end."""
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        header, base = json.loads(f.read(size)), 8 + size
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            start, end = meta["data_offsets"]
            if meta["dtype"] not in _SAFETENSORS_DTYPES:
                raise ValueError(f"{path}: tensor {name!r} has dtype {meta['dtype']}; readable: "
                                 f"{', '.join(_SAFETENSORS_DTYPES)}")
            dtype = _SAFETENSORS_DTYPES[meta["dtype"]]
            if end == start:
                yield name, torch.empty(meta["shape"], dtype=dtype)
                continue
            f.seek(base + start)
            raw = torch.empty(end - start, dtype=torch.uint8)
            f.readinto(raw.numpy())  # straight into the tensor: one copy of the bytes, not three
            yield name, raw.view(dtype).reshape(meta["shape"])


def load_int8_encoder(cls, folder: Path, dtype: torch.dtype | None = None):
    """A transformers encoder whose Linear weights are quantized to int8 (torchao) one layer at a time as
    they are read, so the peak is the int8 model plus one layer, not the stored model.

    transformers' own ``quantization_config=TorchAoConfig(...)`` loads more than the stored weights first
    (measured by ``lindit deploy encoder-memory``), which defeats a low-memory load."""
    from accelerate import init_empty_weights
    from accelerate.utils import set_module_tensor_to_device
    from torch import nn
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    with init_empty_weights():
        model = cls(cls.config_class.from_pretrained(str(folder)))
    expected = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    unexpected = []
    for path in _weight_files(folder):
        for key, tensor in read_safetensors(path):
            if key not in expected:  # e.g. a full T5 checkpoint's decoder: ignored, as from_pretrained does
                unexpected.append(key)
                continue
            set_module_tensor_to_device(model, key, "cpu", value=tensor, dtype=dtype)  # else: the meta dtype
            module = model.get_submodule(key.rsplit(".", 1)[0])
            if isinstance(module, nn.Linear) and not any(p.is_meta for p in module.parameters()):
                quantize_(module, Int8WeightOnlyConfig())
                release_memory()  # the layer's full-precision copies go back to the OS, not to a fragmented heap
    if unexpected:
        logger.warning("%s: ignored %d weights %s has no place for, e.g. %s", folder, len(unexpected),
                       cls.__name__, unexpected[0])
    model.tie_weights()
    missing = sorted(name for name, p in model.named_parameters() if p.is_meta)
    if missing:
        raise ValueError(f"{folder} lacks weights for {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    return model.eval()
