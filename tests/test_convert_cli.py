"""``lindit convert`` loads a teacher from a local folder with diffusers' from_pretrained (offline)."""

import pytest

import lindit
from lindit.cli import main
from tiny_models import forward, tiny_pixart, tiny_sd3


def test_convert_cli_from_a_local_model_folder(tmp_path, capsys):
    tiny_pixart().save_pretrained(tmp_path / "teacher")
    code = main(["convert", "--teacher", str(tmp_path / "teacher"), "--method", "lit", "--inherit", "o",
                 "--option", "heads=1", "--out", str(tmp_path / "student")])
    assert code == 0
    out = capsys.readouterr().out
    assert "parameters: teacher" in out and "student" in out
    student = lindit.load(tmp_path / "student")
    assert student.lindit_config["options"] == {"heads": 1, "eps": "linfusion"} and student.lindit_config["inherit"] == "o"
    assert student.transformer_blocks[0].attn1.heads == 1
    assert forward(student, "pixart", 16, 24).shape == (2, 8, 16, 24)


def test_convert_cli_reads_a_pipeline_folder(tmp_path):
    (tmp_path / "pipe").mkdir()
    (tmp_path / "pipe" / "model_index.json").write_text("{}")
    tiny_sd3().save_pretrained(tmp_path / "pipe" / "transformer")
    assert main(["convert", "--teacher", str(tmp_path / "pipe"), "--out", str(tmp_path / "s")]) == 0
    assert lindit.load(tmp_path / "s").lindit_config["method"] == "mm_edit"


@pytest.mark.parametrize("argv, message", [
    (["--teacher", "{tmp}/nowhere", "--out", "{tmp}/x"], "no diffusers config.json"),
    (["--teacher", "{tmp}/teacher", "--method", "mm_edit", "--out", "{tmp}/x"], "valid methods: edit"),
    (["--teacher", "{tmp}/teacher", "--option", "eta", "--out", "{tmp}/x"], "KEY=VALUE"),
])
def test_convert_cli_errors_are_one_line(tmp_path, capsys, argv, message):
    tiny_pixart().save_pretrained(tmp_path / "teacher")
    (tmp_path / "nowhere").mkdir()
    assert main(["convert"] + [a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
