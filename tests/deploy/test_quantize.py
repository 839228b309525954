"""lindit.deploy.quantize: schemes and backends, save/load round trips, accuracy, float32 attention sums."""

import copy
import json
import sys

import pytest
import torch
from safetensors import safe_open
from torch import nn

import lindit
from lindit import functional
from lindit.deploy import SCHEMES, quantize
from lindit.deploy.backends import pack_int4, unpack_int4
from lindit.integrations.diffusers.persistence import WEIGHTS_NAME
from lindit.methods import REGISTRY, LayerSpec
from tiny_models import BUILDERS, forward, inputs

HW = {"pixart": (18, 26), "sd3": (18, 26), "dit": (18, 18)}  # non-square where the family allows it
# relative L2 error of one forward against the float model: int8 measured <= 0.017, int4 (groups of 8) <= 0.071
TOLERANCE = {"int8-dynamic": 0.04, "int8-weight": 0.04, "int4-weight": 0.15}
CASES = [("pixart", "edit", "int8-dynamic", None), ("pixart", "edit", "int8-dynamic", "torch.ao"),
         ("sd3", "mm_edit", "int4-weight", None), ("dit", "lit", "int8-weight", None)]


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture(scope="module")
def students():
    return {fam: lindit.convert(BUILDERS[fam](), method) for fam, method in [("pixart", "edit"), ("sd3", "mm_edit"),
                                                                             ("dit", "lit")]}


@pytest.mark.parametrize("fam, method, scheme, backend", CASES)
def test_round_trip_is_exact_and_close_to_float(tmp_path, students, fam, method, scheme, backend):
    student = students[fam]
    q = quantize(student, scheme, backend=backend, group_size=8)
    reference, out = forward(student, fam, *HW[fam]), forward(q, fam, *HW[fam])
    assert torch.isfinite(out).all()
    assert 1e-5 < _rel(out, reference) < TOLERANCE[scheme]  # changed by quantization, but not by much
    lindit.save(q, tmp_path / "q")
    loaded = lindit.load(tmp_path / "q")
    assert loaded.lindit_quantization == q.lindit_quantization and not loaded.training
    assert torch.equal(forward(loaded, fam, *HW[fam]), out)
    layer = q.get_submodule(q.lindit_quantization["layers"][0])
    loaded_layer = loaded.get_submodule(q.lindit_quantization["layers"][0])
    assert type(loaded_layer) is type(layer)  # torch.ao: DynamicInt8Linear
    assert type(getattr(loaded_layer, "weight", None)) is type(getattr(layer, "weight", None))  # torchao subclass


def test_saved_file_holds_plain_integer_tensors(tmp_path, students):
    q = quantize(students["pixart"], "int4-weight", group_size=8)
    lindit.save(q, tmp_path / "q")
    config = json.loads((tmp_path / "q" / "config.json").read_text())
    assert config["lindit_quantized"]["scheme"] == "int4-weight" and config["lindit_conversion"]["method"] == "edit"
    name = q.lindit_quantization["layers"][0]
    linear = q.get_submodule(name)
    with safe_open(str(tmp_path / "q" / WEIGHTS_NAME), "pt") as f:
        keys = set(f.keys())
        packed = f.get_tensor(f"{name}.weight.qdata")
    assert f"{name}.weight" not in keys and f"{name}.weight.scale" in keys
    assert packed.dtype == torch.uint8 and packed.shape == (linear.out_features, linear.in_features // 2)


def test_int4_packing_round_trips_every_value():
    q = torch.arange(-8, 8, dtype=torch.int8).repeat(3, 2)  # (3, 32)
    packed = pack_int4(q)
    assert packed.shape == (3, 16) and torch.equal(unpack_int4(packed), q)


def test_only_linear_weights_change_and_attention_sums_stay_float32(monkeypatch, students):
    student = students["pixart"]
    q = quantize(student, "int8-dynamic")
    for name, module in student.named_modules():
        if isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.Conv2d, nn.Embedding)):
            for key, tensor in module.state_dict().items():
                assert torch.equal(q.get_submodule(name).state_dict()[key], tensor), f"{name}.{key} changed"
    linears = [n for n, m in student.named_modules() if isinstance(m, nn.Linear)]
    assert q.lindit_quantization["layers"] == linears
    states = []
    original = functional.linear_attention_state

    def spy(k, v, *args, **kwargs):  # linear_attention_state(k, v, eps)
        state, count = original(k, v, *args, **kwargs)
        states.append(state.dtype)
        return state, count

    monkeypatch.setattr(functional, "linear_attention_state", spy)
    low = quantize(copy.deepcopy(student).to(torch.bfloat16), "int8-dynamic")
    kwargs = {k: v.bfloat16() if torch.is_tensor(v) and v.is_floating_point() else v
              for k, v in inputs("pixart", 16, 16).items()}
    with torch.no_grad():
        out = low(**kwargs, return_dict=False)[0]
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    assert states and set(states) == {torch.float32}  # the sums and normalisers, whatever the model dtype


def _edit_layer(dtype):
    torch.manual_seed(0)
    return REGISTRY["edit"].build(LayerSpec(dim=32, heads=2, inner_dim=32, out_dim=32)).to(dtype).eval()


def test_int8_student_is_finite_at_4096px_token_count():
    """A 4096 px image is a 256 x 256 token grid (VAE 8, patch 2): 65,536 tokens, 16,384 compressed keys.
    In float16 the sum of its keys overflows (checked below); the layer's float32 sums must not."""
    layer = quantize(_edit_layer(torch.float16), "int8-dynamic", backend="torch.ao")
    x = torch.randn(1, 256 * 256, 32, generator=torch.Generator().manual_seed(0)).mul(60).half()  # (B, N, C)
    with torch.no_grad():
        keys = torch.relu(layer.project("k", x, (256, 256))[0])  # (B, M, C)
        out = layer(x, (256, 256))
    assert torch.isinf(keys.sum(dim=1)).any()  # a float16 accumulation would have overflowed
    assert out.shape == x.shape and out.dtype == torch.float16 and torch.isfinite(out).all()


def test_int8_torchao_student_is_finite_at_4096px_token_count_in_bfloat16():
    layer = quantize(_edit_layer(torch.bfloat16), "int8-dynamic", backend="torchao")
    x = torch.randn(1, 256 * 256, 32, generator=torch.Generator().manual_seed(0)).mul(60).bfloat16()
    with torch.no_grad():
        out = layer(x, (256, 256))
    assert torch.isfinite(out).all()


def test_torchao_int8_dynamic_in_float16_is_refused_or_routed_to_torch_ao():
    with pytest.raises(ValueError, match="overflows to inf.*torch.ao"):
        quantize(_edit_layer(torch.float16), "int8-dynamic", backend="torchao")
    assert quantize(_edit_layer(torch.float16), "int8-dynamic").lindit_quantization["backend"] == "torch.ao"


@pytest.mark.parametrize("kwargs, message", [
    ({"scheme": "int2"}, "unknown quantization scheme 'int2'; supported: int8-dynamic on cpu"),
    ({"scheme": "int8-weight", "device": "mps"}, "not supported on device 'mps'; supported: .*int4-weight on cpu"),
    ({"scheme": "int8-weight", "backend": "torch.ao"}, "does not run int8-weight on cpu; choose from torchao"),
])
def test_unsupported_scheme_device_or_backend_names_the_supported_ones(students, kwargs, message):
    with pytest.raises(ValueError, match=message):
        quantize(students["dit"], **kwargs)
    assert set(SCHEMES) == {"int8-dynamic", "int8-weight", "int4-weight"}


def test_without_torchao_int8_dynamic_falls_back_and_others_name_the_extra(monkeypatch, students):
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)  # import torchao.quantization now fails
    assert quantize(students["dit"], "int8-dynamic").lindit_quantization["backend"] == "torch.ao"
    with pytest.raises(ImportError, match=r"pip install 'lindit\[deploy\]'"):
        quantize(students["dit"], "int8-weight")


def test_quantizing_twice_is_an_error(students):
    with pytest.raises(ValueError, match="already quantized"):
        quantize(quantize(students["dit"], "int8-weight"), "int8-weight")


@pytest.mark.parametrize("change, message", [
    ({"format_version": 99}, "unsupported quantization format 99"),
    ({"layers": ["transformer_blocks.0.no_such_linear"]}, "no Linear for: transformer_blocks.0.no_such_linear"),
    ({"backend": "tensorrt"}, "unknown quantization backend 'tensorrt'"),
])
def test_load_rejects_a_tampered_quantization_entry(tmp_path, students, change, message):
    lindit.save(quantize(students["dit"], "int8-weight"), tmp_path / "q")
    config = json.loads((tmp_path / "q" / "config.json").read_text())
    config["lindit_quantized"].update(change)
    (tmp_path / "q" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=message):
        lindit.load(tmp_path / "q")
