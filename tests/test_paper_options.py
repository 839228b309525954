"""Where lindit's default differs from a published implementation, the published behaviour is an option:
LiT's depthwise conv shared across heads (Algorithm 1), SANA's Mix-FFN without the last bias. Each option
is checked against the reference and, where the paper gives code, against a transcription of it."""

import pytest
import torch
import torch.nn.functional as F
from references.compare import compare, randomise, tokens
from references.layers import MapOptions, SelfSpec, mixffn, self_attention
from references.ops import Params
from tiny_models import BUILDERS

import lindit
from lindit.methods import REGISTRY, LayerSpec
from lindit.modules import LinearAttention, MixFFN

DIM, HEADS = 16, 4
SPEC = LayerSpec(dim=DIM, heads=HEADS, inner_dim=DIM, out_dim=DIM)
GRIDS = [(5, 7), (9, 4), (1, 6)]


def lit_algorithm1_dwc(v, hw, num_heads, dwc: torch.nn.Conv2d):
    """The DWC step of LiT's Algorithm 1 (appendix G), transcribed: v (B, N, C) from ``self.kv``, split into
    heads, each head's (H, W, head_dim) image through ``dwc = Conv2d(head_dim, head_dim, groups=head_dim)``,
    back to (B, N, C)."""
    b, n, c = v.shape
    h, w = hw
    v = v.reshape(b, n, num_heads, -1).permute(0, 2, 1, 3)  # (B, heads, N, head_dim)
    v = v.reshape(b * num_heads, h, w, -1).permute(0, 3, 1, 2)
    return F.conv2d(v, dwc.weight, dwc.bias, padding=dwc.padding, groups=dwc.groups).reshape(b, c, n).permute(0, 2, 1)


@pytest.mark.parametrize("grid", GRIDS, ids=lambda g: f"{g[0]}x{g[1]}")
def test_lit_shared_value_conv_matches_the_reference(grid):
    layer = randomise(REGISTRY["lit"].build(SPEC, value_conv_shared=True))
    assert layer.value_conv.weight.shape == (DIM // 2, 1, 5, 5)  # head_dim kernels for LiT's 2 heads
    spec = SelfSpec(value_conv=5, value_conv_shared=True, heads=2)
    compare(layer, lambda x: layer(x, grid), lambda p, x: self_attention(p, spec, x, grid, 2, MapOptions(), layer.eps),
            [tokens(grid[0] * grid[1], DIM, seed=1)], f"lit value_conv_shared on {grid}")


def test_lit_shared_value_conv_is_algorithm_1():
    """The shared conv is LiT's own code; the default (per channel) has heads x its parameters."""
    shared = randomise(LinearAttention(DIM, HEADS, query="linear", key="linear", value="linear", value_conv=5,
                                       value_conv_shared=True))
    per_channel = LinearAttention(DIM, HEADS, query="linear", key="linear", value="linear", value_conv=5)
    assert per_channel.value_conv.weight.numel() == HEADS * shared.value_conv.weight.numel()
    v = tokens(9 * 4, DIM, seed=3)
    torch.testing.assert_close(shared._dwc(v, (9, 4)), lit_algorithm1_dwc(v, (9, 4), HEADS, shared.value_conv))
    with pytest.raises(ValueError, match="value_conv_shared=True needs a value_conv"):
        LinearAttention(DIM, HEADS, query="linear", key="linear", value="linear", value_conv_shared=True)


@pytest.mark.parametrize("out_bias", [True, False])
def test_mixffn_output_bias_option_matches_the_reference(out_bias):
    """SANA's GLUMBConv has no bias on its last 1x1 conv (use_bias=(True, True, False)); lindit keeps one by
    default."""
    ffn = randomise(MixFFN(DIM, mlp_ratio=1.5, out_bias=out_bias))
    assert (ffn.point_conv.bias is not None) == out_bias
    grid = (5, 7)
    compare(ffn, lambda x: ffn(x, grid), lambda p, x: mixffn(p, x, grid, out_bias=out_bias),
            [tokens(35, DIM, seed=1)], f"Mix-FFN out_bias={out_bias}")


def test_conversion_options_reach_the_layers_and_survive_from_config():
    """lindit.convert passes the options on, and a student rebuilt from its config has the same layers."""
    lit = lindit.convert(BUILDERS["dit"](), "lit", value_conv_shared=True)
    sana = lindit.convert(BUILDERS["pixart"](), "sana", mlp_out_bias=False)
    assert lit.transformer_blocks[0].attn1.value_conv.weight.shape == (8, 1, 5, 5)  # 2 heads of 8 channels
    assert sana.transformer_blocks[0].ff.point_conv.bias is None
    for student in (lit, sana):
        rebuilt = type(student).from_config(student.config)
        assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
            k: v.shape for k, v in student.state_dict().items()}
    params = Params.of(sana.transformer_blocks[0].ff)
    assert "point_conv.bias" not in params.tensors
