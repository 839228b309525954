"""lindit.deploy.export: ONNX / torch.export at a fixed non-square grid, checked against eager."""

import pytest
import torch

import lindit
from conftest import leftovers
from lindit.deploy import export as export_mod
from lindit.deploy import quantize
from lindit.deploy.export import example_inputs, export_model, verify
from lindit.deploy.runtime import torch_export_runner
from tiny_models import BUILDERS


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """An MM-EDiT student exported once at a non-square latent of 18 x 26 (token grid 9 x 13)."""
    model = lindit.convert(BUILDERS["sd3"](), "mm_edit")
    folder = tmp_path_factory.mktemp("export")
    return model, folder / "mm.pt2", export_model(model, "torch-export", folder / "mm.pt2", (18, 26), prompt_tokens=5)


def test_torch_export_non_square_matches_eager_and_reloads_without_pickle(exported, monkeypatch):
    mm_edit, path, result = exported
    assert result.passed and result.max_abs_error <= result.tolerance and result.latent_hw == (18, 26)
    assert "tolerance" in result.summary() and leftovers(path.parent) == []
    real_load = torch.load

    def weights_only_load(*args, **kwargs):
        assert kwargs.get("weights_only") is True, "torch.export.load unpickled something"
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", weights_only_load)
    inputs = example_inputs(mm_edit, (18, 26), prompt_tokens=5, seed=11)
    with torch.no_grad():
        eager = mm_edit(**inputs, return_dict=False)[0]  # (B, C, 18, 26)
    assert torch.allclose(torch_export_runner(path)(inputs), eager, atol=1e-4, rtol=1e-3)


def test_verify_fails_for_a_different_model(exported):
    _, path, _ = exported
    other = lindit.convert(BUILDERS["sd3"](seed=1), "mm_edit")
    result = verify(other, "torch-export", path, (18, 26), prompt_tokens=5)
    assert not result.passed and result.max_abs_error > result.tolerance


def test_export_refuses_quantized_models_and_unknown_formats(tmp_path):
    model = lindit.convert(BUILDERS["dit"](), "lit")
    with pytest.raises(ValueError, match=r"cannot export a quantized model \(int8-weight\)"):
        export_model(quantize(model, "int8-weight"), "onnx", tmp_path / "q.onnx", (8, 8))
    with pytest.raises(ValueError, match="unknown export format 'tflite'; supported: onnx, torch-export"):
        export_model(model, "tflite", tmp_path / "q.tflite", (8, 8))
    assert list(tmp_path.iterdir()) == []


def test_onnx_failure_leaves_no_partial_files(tmp_path, monkeypatch):
    def half_written(model, args, f, **kwargs):
        open(f, "wb").write(b"partial")
        raise RuntimeError("translation failed")

    monkeypatch.setattr(export_mod.torch.onnx, "export", half_written)
    with pytest.raises(RuntimeError, match="translation failed"):
        export_model(lindit.convert(BUILDERS["dit"](), "lit"), "onnx", tmp_path / "m.onnx", (8, 8))
    assert list(tmp_path.iterdir()) == []


def test_noop_squeezes_are_dropped_and_real_ones_kept():
    class Squeezes(torch.nn.Module):
        def forward(self, x):  # x (2, 3, 1)
            return x.squeeze(1).squeeze(-1)  # squeeze(1) is a no-op in PyTorch and an error in ONNX

    program = torch.export.export(Squeezes(), (torch.randn(2, 3, 1),))
    assert export_mod.drop_noop_squeezes(program) == 1
    x = torch.randn(2, 3, 1)
    assert torch.equal(program.module()(x), x.squeeze(-1))
