"""lindit.save / lindit.load: exact round trips, strict loading, clear errors, no pickle."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import lindit
from lindit.integrations.diffusers.persistence import WEIGHTS_NAME
from tiny_models import BUILDERS, forward

CASES = [("pixart", "edit"), ("pixart", "sana"), ("pixart", "kv_compress"), ("sd3", "mm_edit_exact"),
         ("sd3", "sana_mmdit"), ("dit", "lit")]


@pytest.mark.parametrize("fam, method", CASES)
def test_round_trip_gives_identical_outputs(tmp_path, fam, method):
    student = lindit.convert(BUILDERS[fam](), method)
    lindit.save(student, tmp_path / "m")
    loaded = lindit.load(tmp_path / "m")
    assert loaded.lindit_config == student.lindit_config and not loaded.training
    hw = (18, 26) if fam != "dit" else (18, 18)
    assert torch.equal(forward(loaded, fam, *hw), forward(student, fam, *hw))
    assert set(loaded.state_dict()) == set(student.state_dict())
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "lindit.json", WEIGHTS_NAME]


def test_load_casts_dtype_and_keeps_loading_code_pickle_free(tmp_path):
    student = lindit.convert(BUILDERS["pixart"](), "edit")
    lindit.save(student, tmp_path / "m")
    loaded = lindit.load(tmp_path / "m", dtype=torch.bfloat16)
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
    out = forward(loaded.float(), "pixart", 16, 16)
    assert torch.isfinite(out).all()


def _tamper(path, fn):
    tensors = load_file(str(path / WEIGHTS_NAME))
    fn(tensors)
    save_file(tensors, str(path / WEIGHTS_NAME))


@pytest.fixture
def saved(tmp_path):
    lindit.save(lindit.convert(BUILDERS["pixart"](), "edit"), tmp_path / "m")
    return tmp_path / "m"


def test_missing_tensor_is_named(saved):
    _tamper(saved, lambda t: t.pop("transformer_blocks.1.attn1.inner.to_q.conv3x3.weight"))
    with pytest.raises(ValueError, match=r"missing tensors: transformer_blocks\.1\.attn1\.inner\.to_q\.conv3x3\.weight"):
        lindit.load(saved)


def test_extra_tensor_is_named(saved):
    _tamper(saved, lambda t: t.update({"transformer_blocks.0.attn1.inner.surplus": torch.zeros(3)}))
    with pytest.raises(ValueError, match=r"unexpected tensors: transformer_blocks\.0\.attn1\.inner\.surplus"):
        lindit.load(saved)


def test_misshaped_tensor_is_named(saved):
    _tamper(saved, lambda t: t.update({"proj_out.weight": torch.zeros(5, 5)}))
    with pytest.raises(ValueError, match=r"mis-shaped tensors: proj_out\.weight: stored \(5, 5\)"):
        lindit.load(saved)


def test_truncated_or_missing_files(saved):
    data = (saved / WEIGHTS_NAME).read_bytes()
    (saved / WEIGHTS_NAME).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        lindit.load(saved)
    (saved / "lindit.json").unlink()
    with pytest.raises(FileNotFoundError, match="lindit.json is missing"):
        lindit.load(saved)


def test_plan_and_config_must_agree(saved):
    plan = json.loads((saved / "lindit.json").read_text())
    (saved / "lindit.json").write_text(json.dumps({**plan, "family": "sd3"}))
    with pytest.raises(ValueError, match="does not match plan family sd3"):
        lindit.load(saved)


def test_save_refuses_teachers_and_existing_folders(saved):
    with pytest.raises(ValueError, match="lindit.convert"):
        lindit.save(BUILDERS["dit"](), saved.parent / "t")
    with pytest.raises(FileExistsError):
        lindit.save(lindit.load(saved), saved)
    lindit.save(lindit.load(saved), saved, overwrite=True)


def test_plain_diffusers_from_pretrained_does_not_silently_drop_lindit_layers(saved):
    from diffusers import PixArtTransformer2DModel

    with pytest.raises(OSError, match="no file named diffusion_pytorch_model"):
        PixArtTransformer2DModel.from_pretrained(saved, use_safetensors=True)
