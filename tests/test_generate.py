"""``lindit generate`` and ``lindit.pipeline`` with offline tiny pipeline folders."""

import diffusers
import pytest
from diffusers import PixArtSigmaPipeline
from PIL import Image

import lindit
from lindit.cli import main
from lindit.integrations.diffusers.families import FAMILIES
from tiny_pipelines import save_dit_pipeline, save_pixart_pipeline


@pytest.fixture(scope="module")
def pixart(tmp_path_factory):
    root = tmp_path_factory.mktemp("pixart")
    base = save_pixart_pipeline(root / "base")
    teacher = PixArtSigmaPipeline.from_pretrained(base).transformer
    lindit.save(lindit.convert(teacher, "edit"), root / "edit")
    return base, root / "edit"



@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_each_family_names_the_stock_pipeline_that_generate_builds(name):
    cls = FAMILIES[name].pipeline_class()
    assert issubclass(cls, diffusers.DiffusionPipeline) and cls.__name__ == FAMILIES[name].pipeline

def test_generate_writes_pngs_with_metadata(pixart, tmp_path, capsys):
    base, model = pixart
    code = main(["generate", "--model", str(model), "--base", str(base), "--prompt", "a red circle at the top left",
                 "--height", "24", "--width", "40", "--steps", "2", "--seed", "7", "--batch", "2",
                 "--out", str(tmp_path / "img.png"), "--profile"])
    assert code == 0
    out = capsys.readouterr().out
    assert "profile:" in out and "peak_memory_mb" in out
    for i in range(2):
        image = Image.open(tmp_path / f"img_{i}.png")
        assert image.size == (40, 24)
        assert image.text["prompt"] == "a red circle at the top left" and image.text["seed"] == "7"
        assert image.text["steps"] == "2" and "(edit)" in image.text["model"]


def test_pipeline_python_api(pixart):
    base, model = pixart
    pipe = lindit.pipeline(str(model), base=str(base))
    assert isinstance(pipe, PixArtSigmaPipeline) and pipe.transformer.lindit_config["method"] == "edit"
    image = pipe("a blue square", height=40, width=24, num_inference_steps=2, use_resolution_binning=False).images[0]
    assert image.size == (24, 40)


@pytest.mark.parametrize("extra, message", [
    (["--height", "25"], "height 25 is not a positive multiple of 8"),
    (["--steps", "0"], "--steps: must be a positive integer"),
    (["--model", "{tmp}/missing"], "no model at"),
    (["--base", None], "holds only the transformer; pass base="),
    (["--base", "{tmp}"], "not a diffusers pipeline folder"),
])
def test_generate_bad_input_is_one_line_and_writes_nothing(pixart, tmp_path, capsys, extra, message):
    base, model = pixart
    argv = {"--model": str(model), "--base": str(base), "--prompt": "a red circle", "--steps": "2",
            "--out": str(tmp_path / "x.png"), "--height": "24", "--width": "24"}
    for key, value in zip(extra[::2], extra[1::2]):
        argv[key] = None if value is None else value.format(tmp=tmp_path)
    flat = [x for k, v in argv.items() if v is not None for x in (k, v)]
    assert main(["generate"] + flat) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0]  # one line (loading progress bars aside)
    assert not (tmp_path / "x.png").exists()


def test_generate_dit_with_class_labels_at_a_new_square_size(tmp_path):
    base = save_dit_pipeline(tmp_path / "dit")
    from diffusers import DiTPipeline

    lindit.save(lindit.convert(DiTPipeline.from_pretrained(base).transformer, "lit"), tmp_path / "lit")
    assert main(["generate", "--model", str(tmp_path / "lit"), "--base", str(base), "--class-label", "3",
                 "--height", "24", "--width", "24", "--steps", "2", "--guidance", "1", "--out",
                 str(tmp_path / "d.png")]) == 0
    image = Image.open(tmp_path / "d.png")
    assert image.size == (24, 24) and image.text["class_label"] == "3"


@pytest.mark.slow
def test_generate_parallel_matches_one_process(pixart, tmp_path):
    import numpy as np

    base, model = pixart
    common = ["--model", str(model), "--base", str(base), "--prompt", "a red circle", "--height", "40",
              "--width", "24", "--steps", "2", "--seed", "3"]
    assert main(["generate", *common, "--out", str(tmp_path / "one.png")]) == 0
    assert main(["generate", *common, "--parallel", "2", "--out", str(tmp_path / "two.png")]) == 0
    one, two = (np.asarray(Image.open(tmp_path / f"{n}.png"), dtype=np.int16) for n in ("one", "two"))
    assert np.abs(one - two).max() <= 1  # 8-bit images of float32-rounding-equal latents
    assert "2 processes" in Image.open(tmp_path / "two.png").text["model"]
