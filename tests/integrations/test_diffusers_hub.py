"""Hub ids offline: a huggingface_hub cache prepared in the test (models--org--name/snapshots/<sha>, refs/main),
HF_HUB_OFFLINE=1; lindit.load, the student classes, pipelines, LoRAs and `lindit generate --model ORG/NAME`
read it as they would read the hub. And the model card a student carries there."""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import pytest
import torch
from diffusers import DiffusionPipeline
from PIL import Image

import lindit
from diffusers_cases import ATOL, Case, assert_same_weights
from lindit.cli import main
from tiny_pipelines import save_pixart_pipeline

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """publish(folder, "org/name") puts a folder into an offline hub cache, as a download would have."""
    cache = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub read the variables at import: its module constants are what its functions consult
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    def publish(folder: Path, repo_id: str) -> str:
        repo = cache / f"models--{repo_id.replace('/', '--')}"
        shutil.copytree(folder, repo / "snapshots" / SHA)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(SHA)
        return repo_id

    return publish


def test_lindit_load_and_from_pretrained_read_a_hub_id(tmp_path, hub):
    case = Case("pixart", "edit")
    student = case.build()
    lindit.save(student, tmp_path / "m", max_shard_size="40KB")  # sharded, as large checkpoints are
    assert (tmp_path / "m" / "diffusion_pytorch_model.safetensors.index.json").is_file()
    repo = hub(tmp_path / "m", "some-org/tiny-edit")
    # diffusers 0.42 asks the hub for a sharded checkpoint's file list unless local_files_only (teachers too)
    for loaded in (lindit.load(repo), type(student).from_pretrained(repo, local_files_only=True)):
        assert_same_weights(student, loaded)
        torch.testing.assert_close(case.run(loaded), case.run(student), rtol=0, atol=ATOL)
    with pytest.raises(ValueError, match="'some-org/not-there' is not in the local Hugging Face cache"):
        lindit.load("some-org/not-there")  # not in the cache, and offline: one line (lindit.hub)


def test_a_pipeline_repository_with_the_student_in_transformer(tmp_path, hub):
    pipe = lindit.convert_pipeline(DiffusionPipeline.from_pretrained(save_pixart_pipeline(tmp_path / "t")), "edit")
    pipe.save_pretrained(tmp_path / "p")
    repo = hub(tmp_path / "p", "some-org/tiny-edit-pipeline")
    assert_same_weights(pipe.transformer, lindit.load(repo))  # read from transformer/
    assert_same_weights(pipe.transformer, DiffusionPipeline.from_pretrained(repo).transformer)
    out = tmp_path / "img.png"
    assert main(["generate", "--model", repo, "--base", repo, "--prompt", "a red circle", "--height", "24",
                 "--width", "40", "--steps", "2", "--out", str(out)]) == 0
    assert Image.open(out).size == (40, 24)


def test_generate_with_a_hub_student_of_a_builtin_teacher(tmp_path, hub):
    from lindit.world.teachers import load_builtin_teacher

    lindit.save(lindit.convert(load_builtin_teacher("pixart"), "edit"), tmp_path / "m")
    repo = hub(tmp_path / "m", "some-org/tiny-edit")
    out = tmp_path / "img.png"
    assert main(["generate", "--model", repo, "--base", "builtin:pixart", "--prompt", "a red circle",
                 "--height", "32", "--width", "32", "--steps", "2", "--out", str(out)]) == 0
    image = Image.open(out)
    assert image.size == (32, 32) and "(edit)" in image.text["model"]


def test_a_lora_from_a_hub_id(tmp_path, hub):
    from peft import LoraConfig

    student = Case("sd3", "mm_edit").build()
    student.add_adapter(LoraConfig(r=4, lora_alpha=8, target_modules=["to_q", "to_v"], init_lora_weights=False))
    student.save_lora_adapter(tmp_path / "lora")
    expected = Case("sd3").run(student)
    student.unload_lora()
    student.load_lora_adapter(hub(tmp_path / "lora", "some-org/tiny-lora"), prefix=None)
    torch.testing.assert_close(Case("sd3").run(student), expected, rtol=0, atol=ATOL)


def test_push_to_hub_uploads_the_student_with_its_card(tmp_path, hub, monkeypatch):
    """push_to_hub and save_pretrained(push_to_hub=True), with the network replaced by a copy into the cache;
    the card names the repository (not the local folder) and lindit.load reads the upload back."""
    case = Case("sd3", "mm_edit")
    student = case.build()
    monkeypatch.setattr(huggingface_hub, "create_repo", lambda repo_id, **_: SimpleNamespace(repo_id=repo_id))
    monkeypatch.setattr(type(student), "_upload_folder", lambda self, folder, repo_id, **_: hub(Path(folder), repo_id))
    student.push_to_hub("some-org/pushed")
    student.save_pretrained(tmp_path / "local", push_to_hub=True, repo_id="some-org/saved-and-pushed")
    for repo in ("some-org/pushed", "some-org/saved-and-pushed"):
        card = huggingface_hub.ModelCard.load(repo)  # offline: from the cache
        assert card.data.library_name == "diffusers" and "lindit" in card.data.tags
        assert f'lindit.load("{repo}")' in card.text and "mm_edit" in card.text
        assert_same_weights(student.eval(), lindit.load(repo))


def test_the_card_names_a_hub_teacher(tmp_path, hub):
    Case("dit").build().save_pretrained(tmp_path / "t")
    teacher = Case("dit").teacher_class.from_pretrained(hub(tmp_path / "t", "some-org/tiny-dit"))
    lindit.save(lindit.convert(teacher, "lit"), tmp_path / "m")
    card = huggingface_hub.ModelCard.load(tmp_path / "m" / "README.md")
    assert card.data.base_model == "some-org/tiny-dit"
    assert "# lit student of some-org/tiny-dit" in card.text and "LiT Sec. 3" in card.text
    assert 'DiTPipeline.from_pretrained("some-org/tiny-dit"' in card.text and "class_labels=" in card.text


def test_the_model_card_describes_the_student(tmp_path):
    student = Case("pixart", "sana").build(layers=[1], inherit="qv")
    lindit.save(student, tmp_path / "m")
    text = (tmp_path / "m" / "README.md").read_text()
    front = text.split("---")[1]
    assert "library_name: diffusers" in front and "- lindit" in front and "- sana" in front
    assert "# sana student of" in text
    assert "EDiT Table 1 (SANA-DiT baseline)" in text and "Becker et al." in text  # method and paper
    assert "Converted blocks: 1 of 2 ([1])" in text and "Inherited teacher projections: qv" in text
    assert f'lindit.load("{tmp_path / "m"}")' in text and "PixArtSigmaPipeline.from_pretrained" in text
    assert "Not recorded" in text  # saved right after conversion: no training recipe


def test_the_card_of_a_distilled_student_records_its_recipe(tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "training"))
    from training_helpers import tiny_dict

    from lindit.training import distill, parse_config

    out = distill(parse_config(tiny_dict("pixart", "edit", steps=2)), tmp_path / "run")
    text = (Path(out) / "README.md").read_text()
    recipe = json.loads(text.split("## Training")[1].split("```json")[1].split("```")[0])
    assert recipe["model"]["method"] == "edit" and recipe["stages"][0]["steps"] == 2
    assert "Distilled with `lindit distill`" in text
