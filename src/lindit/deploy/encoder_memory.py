"""Peak memory of loading a text encoder as stored and with int8 weights (``--low-memory``'s stage 1).

    lindit deploy encoder-memory --dir /tmp/t5-xxl            # T5-XXL (PixArt-Sigma, SD3.5)

No T5-XXL weights can be downloaded here, and memory does not depend on weight values, so the encoder is
built from its published configuration with random weights and saved once (bfloat16 safetensors, as
PixArt-Sigma ships it). Each load runs in a fresh process and reports that process's peak resident set,
loading included: what a user's machine must hold.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


# google/t5-v1_1-xxl, the text encoder of PixArt-Sigma and SD3.5 (encoder only)
T5_XXL = dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
              feed_forward_proj="gated-gelu")

_LOAD = """
import json, sys, torch, transformers
from pathlib import Path
from torchao.quantization import Int8WeightOnlyConfig
if sys.argv[2] == "full":
    model = transformers.T5EncoderModel.from_pretrained(sys.argv[1], dtype=torch.bfloat16)
elif sys.argv[2] == "int8-transformers":  # transformers' own quantize-on-load
    model = transformers.T5EncoderModel.from_pretrained(
        sys.argv[1], dtype=torch.bfloat16, quantization_config=transformers.TorchAoConfig(Int8WeightOnlyConfig()))
else:  # what --low-memory does
    from lindit.deploy.text_encoders import load_int8_encoder
    model = load_int8_encoder(transformers.T5EncoderModel, Path(sys.argv[1]), torch.bfloat16)
with torch.no_grad():
    model(torch.ones(1, 300, dtype=torch.long))
# VmHWM: this process image's own peak (ru_maxrss would carry the parent's peak across exec)
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"peak_mb": int(hwm.split()[1]) / 1024}))
"""


WAYS = {"full": "bfloat16, as stored (`from_pretrained`)",
        "int8-transformers": "int8, transformers' `TorchAoConfig(Int8WeightOnlyConfig())`",
        "int8": "int8, lindit's layer-by-layer load (`--low-memory`)"}


def write_random_encoder(folder: Path, config: dict = T5_XXL) -> None:
    """A T5 encoder (default: T5-XXL) with random bfloat16 weights in ``folder`` (skipped when it exists)."""
    import torch
    import transformers

    if (folder / "config.json").is_file():
        return
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # built in bfloat16: 9.3 GB, not 19 GB of float32 first
    try:
        model = transformers.T5EncoderModel(transformers.T5Config(**config))
    finally:
        torch.set_default_dtype(default)
    model.save_pretrained(str(folder))  # transformers writes safetensors


def peak_mb(folder: Path, weights: str) -> float:
    out = subprocess.run([sys.executable, "-c", _LOAD, str(folder), weights], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_mb"]


def main(argv: list[str] | None = None) -> int:
    """``python -m lindit.deploy.encoder_memory ARGS``, kept for old scripts: ``lindit deploy encoder-memory ARGS``."""
    from ..cli import forward

    return forward(["deploy", "encoder-memory"], argv)


if __name__ == "__main__":
    raise SystemExit(main())
