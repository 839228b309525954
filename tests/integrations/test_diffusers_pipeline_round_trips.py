"""Stock diffusers pipelines with a student: lindit.convert_pipeline, pipe.save_pretrained, then
DiffusionPipeline.from_pretrained (after `import lindit`) gives the lindit class back, with the same images."""

import json

import pytest
import torch
from diffusers import DiffusionPipeline

import lindit
from diffusers_cases import ATOL
from tiny_pipelines import save_dit_pipeline, save_pixart_pipeline, save_sd3_pipeline


def _pixart_call(pipe):
    return pipe("a red circle at the top left", height=24, width=40, num_inference_steps=2,
                use_resolution_binning=False, output_type="pt", generator=torch.Generator().manual_seed(0)).images


def _sd3_call(pipe):
    return pipe("a blue square", height=40, width=24, num_inference_steps=2, max_sequence_length=8,
                output_type="pt", generator=torch.Generator().manual_seed(0)).images


def _dit_call(pipe):
    return torch.from_numpy(pipe(class_labels=[1, 3], num_inference_steps=2, guidance_scale=1.0, output_type="np",
                                 generator=torch.Generator().manual_seed(0)).images)


PIPELINES = {  # name -> (folder writer, method, call)
    "PixArtSigmaPipeline": (save_pixart_pipeline, "edit", _pixart_call),
    "StableDiffusion3Pipeline": (save_sd3_pipeline, "mm_edit", _sd3_call),
    "DiTPipeline": (save_dit_pipeline, "lit", _dit_call),
}


@pytest.mark.parametrize("name", PIPELINES)
def test_convert_pipeline_save_and_load(tmp_path, name):
    save, method, call = PIPELINES[name]
    pipe = DiffusionPipeline.from_pretrained(save(tmp_path / "teacher"))
    assert type(pipe).__name__ == name
    teacher_images = call(pipe)
    assert lindit.convert_pipeline(pipe, method) is pipe
    student = pipe.transformer
    assert student.lindit_config["method"] == method and type(student).__module__ == "lindit.students"
    images = call(pipe)
    assert images.shape == teacher_images.shape and not torch.allclose(images, teacher_images)

    pipe.save_pretrained(tmp_path / "student")
    index = json.loads((tmp_path / "student" / "model_index.json").read_text())
    assert index["transformer"] == ["lindit.students", type(student).__name__]
    assert (tmp_path / "student" / "transformer" / "README.md").is_file()  # the model card
    reloaded = DiffusionPipeline.from_pretrained(tmp_path / "student")
    assert type(reloaded).__name__ == name and type(reloaded.transformer) is type(student)
    assert reloaded.transformer.lindit_config == student.lindit_config
    torch.testing.assert_close(call(reloaded), images, rtol=0, atol=ATOL)
    same_class = type(pipe).from_pretrained(tmp_path / "student")  # the pipeline's own class reads it too
    assert type(same_class.transformer) is type(student)
    assert type(lindit.load(tmp_path / "student")) is type(student)  # lindit.load reads transformer/


def test_the_teachers_class_refuses_the_transformer_of_a_student_pipeline(tmp_path):
    """Passing the teacher's class for the transformer is the silent failure the issue describes: refused."""
    from diffusers import PixArtTransformer2DModel

    pipe = lindit.convert_pipeline(DiffusionPipeline.from_pretrained(save_pixart_pipeline(tmp_path / "t")), "sana")
    pipe.save_pretrained(tmp_path / "s")
    with pytest.raises(ValueError, match="LinditPixArtTransformer2DModel.from_pretrained"):
        PixArtTransformer2DModel.from_pretrained(tmp_path / "s", subfolder="transformer")


def test_pipeline_loading_options_reach_the_student(tmp_path):
    pipe = lindit.convert_pipeline(DiffusionPipeline.from_pretrained(save_pixart_pipeline(tmp_path / "t")), "sana")
    pipe.save_pretrained(tmp_path / "s", variant="fp16", max_shard_size="40KB")  # as it saves the teacher's
    files = [p.name for p in (tmp_path / "s" / "transformer").iterdir()]
    assert "diffusion_pytorch_model.safetensors.index.fp16.json" in files
    assert all("fp16" in name for name in files if name.startswith("diffusion_pytorch_model"))
    loaded = DiffusionPipeline.from_pretrained(tmp_path / "s", variant="fp16", dtype=torch.bfloat16)
    assert type(loaded.transformer) is type(pipe.transformer) and loaded.transformer.dtype == torch.bfloat16
    images = loaded("a red circle", height=24, width=40, num_inference_steps=2, use_resolution_binning=False,
                    output_type="pt").images
    assert images.shape == (1, 3, 24, 40) and torch.isfinite(images).all()
