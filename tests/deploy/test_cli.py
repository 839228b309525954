"""``lindit quantize`` and ``lindit export``: outputs, one-line errors, atomic writes."""

import json

import pytest
import torch

import lindit
from conftest import leftovers
from lindit.cli import main
from lindit.deploy import export as export_mod
from lindit.deploy.export import example_inputs
from lindit.deploy.runtime import onnx_runner
from tiny_models import BUILDERS, forward


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    lindit.save(lindit.convert(BUILDERS["pixart"](), "edit"), root / "edit")
    return root / "edit"


def test_quantize_cli_writes_a_loadable_quantized_folder(saved, tmp_path, capsys):
    out = tmp_path / "edit-int8"
    assert main(["quantize", "--model", str(saved), "--scheme", "int8-dynamic", "--out", str(out)]) == 0
    assert "quantized 28 Linear layers with int8-dynamic (torchao)" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "diffusion_pytorch_model.safetensors"]
    assert leftovers(tmp_path) == []
    model = lindit.load(out)
    assert model.lindit_quantization["scheme"] == "int8-dynamic"
    assert torch.isfinite(forward(model, "pixart", 12, 20)).all()


@pytest.mark.parametrize("argv, message", [
    (["--scheme", "int3"], "unknown quantization scheme 'int3'; supported: int8-dynamic"),
    (["--scheme", "int4-weight", "--device", "mps"], "not supported on device 'mps'; supported:"),
    (["--scheme", "int8-weight", "--model", "{tmp}"], "is not a lindit student folder"),
])
def test_quantize_cli_errors_are_one_line_and_write_nothing(saved, tmp_path, capsys, argv, message):
    args = {"--model": str(saved), "--out": str(tmp_path / "q")}
    args.update(dict(zip(argv[::2], [a.format(tmp=tmp_path) for a in argv[1::2]])))
    assert main(["quantize"] + [x for kv in args.items() for x in kv]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0]
    assert not (tmp_path / "q").exists() and leftovers(tmp_path) == []


def test_quantize_cli_failure_while_writing_leaves_nothing(saved, tmp_path, monkeypatch, capsys):
    import lindit.integrations.diffusers.persistence as persistence

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(persistence, "save_file", broken)
    assert main(["quantize", "--model", str(saved), "--scheme", "int8-weight", "--out", str(tmp_path / "q")]) == 2
    assert capsys.readouterr().err.strip() == "lindit quantize: error: disk full"  # an environment error: one line
    assert list(tmp_path.iterdir()) == []


def test_export_cli_onnx_non_square_matches_eager(saved, tmp_path, capsys):
    out = tmp_path / "edit.onnx"
    argv = ["export", "--model", str(saved), "--format", "onnx", "--height", "144", "--width", "208",
            "--prompt-tokens", "5", "--out", str(out)]  # latent 18 x 26, token grid 9 x 13
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "onnx check ok" in printed and "tolerance" in printed
    report = json.loads(printed.split("export: ", 1)[1])
    assert report["passed"] and report["max_abs_error"] <= report["tolerance"] and report["latent_hw"] == [18, 26]
    assert leftovers(tmp_path) == []
    model = lindit.load(saved)  # an independent check, on inputs the export never saw
    inputs = example_inputs(model, (18, 26), prompt_tokens=5, seed=7)
    with torch.no_grad():
        eager = model(**inputs, added_cond_kwargs={"resolution": None, "aspect_ratio": None}, return_dict=False)[0]
    assert torch.allclose(onnx_runner(out)(inputs), eager, atol=1e-4, rtol=1e-3)


def test_export_cli_refuses_bad_requests_in_one_line(saved, tmp_path, capsys):
    base = ["export", "--model", str(saved), "--height", "144", "--width", "208"]
    assert main(base + ["--format", "onnx", "--out", str(tmp_path / "x.pt2")]) == 2
    assert main(base[:-2] + ["--width", "210", "--format", "onnx", "--out", str(tmp_path / "x.onnx")]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert "must end in .onnx" in lines[0] and "--width 210 is not a positive multiple of 16" in lines[1]
    assert list(tmp_path.iterdir()) == []


def test_export_failure_leaves_no_partial_file(saved, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(export_mod.torch.export, "save", broken)
    with pytest.raises(RuntimeError, match="exporter crashed"):
        main(["export", "--model", str(saved), "--format", "torch-export", "--height", "64", "--width", "64",
              "--prompt-tokens", "5", "--out", str(tmp_path / "m.pt2")])
    assert list(tmp_path.iterdir()) == []
