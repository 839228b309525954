"""``lindit diagnose``: the block split against diffusers' own joint attention, the recorded student calls,
the per-layer and per-block measurements, and the command."""

import json

import pytest
import torch

from lindit import functional
from lindit.diagnose.blocks import Rows, error_terms, student_rows, teacher_rows
from lindit.diagnose.run import builtin_config, with_plan
from lindit.diagnose.taps import tap_attention
from lindit.integrations.diffusers import convert, converted_layers
from lindit.modules.grid import merge_heads
from lindit.training.hooks import FeatureCapture
from tests.tiny_models import inputs, tiny_sd3


def _teacher_layer_io(model, name):
    with FeatureCapture(model, [name], inputs=True) as cap, torch.no_grad():
        with cap.recording() as feats:
            model(**inputs("sd3", 8, 6), return_dict=False)
        args, kwargs = cap.inputs[name]
    return kwargs, feats[name]


def test_teacher_rows_rebuild_diffusers_joint_attention_from_its_four_blocks():
    teacher = tiny_sd3()
    kwargs, (image, prompt) = _teacher_layer_io(teacher, "transformer_blocks.1.attn")
    attn = teacher.transformer_blocks[1].attn
    rows = teacher_rows(attn, kwargs["hidden_states"], kwargs["encoder_hidden_states"])
    with torch.no_grad():
        torch.testing.assert_close(attn.to_out[0](merge_heads(rows["image"].out)), image, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(attn.to_add_out(merge_heads(rows["prompt"].out)), prompt, rtol=1e-4, atol=1e-5)
    # eta is each query's softmax mass on the image keys, read off the explicit joint attention matrix
    from lindit.modules.grid import split_heads

    with torch.no_grad():
        x, c = kwargs["hidden_states"], kwargs["encoder_hidden_states"]
        q = torch.cat([attn.norm_q(split_heads(attn.to_q(x), 2)), attn.norm_added_q(split_heads(attn.add_q_proj(c), 2))], 2)
        k = torch.cat([attn.norm_k(split_heads(attn.to_k(x), 2)), attn.norm_added_k(split_heads(attn.add_k_proj(c), 2))], 2)
        p = torch.softmax(q @ k.transpose(-2, -1) / 8**0.5, dim=-1)  # (B, H, N_I + N_P, N_I + N_P)
    n_img = x.shape[1]
    torch.testing.assert_close(rows["image"].eta, p[:, :, :n_img, :n_img].sum(-1, keepdim=True))
    torch.testing.assert_close(rows["prompt"].eta, p[:, :, n_img:, :n_img].sum(-1, keepdim=True))


@pytest.mark.parametrize("options", [{}, {"eta": "exact"}, {"eta": "moments", "softmax_qk": "raw"},
                                     {"eta": "learned"}])
def test_student_rows_recover_the_hybrid_layers_own_output_and_eta(options):
    student = convert(tiny_sd3(), "mm_edit", inherit="qkvo", **options).eval()
    layers = converted_layers(student, attention_only=True)
    with tap_attention(layers) as calls, torch.no_grad():
        student(**inputs("sd3", 8, 6), return_dict=False)
    assert functional.hybrid_attention.__name__ == "hybrid_attention"  # unwrapped again
    import lindit.modules.joint as joint

    assert joint.hybrid_attention is functional.hybrid_attention and joint.softmax_attention is functional.softmax_attention
    hybrid = next(c for c in calls["transformer_blocks.1.attn"] if c.name == "hybrid_attention")
    rows = student_rows(calls["transformer_blocks.1.attn"])
    torch.testing.assert_close(rows["image"].out, hybrid.result[0].float(), rtol=1e-4, atol=1e-6)
    prompt_call = next(c for c in calls["transformer_blocks.1.attn"] if c.name == "joint_prompt_attention")
    torch.testing.assert_close(rows["prompt"].out, prompt_call.result.float(), rtol=1e-4, atol=1e-6)
    if not options:
        torch.testing.assert_close(rows["image"].eta, torch.full_like(rows["image"].eta, 12 / (12 + 5)))  # N_I / (N_I + N_P)
    assert "prompt" not in student_rows(calls["transformer_blocks.2.attn"])  # the context-pre-only block
    assert student_rows(calls["transformer_blocks.0.attn2"]) is None  # image-only self-attention


def test_error_terms_add_up_to_the_rows_error():
    g = torch.Generator().manual_seed(0)
    rand = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    s = Rows(rand(2, 3, 5, 4), rand(2, 3, 5, 4), torch.rand(2, 3, 5, 1, generator=g))
    t = Rows(rand(2, 3, 5, 4), rand(2, 3, 5, 4), torch.rand(2, 3, 5, 1, generator=g))
    terms = error_terms(s, t)
    torch.testing.assert_close(terms["first"] + terms["second"] + terms["eta"], terms["total"])
    torch.testing.assert_close(terms["total"], s.out - t.out)


def _components(plan):
    from lindit.diagnose.probes import make_probes
    from lindit.training.components import build_components

    comp = build_components(with_plan(builtin_config("mmdit" if "mm" in plan["method"] else "dit"), plan),
                            torch.device("cpu"))
    return comp, comp.teachers.load(-1), comp.student.eval(), make_probes(comp, 16)


def test_layer_errors_find_the_inherited_blocks_exact_and_the_moment_eta_close():
    from lindit.diagnose.layers import layer_errors

    found = {}
    for eta in ("approx", "moments"):
        comp, teacher, student, probes = _components({"method": "mm_edit", "inherit": "qkvo", "eta": eta,
                                                      "softmax_qk": "raw"})
        found[eta] = layer_errors(comp, teacher, student, probes)
    for name in ("transformer_blocks.1.attn", "transformer_blocks.2.attn"):
        approx, moments = found["approx"][name]["blocks"], found["moments"][name]["blocks"]
        assert approx["prompt"]["second"] < 1e-10  # prompt-prompt: inherited projections, exact softmax
        assert approx["image"]["second"] < 1e-10  # image-prompt: raw queries on inherited prompt keys
        assert approx["image"]["eta"] > 0.3 and moments["image"]["eta"] < 0.1 * approx["image"]["eta"]
        assert 0 < found["approx"][name]["image"] and "prompt" in found["approx"][name]
    assert set(found["approx"]["transformer_blocks.0.attn2"]) == {"image"}


def test_keeping_a_block_in_softmax_is_converting_the_other_blocks_alone():
    from lindit.diagnose.swap import alone, keep_softmax
    from lindit.integrations.diffusers import Plan

    comp, teacher, student, probes = _components({"method": "lit", "inherit": "qkvo", "heads": 2, "layers": [0, 1]})
    plan = Plan(**student.lindit_config)
    kept = keep_softmax(comp, teacher, student, plan, probes[:1])
    single = alone(comp, teacher, plan, probes[:1], student)
    assert kept[0] == pytest.approx(single[1]) and kept[1] == pytest.approx(single[0])
    assert single[0]["guidance"] > 0 and single[0] != single[1]


def test_diagnose_command_writes_its_report_and_refuses_bad_input_before_work(tmp_path, capsys):
    from lindit.cli import main

    out = tmp_path / "diag"
    argv = ["diagnose", "--teacher", "builtin:dit", "--method", "lit", "--option", "heads=2", "--inherit", "qkvo",
            "--layers", "1", "--n", "16", "--out", str(out)]
    assert main(argv) == 0
    report = json.loads((out / "diagnosis.json").read_text())
    assert report["plan"]["layers"] == [1] and report["plan"]["options"] == {"heads": 2, "eps": "linfusion"}
    assert list(report["fresh"]["layers"]) == ["transformer_blocks.1.attn1"]
    assert "| transformer_blocks.1.attn1 |" in (out / "diagnosis.md").read_text()
    capsys.readouterr()
    for bad, words in ((argv, "diagnosis.json exists"),
                       (["diagnose", "--teacher", "builtin:nope", "--method", "lit", "--out", str(tmp_path / "a")],
                        "unknown built-in teacher 'nope'"),
                       (["diagnose", "--teacher", "some/model", "--method", "lit", "--out", str(tmp_path / "b")],
                        "--config"),
                       (["diagnose", "--teacher", "builtin:dit", "--inherit", "q", "--out", str(tmp_path / "c")],
                        "give --method too")):
        assert main(bad) == 2
        assert words in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
