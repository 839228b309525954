"""Attention cost, counted (not timed): linear mechanisms double with the token count, softmax quadruples.

torch's FlopCounterMode does not see CPU SDPA's fused kernel, so everything is counted under the MATH
backend, which decomposes attention into the matmuls the counter knows.
"""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from lindit.functional import hybrid_attention, linear_attention, softmax_attention
from test_modules import DIM, joint_modules, self_modules


def count_flops(fn, *args) -> int:
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.no_grad():
        fn(*args)
    return counter.get_total_flops()


def _ratio(make_args, fn):
    small, large = count_flops(fn, *make_args(1)), count_flops(fn, *make_args(2))
    assert small > 0
    return large / small


def test_functional_costs():
    def qkv(f):
        return [torch.rand(1, 2, 256 * f, 16) for _ in range(3)]

    assert _ratio(qkv, linear_attention) == pytest.approx(2.0)
    assert _ratio(qkv, softmax_attention) == pytest.approx(4.0, rel=0.01)

    def joint(f):
        img = [torch.rand(1, 2, 256 * f, 16) for _ in range(3)]
        return img + [torch.rand(1, 2, 7, 16) for _ in range(3)]

    assert _ratio(joint, lambda *a: hybrid_attention(*a)) == pytest.approx(2.0, rel=0.01)


def _tokens(grid, dim=DIM):
    return torch.randn(1, grid[0] * grid[1], dim)


@pytest.mark.parametrize("name, module", self_modules(), ids=lambda v: v if isinstance(v, str) else "")
def test_self_attention_costs(name, module):
    ratio = _ratio(lambda f: (_tokens((32, 32 * f)), (32, 32 * f)), module)
    if name in ("softmax", "kv_compress"):
        assert ratio > 3.0, f"{name}: quadratic attention should dominate, got x{ratio:.2f}"
    else:
        assert ratio == pytest.approx(2.0), f"{name} is not linear: x{ratio:.3f}"


def test_joint_attention_costs():
    for name, module in joint_modules():
        ratio = _ratio(lambda f: (_tokens((16, 16 * f)), (16, 16 * f), torch.randn(1, 7, DIM)), module)
        if name == "softmax":
            assert ratio > 3.0, f"{name}: x{ratio:.2f}"
        else:  # the prompt part is a fixed cost, so the ratio is just under 2
            assert 1.9 < ratio <= 2.0, f"{name} is not linear: x{ratio:.3f}"
