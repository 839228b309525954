"""``lindit generate --compile`` and ``--dtype bf16``, and ``lindit bench model --compile`` / ``--dtype bf16``.

torch.compile is forced to its ``eager`` backend here (Module.compile patched): dynamo still traces and guards
every call, without minutes of C++ code generation on two cores (tests/test_compile.py covers inductor).
"""

import json

import numpy as np
import pytest
import torch
from diffusers import PixArtSigmaPipeline
from PIL import Image

import lindit
from lindit.cli import main
from test_bench_model import tiny_presets  # noqa: F401  (fixture)
from tiny_pipelines import save_pixart_pipeline


@pytest.fixture
def compiled_calls(monkeypatch):
    """Module.compile with the eager backend; records the modules it compiled."""
    seen = []
    real = torch.nn.Module.compile

    def compile_eager(self, *args, **kwargs):
        seen.append(self)
        return real(self, *args, **{**kwargs, "backend": "eager"})

    monkeypatch.setattr(torch.nn.Module, "compile", compile_eager)
    torch._dynamo.reset()
    yield seen
    torch._dynamo.reset()


@pytest.fixture(scope="module")
def pixart(tmp_path_factory):
    root = tmp_path_factory.mktemp("pixart")
    base = save_pixart_pipeline(root / "base")
    lindit.save(lindit.convert(PixArtSigmaPipeline.from_pretrained(base).transformer, "edit"), root / "edit")
    return base, root / "edit"


def _pixels(path):
    return np.asarray(Image.open(path), dtype=np.int16)


def test_generate_compile_gives_the_same_images(pixart, tmp_path, compiled_calls, capsys):
    base, model = pixart
    common = ["generate", "--model", str(model), "--base", str(base), "--prompt", "a red circle", "--height", "24",
              "--width", "40", "--steps", "2", "--seed", "3"]
    assert main([*common, "--out", str(tmp_path / "eager.png")]) == 0
    assert not compiled_calls
    assert main([*common, "--compile", "--profile", "--out", str(tmp_path / "compiled.png")]) == 0
    assert len(compiled_calls) == 1 and hasattr(compiled_calls[0], "lindit_config")  # the transformer, in place
    assert np.abs(_pixels(tmp_path / "eager.png") - _pixels(tmp_path / "compiled.png")).max() <= 1
    assert '"compile": true' in capsys.readouterr().out


def test_generate_bf16_alias_runs_in_bfloat16(pixart, tmp_path, capsys):
    base, model = pixart
    common = ["generate", "--model", str(model), "--base", str(base), "--prompt", "a red circle", "--height", "24",
              "--width", "24", "--steps", "2", "--seed", "3", "--profile"]
    assert main([*common, "--dtype", "bf16", "--out", str(tmp_path / "bf16.png")]) == 0
    assert '"dtype": "bfloat16"' in capsys.readouterr().out
    assert main([*common, "--out", str(tmp_path / "fp32.png")]) == 0
    diff = np.abs(_pixels(tmp_path / "bf16.png") - _pixels(tmp_path / "fp32.png"))
    assert diff.mean() < 8  # the same image up to bf16 rounding over two steps, not another one
    assert main([*common, "--dtype", "fp8", "--out", str(tmp_path / "x.png")]) == 2
    assert "unknown dtype 'fp8'; valid: float32 (fp32), bfloat16 (bf16)" in capsys.readouterr().err


def test_generate_compile_refuses_low_memory(pixart, tmp_path, capsys):
    base, model = pixart
    code = main(["generate", "--model", str(model), "--base", str(base), "--prompt", "x", "--low-memory", "--compile",
                 "--out", str(tmp_path / "x.png")])
    assert code == 2 and "--low-memory and --compile do not combine" in capsys.readouterr().err


def test_bench_model_bf16_times_float32_beside_it_and_compiles(tmp_path, tiny_presets, compiled_calls):  # noqa: F811
    code = main(["bench", "model", "--presets", "tiny-pixart", "--methods", "teacher", "edit", "--resolutions", "64",
                 "--non-square", "none", "--repeats", "1", "--dtype", "bf16", "--compile", "--no-attention",
                 "--device", "cpu", "--out", str(tmp_path)])
    assert code == 0
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["settings"]["dtypes"] == ["float32", "bfloat16"] and data["settings"]["compile"]
    cells = {(c["method"], c["dtype"]): c for c in data["cells"]}
    assert set(cells) == {(m, d) for m in ("teacher", "edit") for d in ("float32", "bfloat16")}
    assert all(c["compile_s"] and all(v > 0 for v in c["compile_s"].values()) for c in cells.values())
    assert len(compiled_calls) == 4  # one block stub per (method, dtype), compiled once
    md = (tmp_path / "bench.md").read_text()
    assert "### bfloat16" in md and "float32 / bfloat16" in md and "torch.compiled" in md
    code = main(["bench", "model", "--presets", "tiny-pixart", "--methods", "edit", "--resolutions", "64",
                 "--non-square", "none", "--repeats", "1", "--dtype", "bf16", "--baseline", "none", "--no-attention",
                 "--device", "cpu", "--out", str(tmp_path / "only")])
    assert code == 0
    assert {c["dtype"] for c in json.loads((tmp_path / "only" / "bench.json").read_text())["cells"]} == {"bfloat16"}
