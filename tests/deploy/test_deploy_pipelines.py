"""Quantized models in the stock pipelines, image quality against the float model, --low-memory."""

import gc
import json
import math

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, DiTPipeline, PixArtSigmaPipeline, PixArtTransformer2DModel
from PIL import Image
from transformers import T5EncoderModel

import lindit
import lindit.models
from lindit.cli import main
from lindit.deploy import quantize
from lindit.deploy.fidelity import image_difference, quantization_quality
from lindit.generate import Request, run
from tiny_pipelines import save_dit_pipeline, save_pixart_pipeline


@pytest.fixture(scope="module")
def pixart(tmp_path_factory):
    root = tmp_path_factory.mktemp("pixart")
    base = save_pixart_pipeline(root / "base")
    student = lindit.convert(PixArtSigmaPipeline.from_pretrained(base).transformer, "edit")
    lindit.save(student, root / "edit")
    lindit.save(quantize(student, "int8-dynamic"), root / "edit-int8")
    return base, root


def test_saved_quantized_model_runs_in_the_stock_pipeline(pixart):
    base, root = pixart
    pipe = lindit.pipeline(str(root / "edit-int8"), base=str(base))
    assert isinstance(pipe, PixArtSigmaPipeline) and pipe.transformer.lindit_quantization["scheme"] == "int8-dynamic"
    images = run(pipe, Request(["a red circle"], height=24, width=40, steps=2, seed=1))
    assert images[0].size == (40, 24) and np.asarray(images[0]).std() > 0


def test_quality_is_mse_and_psnr_against_the_float_model(pixart):
    base, root = pixart
    pipe = lindit.pipeline(str(root / "edit"), base=str(base))
    float_model = pipe.transformer
    req = Request(["a blue square at the top"], height=24, width=24, steps=2, seed=3)
    rows = quantization_quality(pipe, req, ["int8-weight", "int8-dynamic@torch.ao", "int4-weight"], group_size=8)
    assert pipe.transformer is float_model
    assert [(r.scheme, r.backend) for r in rows] == [("int8-weight", "torchao"), ("int8-dynamic", "torch.ao"),
                                                     ("int4-weight", "torchao")]
    for r in rows:  # quantization changes the pixels a little, never a lot (tiny random models)
        assert 0 < r.mse < 0.01 and math.isclose(r.psnr_db, 10 * math.log10(1 / r.mse)) and r.psnr_db > 20
    assert rows[2].mse > rows[0].mse  # 4 bits move the image more than 8


def test_image_difference_of_known_images():
    black, grey = Image.new("RGB", (4, 2)), Image.new("RGB", (4, 2), (51, 51, 51))
    assert image_difference([black], [black]) == (0.0, math.inf, 0.0)
    mse, psnr, worst = image_difference([black], [grey])
    assert math.isclose(mse, 0.04) and math.isclose(psnr, 10 * math.log10(25)) and math.isclose(worst, 0.2)
    with pytest.raises(ValueError, match="sizes differ"):
        image_difference([black], [Image.new("RGB", (2, 2))])


def _alive(cls) -> bool:
    gc.collect()
    return any(type(o) is cls for o in gc.get_objects())


def test_low_memory_frees_each_stage_and_matches_the_normal_run(pixart, tmp_path, monkeypatch, capsys):
    base, root = pixart
    seen = {}
    real_load, real_tiled = lindit.models.load_model, AutoencoderKL.tiled_decode

    def load_model(*args, **kwargs):
        seen["text encoder alive at transformer load"] = _alive(T5EncoderModel)
        return real_load(*args, **kwargs)

    def tiled_decode(self, *args, **kwargs):
        seen["transformer alive at decode"] = _alive(PixArtTransformer2DModel)
        return real_tiled(self, *args, **kwargs)

    monkeypatch.setattr(lindit.models, "load_model", load_model)
    monkeypatch.setattr(AutoencoderKL, "tiled_decode", tiled_decode)
    argv = ["generate", "--model", str(root / "edit"), "--base", str(base), "--prompt", "a red circle",
            "--height", "24", "--width", "40", "--steps", "2", "--seed", "5", "--low-memory", "--profile"]
    assert main(argv + ["--text-encoder-weights", "full", "--out", str(tmp_path / "low.png")]) == 0
    assert seen == {"text encoder alive at transformer load": False, "transformer alive at decode": False}
    profile = json.loads(capsys.readouterr().out.split("profile: ", 1)[1])
    assert profile["low_memory"] is True and profile["max_rss_mb"] > 0
    monkeypatch.undo()
    pipe = lindit.pipeline(str(root / "edit"), base=str(base))
    reference = run(pipe, Request(["a red circle"], height=24, width=40, steps=2, seed=5), tiled_vae=True)[0]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "low.png")), np.asarray(reference))


def test_low_memory_loads_text_encoders_with_int8_weights_by_default(pixart, tmp_path, monkeypatch):
    from lindit.deploy.low_memory import StagedGeneration

    base, root = pixart
    loaded = {}
    real = StagedGeneration._int8_text_encoders

    def spy(self):
        loaded.update(real(self))
        return loaded

    monkeypatch.setattr(StagedGeneration, "_int8_text_encoders", spy)
    argv = ["generate", "--model", str(root / "edit"), "--base", str(base), "--prompt", "a red circle",
            "--height", "24", "--width", "40", "--steps", "2", "--seed", "5", "--low-memory"]
    assert main(argv + ["--out", str(tmp_path / "int8.png")]) == 0
    q_weight = loaded["text_encoder"].encoder.block[0].layer[0].SelfAttention.q.weight
    assert set(loaded) == {"text_encoder"} and "Int8" in type(q_weight).__name__
    pipe = lindit.pipeline(str(root / "edit"), base=str(base))
    reference = run(pipe, Request(["a red circle"], height=24, width=40, steps=2, seed=5), tiled_vae=True)[0]
    mse, psnr, _ = image_difference([reference], [Image.open(tmp_path / "int8.png")])
    assert 0 < mse and psnr > 30, psnr  # int8 prompt embeddings move the image, a little


def test_low_memory_dit_and_bad_combinations(tmp_path, capsys):
    base = save_dit_pipeline(tmp_path / "dit")
    lindit.save(lindit.convert(DiTPipeline.from_pretrained(base).transformer, "lit"), tmp_path / "lit")
    common = ["generate", "--model", str(tmp_path / "lit"), "--class-label", "3", "--steps", "2", "--guidance", "1"]
    assert main(common + ["--base", str(base), "--low-memory", "--out", str(tmp_path / "d.png")]) == 0
    assert Image.open(tmp_path / "d.png").size == (16, 16)  # the model's trained size, read from the configs
    assert main(common + ["--low-memory", "--out", str(tmp_path / "x.png")]) == 2
    assert main(common + ["--base", str(base), "--low-memory", "--parallel", "2", "--out", str(tmp_path / "x.png")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert "--low-memory loads the pipeline component by component: pass --base" in errors[0]
    assert "--low-memory and --parallel do not combine" in errors[1]
    assert not (tmp_path / "x.png").exists()


def test_world_quality_scores_each_scheme_with_the_demo_metrics(tmp_path):
    from lindit.deploy.fidelity import main

    assert main(["--world", "dit", "--model", "builtin:dit", "--n", "6", "--steps", "4", "--schemes",
                 "int8-weight", "int4-weight", "--group-size", "8", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "quality.json").read_text())["rows"]
    assert [r["scheme"] for r in rows] == ["float", "int8-weight", "int4-weight"]
    assert rows[0]["mse_to_teacher"] == 0.0 and rows[0]["mse_unpaired"] > 0
    for r in rows:
        assert r["fid"] > 0 and 0.0 <= r["adherence"] <= 1.0
    # quantized images differ from the float model's: 8-bit weights barely (45 dB measured), 4 bits more
    assert 0 < rows[1]["mse_to_teacher"] < rows[2]["mse_to_teacher"] and rows[1]["psnr_to_teacher"] > 35
    assert "| int4-weight | torchao |" in (tmp_path / "quality.md").read_text()


@pytest.mark.slow
def test_int8_text_encoder_load_peaks_lower_than_the_stored_weights(tmp_path):
    from lindit.deploy.encoder_memory import T5_XXL, peak_mb, write_random_encoder

    # a 12-layer T5 of width 1024 (~300 M parameters, 600 MB in bfloat16): the int8 load must not hold them all
    write_random_encoder(tmp_path / "t5", {**T5_XXL, "d_model": 1024, "d_ff": 4096, "num_heads": 16,
                                           "num_layers": 12})
    full, int8 = peak_mb(tmp_path / "t5", "full"), peak_mb(tmp_path / "t5", "int8")
    assert int8 + 50 < full, (full, int8)  # 470 MB stored; int8 saves ~230 MB, torchao imports cost ~120


def test_fidelity_runs_as_a_module_without_runpy_warning():
    # `python -m lindit.deploy.fidelity` (`lindit deploy quality`): the package must not import the module first.
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-m", "lindit.deploy.fidelity", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--world" in done.stdout
    from lindit.deploy import image_difference, quantization_quality, quantize

    assert callable(image_difference) and callable(quantization_quality) and callable(quantize)
