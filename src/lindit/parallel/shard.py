"""Row shards of the token grid and the few collective operations linear attention needs.

Under sequence parallelism each of P processes holds a contiguous band of token-grid rows. The modules
compute on their band as on a whole image; ``lindit.parallel.layers`` swaps in the sharded layers that call
the operations below, which alone look at the shard (a ``ShardedGrid``: a (local_h, w) tuple that also
carries its ``RowShard``):

* ``grid_conv``: a conv over the grid exchanges halo rows with the neighbouring bands (strided convs
  keep each output row on the process that holds its centre input row);
* ``grid_group_norm``: GroupNorm with statistics all-reduced over the whole image;
* ``state_reducer``: linear attention's (heads x d x d) state, all-reduced: the only communication whose
  size does not grow with the image (far cheaper than ring attention for softmax);
* ``lse_combiner``: softmax attention of a few queries (MM-EDiT's prompt rows) over every band's image keys,
  from each band's (output, log-sum-exp): no image key leaves its process;
* ``gather_rows``: every process's tokens, in global row-major order (softmax attention to image keys).

Every tensor handed to a collective lives on the input's device (NCCL reduces only GPU tensors) and no
operation reads a tensor back to the host: token counts come from the grid, which every process knows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..modules.grid import Grid


@dataclass(frozen=True)
class RowShard:
    """Rows [start, stop) of a grid with ``rows`` rows, held by ``rank`` of ``world`` processes. ``bands``: every
    rank's (start, stop), so a gather knows each part's size without asking (default: ``partition_rows``)."""

    rank: int
    world: int
    rows: int
    start: int
    stop: int
    group: object = None
    bands: tuple[tuple[int, int], ...] | None = None

    def __post_init__(self):
        if self.bands is None:
            object.__setattr__(self, "bands", tuple(partition_rows(self.rows, self.world, r) for r in range(self.world)))

    @property
    def first(self) -> bool:
        return self.rank == 0

    @property
    def last(self) -> bool:
        return self.rank == self.world - 1

    def strided(self, stride: int) -> "RowShard":
        """The output rows of a conv with row stride ``stride``: row r is computed by the band holding input
        row r * stride, so the bands of the output do not overlap."""
        if stride == 1:
            return self
        bands = tuple((math.ceil(a / stride), math.ceil(b / stride)) for a, b in self.bands)
        start, stop = bands[self.rank]
        return RowShard(self.rank, self.world, math.ceil(self.rows / stride), start, stop, self.group, bands)


class ShardedGrid(tuple):
    """(local_h, w), plus ``.shard``: where these rows sit in the global grid."""

    shard: RowShard

    def __new__(cls, shard: RowShard, width: int):
        grid = super().__new__(cls, (shard.stop - shard.start, width))
        grid.shard = shard
        return grid


def shard_of(grid: Grid) -> RowShard | None:
    return getattr(grid, "shard", None)


def partition_rows(rows: int, world: int, rank: int) -> tuple[int, int]:
    """Contiguous, as-even-as-possible bands: the first rows % world bands get one row more."""
    base, extra = divmod(rows, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


class CommCounter:
    """Bytes this process sent into collectives (for the benchmark's communication column)."""

    bytes = 0

    @classmethod
    def add(cls, t: torch.Tensor) -> None:
        cls.bytes += t.numel() * t.element_size()


def _all_gather(t: torch.Tensor, shard: RowShard) -> list[torch.Tensor]:
    out = [torch.empty_like(t) for _ in range(shard.world)]
    CommCounter.add(t)
    dist.all_gather(out, t.contiguous(), group=shard.group)
    return out


def _all_reduce(t: torch.Tensor, shard: RowShard) -> torch.Tensor:
    CommCounter.add(t)
    dist.all_reduce(t, group=shard.group)
    return t


def _halo(img: torch.Tensor, shard: RowShard, above: int, below: int, edge: str) -> torch.Tensor:
    """img (B, C, h_local, w) extended with ``above`` rows of the band above and ``below`` rows of the band
    below; at the image's top and bottom the rows are zeros (or replicated edge rows for ``edge="replicate"``)."""
    if min(above, below) < 0 or img.shape[2] < max(above, below):
        raise ValueError(f"a band of {img.shape[2]} rows is too small for halos of {above}/{below} rows; "
                         "use fewer processes or a larger image")
    b, c, _, w = img.shape
    top = img[:, :, :below] if below else img.new_zeros(b, c, 0, w)
    bottom = img[:, :, img.shape[2] - above:] if above else img.new_zeros(b, c, 0, w)
    tops, bottoms = _all_gather(top, shard), _all_gather(bottom, shard)
    fill = {"zeros": lambda rows, n: rows.new_zeros(b, c, n, w),
            "replicate": lambda rows, n: rows.expand(b, c, n, w)}[edge]
    up = bottoms[shard.rank - 1] if not shard.first else fill(img[:, :, :1], above)
    down = tops[shard.rank + 1] if not shard.last else fill(img[:, :, -1:], below)
    return torch.cat([up, img, down], dim=2)  # (B, C, above + h_local + below, w)


def grid_conv(conv: nn.Conv2d, img: torch.Tensor, grid: Grid, edge: str = "zeros") -> tuple[torch.Tensor, Grid]:
    """conv(img) on a possibly row-sharded image -> (output image, its grid).

    The conv's own row padding is replaced by halo rows; output row r (global) is computed by the process
    whose band holds input row r * stride, so strided convs (Spatial Compressor, KV compression) split
    their output without overlap. Column padding stays the conv's own.
    """
    shard = shard_of(grid)
    if shard is None:
        out = conv(img)
        return out, (out.shape[2], out.shape[3])
    k, s, p = conv.kernel_size[0], conv.stride[0], conv.padding[0]
    out_shard = shard.strided(s)
    r_lo, r_hi = out_shard.start, out_shard.stop
    ext = _halo(img, shard, p, k - 1 - p, edge)  # global rows [start - p, stop + k - 1 - p)
    if r_hi == r_lo:  # a one-row band at an odd offset may own no strided output row
        w_out = (img.shape[3] + 2 * conv.padding[1] - k) // conv.stride[1] + 1
        return img.new_zeros(img.shape[0], conv.out_channels, 0, w_out), ShardedGrid(out_shard, w_out)
    offset = r_lo * s - shard.start  # first input row of output r_lo, relative to start - p
    ext = ext[:, :, offset: offset + (r_hi - r_lo - 1) * s + k]
    out = F.conv2d(ext, conv.weight, conv.bias, stride=conv.stride, padding=(0, conv.padding[1]),
                   dilation=conv.dilation, groups=conv.groups)  # (B, C_out, r_hi - r_lo, w_out)
    return out, ShardedGrid(out_shard, out.shape[3])


def grid_group_norm(norm: nn.GroupNorm, img: torch.Tensor, grid: Grid) -> torch.Tensor:
    """GroupNorm whose mean and variance cover the whole (sharded) image, in float32."""
    shard = shard_of(grid)
    if shard is None:
        return norm(img)
    b, c, h, w = img.shape
    x = img.float().reshape(b, norm.num_groups, -1)  # (B, G, local elements)
    stats = torch.stack([x.sum(-1), x.square().sum(-1), torch.full_like(x[..., 0], x.shape[-1])])
    stats = _all_reduce(stats, shard)  # (3, B, G): sum, sum of squares, count
    mean = stats[0] / stats[2]
    var = (stats[1] / stats[2] - mean.square()).clamp_min(0)
    y = ((x - mean[..., None]) * torch.rsqrt(var[..., None] + norm.eps)).reshape(b, c, h, w)
    if norm.affine:
        y = y * norm.weight.float()[None, :, None, None] + norm.bias.float()[None, :, None, None]
    return y.to(img.dtype)


def state_reducer(grid: Grid):
    """``reduce_state`` for ``linear_attention``: sums the key states of all bands. The global key count is
    the grid's (rows x width), known to every process: no count is communicated."""
    shard = shard_of(grid)
    if shard is None:
        return None

    def reduce(state, count):
        return _all_reduce(state.clone(), shard), shard.rows * grid[1]

    return reduce


def lse_combiner(grid: Grid):
    """``combine`` for ``joint_prompt_attention``: every band's (out, lse) of the prompt queries over its own
    image keys, gathered (B x H x N_P x (d + 1) per band); None when not sharded."""
    shard = shard_of(grid)
    if shard is None:
        return None

    def combine(parts):
        out, lse = parts[0]
        outs, lses = _all_gather(out.contiguous(), shard), _all_gather(lse.contiguous(), shard)
        return list(zip(outs, lses))

    return combine


def gather_rows(tokens: torch.Tensor, grid: Grid) -> torch.Tensor:
    """Tokens (..., n_local, C) of every band, concatenated in global row-major order -> (..., n_total, C)."""
    shard = shard_of(grid)
    if shard is None:
        return tokens
    counts = [(stop - start) * grid[1] for start, stop in shard.bands]  # known to all: no sync
    padded = F.pad(tokens, (0, 0, 0, max(counts) - tokens.shape[-2]))  # all_gather needs equal shapes
    parts = _all_gather(padded, shard)
    return torch.cat([part[..., :n, :] for part, n in zip(parts, counts)], dim=-2)


def global_count(n_local: int, grid: Grid) -> int:
    """The token count of the whole grid (rows x width) from a band's count; no communication."""
    shard = shard_of(grid)
    return n_local if shard is None else shard.rows * grid[1]
