"""Checks of the layers that a reference comparison alone would not make: receptive fields (locality),
hand computations on non-symmetric inputs, and PixArt-Sigma's own KV-compression code."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lindit.methods import REGISTRY, LayerSpec
from lindit.modules import ConvFusion, KVCompress, SpatialCompressor, TokenMapOptions


class FrozenGroupNorm(nn.Module):
    """GroupNorm whose statistics are those of the first input it saw: a change at one token then cannot
    reach the others through the mean and variance (as it does through a live GroupNorm)."""

    def __init__(self, norm: nn.GroupNorm):
        super().__init__()
        self.norm, self.stats = norm, None

    def forward(self, img):
        b, c, h, w = img.shape
        x = img.reshape(b, self.norm.num_groups, -1)
        if self.stats is None:
            self.stats = (x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True))
        mean, var = self.stats
        y = ((x - mean) / torch.sqrt(var + self.norm.eps)).reshape(b, c, h, w)
        return y * self.norm.weight.view(1, -1, 1, 1) + self.norm.bias.view(1, -1, 1, 1)


def _moved(fn, x, grid, token, out_grid=None):
    """Which output tokens change when input token ``token`` = (row, col) changes: a bool (h, w) grid."""
    h, w = grid
    x2 = x.clone()
    x2[:, token[0] * w + token[1]] += 1.0
    diff = (fn(x2) - fn(x)).abs().amax(dim=(0, 2))  # (N_out,)
    return (diff > 1e-12).view(*(out_grid or grid))


def _window(grid, token, radius, stride=1):
    """Output tokens (i, j) of a stride-``stride`` conv whose window of ``radius`` around (i*s, j*s) holds token."""
    rows = torch.arange(grid[0]).view(-1, 1) * stride
    cols = torch.arange(grid[1]).view(1, -1) * stride
    return ((rows - token[0]).abs() <= radius) & ((cols - token[1]).abs() <= radius)


@pytest.mark.parametrize("token", [(3, 4), (0, 0), (6, 8), (0, 5)])
def test_convfusion_moves_exactly_its_3x3_neighbourhood(token):
    """EDiT Eq. 4's 3x3 conv: with GroupNorm statistics held fixed, a change at one token moves the branch's
    output at that token and its 8 neighbours and nowhere else (a 1x1 conv would move one token, 5x5 25)."""
    torch.manual_seed(0)
    cf = ConvFusion(8, TokenMapOptions(cf_reduction=2, cf_groups=2)).double()
    cf.norm = FrozenGroupNorm(cf.norm)
    grid = (7, 9)
    x = torch.randn(2, 63, 8, dtype=torch.float64)
    cf(x, grid)  # fixes the statistics on x
    assert torch.equal(_moved(lambda t: cf(t, grid), x, grid, token), _window(grid, token, 1))


def test_edit_queries_see_their_neighbourhood_and_keys_their_compressed_window():
    """A whole EDiT layer's maps: queries (ConvFusion + to_q) move in the 3x3 neighbourhood, keys and values
    (Spatial Compressor, stride 2) at the compressed tokens whose 3x3 window holds the changed token."""
    torch.manual_seed(0)
    layer = REGISTRY["edit"].build(LayerSpec(dim=8, heads=2, inner_dim=8, out_dim=8), cf_groups=2).double()
    layer.conv_fusion_q.norm = FrozenGroupNorm(layer.conv_fusion_q.norm)
    grid, token = (7, 9), (3, 4)
    x = torch.randn(2, 63, 8, dtype=torch.float64)
    layer.project("q", x, grid)
    assert torch.equal(_moved(lambda t: layer.project("q", t, grid)[0], x, grid, token), _window(grid, token, 1))
    for role in "kv":
        keys, k_grid = layer.project(role, x, grid)
        assert k_grid == (4, 5) and keys.shape[1] == 20
        moved = _moved(lambda t: layer.project(role, t, grid)[0], x, grid, token, out_grid=k_grid)
        assert torch.equal(moved, _window(k_grid, token, 1, stride=2))  # compressed rows 1-2, columns 2


def test_spatial_compressor_matches_a_hand_computation():
    """3 x 4 grid, x[r, c] = 10 r + c in channel 0 and ones in channel 1; stride 2, padding 1, so output (i, j)
    is centred on input (2i, 2j). Channel 0's kernel reads the right neighbour (x1), the one below (x2) and
    the top-left one (x100), bias 0.5; channel 1's kernel is all ones (it counts the taps inside the grid)."""
    sc = SpatialCompressor(2)
    with torch.no_grad():
        sc.conv.weight.zero_()
        sc.conv.weight[0, 0, 1, 2], sc.conv.weight[0, 0, 2, 1], sc.conv.weight[0, 0, 0, 0] = 1.0, 2.0, 100.0
        sc.conv.weight[1].fill_(1.0)
        sc.conv.bias.copy_(torch.tensor([0.5, 0.0]))
    x = torch.stack([torch.tensor([10.0 * r + c for r in range(3) for c in range(4)]), torch.ones(12)], -1)
    y, grid = sc(x[None], (3, 4))
    assert grid == (2, 2)
    # (0,0): x[0,1] + 2 x[1,0] = 1 + 20; (0,1): x[0,3] + 2 x[1,2] = 3 + 24; (1,0): x[2,1] = 21 (row 3 is padding);
    # (1,1): x[2,3] + 100 x[1,1] = 23 + 1100.
    expected_0 = torch.tensor([21.5, 27.5, 21.5, 1123.5])
    expected_1 = torch.tensor([4.0, 6.0, 4.0, 6.0])  # taps inside the 3 x 4 grid
    torch.testing.assert_close(y[0], torch.stack([expected_0, expected_1], -1))


def pixart_sigma_kv_compress(tokens, hw, sr, conv: nn.Conv2d, norm: nn.LayerNorm):
    """PixArt-Sigma's ``AttentionKVCompress.downsample_2d`` (sampling='conv'), transcribed from their
    diffusion/model/nets/PixArt_blocks.py: reshape to (B, C, H, W), the depthwise conv ``sr`` (kernel = stride
    = sr_ratio, no padding), back to tokens, LayerNorm; new_N = int(H / sr) * int(W / sr)."""
    b, n, c = tokens.shape
    h, w = hw
    t = tokens.reshape(b, h, w, c).permute(0, 3, 1, 2)
    new_n = int(h / sr) * int(w / sr)
    t = F.conv2d(t, conv.weight, conv.bias, stride=sr, groups=c).reshape(b, c, -1).permute(0, 2, 1)
    return norm(t).reshape(b, new_n, c)


@pytest.mark.parametrize("hw", [(6, 8), (4, 10), (5, 7), (9, 4)])
def test_kv_compress_follows_pixart_sigmas_code(hw):
    """On the grids PixArt-Sigma runs (its buckets are multiples of 32 px: even token grids) lindit's KV
    compression is theirs token for token. On odd grids theirs drops the last row / column; lindit keeps
    them (replicated padding, ceil grid) and agrees with theirs on every block both compute."""
    torch.manual_seed(0)
    kv = KVCompress(6, 2)
    with torch.no_grad():
        kv.conv.weight.normal_()
        kv.conv.bias.normal_()
        kv.norm.weight.normal_()
        kv.norm.bias.normal_()
    h, w = hw
    x = torch.randn(2, h * w, 6)
    mine, grid = kv(x, hw)
    theirs = pixart_sigma_kv_compress(x, hw, 2, kv.conv, kv.norm)
    assert grid == (-(-h // 2), -(-w // 2))
    mine = mine.view(2, *grid, 6)[:, : h // 2, : w // 2].reshape(2, -1, 6)
    torch.testing.assert_close(mine, theirs)
