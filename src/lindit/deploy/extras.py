"""Optional dependencies of deployment, imported only when a feature needs them.

torchao, onnx, onnxruntime and onnxscript are not needed to train or generate, so they are an extra
(``pip install lindit[deploy]``); a missing one is an ImportError that names the extra and the command.
"""

from __future__ import annotations

import importlib
import logging
import warnings

EXTRA = "deploy"
PACKAGES = {"torchao": "torchao", "onnx": "onnx", "onnxruntime": "onnxruntime", "onnxscript": "onnxscript"}


def require(module: str, feature: str):
    """Import ``module`` or raise an ImportError naming the extra that provides it."""
    try:
        if module == "torchao":
            return _import_torchao()
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"{feature} needs the '{PACKAGES.get(module, module)}' package ({err}); install the deploy extra: "
            f"pip install 'lindit[{EXTRA}]'"
        ) from None


def available(module: str) -> bool:
    try:
        require(module, "check")
        return True
    except ImportError:
        return False


def _import_torchao():
    """torchao logs a line per GPU-only kernel library it cannot load; on a CPU machine that is noise."""
    quiet = [logging.getLogger(name) for name in ("torchao", "torch.utils._pytree")]
    levels = [log.level for log in quiet]
    for log in quiet:
        log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return importlib.import_module("torchao.quantization")
    finally:
        for log, level in zip(quiet, levels):
            log.setLevel(level)
