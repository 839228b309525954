"""lindit.methods.check_options: every option of every method has a rule, and values that cannot work are
refused by name before a model is loaded (convert, distill recipes, demo variants)."""

import pytest

from lindit.methods import OPTION_RULES, REGISTRY, check_options


def test_every_option_of_every_method_has_a_rule():
    assert {o for m in REGISTRY.values() for o in m.options} <= set(OPTION_RULES)


@pytest.mark.parametrize("method, options", [
    ("lit", {"heads": 2, "value_conv": 5}), ("lit", {"value_conv": None}), ("kv_compress", {"factor": 2, "layers": [0]}),
    ("mm_edit", {"eta": "learned", "softmax_qk": "raw"}), ("mm_edit", {"eta": 0.25}), ("mm_edit_plain", {"eta": "exact"}),
    ("edit", {"cf_reduction": 8, "cf_groups": 4, "cf_negative_slope": 0.0, "sc_kernel": 5, "sc_stride": 1}),
    ("sana", {"mlp_ratio": 2.5}), ("linfusion", {"lf_mid_dim": 16, "inherit": "qkvo"}),
])
def test_good_options_pass(method, options):
    check_options(method, options)


@pytest.mark.parametrize("method, options, message", [
    ("lit", {"heads": "abc"}, "heads='abc'"), ("lit", {"heads": 0}, "heads=0"), ("lit", {"heads": True}, "heads=True"),
    ("lit", {"value_conv": 4}, "value_conv=4"), ("kv_compress", {"factor": 0}, "factor=0"),
    ("kv_compress", {"factor": 1}, "an integer >= 2"), ("mm_edit", {"eta": "bogus"}, "eta='bogus'"),
    ("mm_edit", {"eta": 1.5}, "a number in [0, 1]"), ("mm_edit", {"eta": float("nan")}, "eta=nan"),
    ("mm_edit", {"softmax_qk": "x"}, "phi or raw"), ("edit", {"cf_reduction": 0}, "cf_reduction=0"),
    ("edit", {"sc_stride": -1}, "sc_stride=-1"), ("sana", {"mlp_ratio": 0}, "mlp_ratio=0"),
    ("edit", {"layers": [-1]}, "block indices"), ("edit", {"layers": []}, "block indices"),
    ("edit", {"eta": "approx"}, "unknown option(s) ['eta']"), ("nosuch", {}, "unknown method 'nosuch'"),
])
def test_bad_options_name_the_value_and_what_is_valid(method, options, message):
    with pytest.raises(ValueError, match=None) as err:
        check_options(method, options)
    assert message in str(err.value) and ("must be" in str(err.value) or "valid" in str(err.value))
