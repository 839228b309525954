"""The row-sharded layers ``enable_sequence_parallel`` swaps into a converted model (and back out).

The modules of ``lindit.modules`` compute on their band of rows as on a whole image. Where the bands must
meet, a sharded layer stands in: ``ShardedConv2d`` exchanges halo rows around the same conv weights,
``ShardedGroupNorm`` reduces its statistics over every band, and ``RowBands`` gives attention layers the
state reduction, log-sum-exp combination, key gather and token count of the whole image (the ``bands``
hooks, ``lindit.modules.grid.OneBand`` on one device). A swapped layer keeps the parameters of the layer it
replaces under the same names, so state dicts, LoRA targets and saving are unchanged.

``band()`` returns the ``RowShard`` of the full-resolution token rows this process holds in the forward in
progress (``TokenGrid.current().shard`` inside a model).
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from ..modules.grid import OnGrid, OneBand
from ..modules.token_maps import KVCompress, TokenMapsMixin
from .shard import (RowShard, ShardedGrid, gather_rows, global_count, grid_conv, grid_group_norm, lse_combiner,
                    state_reducer)

Band = Callable[[], RowShard]


class ShardedConv2d(nn.Conv2d):
    """The conv on a band of rows, with halo rows of the neighbouring bands (``shard.grid_conv``). ``edge``:
    what lies beyond the image's first and last rows: zeros (the conv's padding) or the edge row
    (``replicate``: KVCompress, which pads its band as a whole image; the halo replaces those rows)."""

    band: Band
    edge: str

    def forward(self, img):  # (B, C, h_local (+ the layer's own row padding), w)
        shard = self.band()
        if self.edge == "replicate":
            img = img[:, :, : shard.stop - shard.start]
        return grid_conv(self, img, ShardedGrid(shard, img.shape[3]), self.edge)[0]


class ShardedGroupNorm(nn.GroupNorm):
    """GroupNorm with the mean and variance of the whole image (``shard.grid_group_norm``)."""

    band: Band

    def forward(self, img):  # (B, C, h_local, w)
        return grid_group_norm(self, img, ShardedGrid(self.band(), img.shape[3]))


class RowBands(OneBand):
    """The ``bands`` hooks of an attention layer on a band of rows. Its keys are compressed by
    ``key_stride`` rows (Spatial Compressor, KV compression) or not (1); counts come from the band table."""

    def __init__(self, band: Band, key_stride: int):
        self.band, self.key_stride = band, key_stride

    def _keys(self, k_grid) -> ShardedGrid:
        return ShardedGrid(self.band().strided(self.key_stride), k_grid[1])

    def reduce_state(self, k_grid):
        return state_reducer(self._keys(k_grid))

    def combine(self, k_grid):
        return lse_combiner(self._keys(k_grid))

    def gather(self, tokens, k_grid):
        return gather_rows(tokens, self._keys(k_grid))

    def count(self, n: int, grid) -> int:
        return global_count(n, ShardedGrid(self.band(), grid[1]))


SHARDED = {nn.Conv2d: ShardedConv2d, nn.GroupNorm: ShardedGroupNorm}
PLAIN = {sharded: plain for plain, sharded in SHARDED.items()}
SETTINGS = ("band", "edge")


def _as(cls: type, module: nn.Module, **settings) -> nn.Module:
    """``module`` as a ``cls``: the same parameters, buffers and hooks under the same names."""
    new = cls.__new__(cls)
    new.__dict__.update({k: v for k, v in module.__dict__.items() if k not in SETTINGS}, **settings)
    return new


def key_stride(layer: TokenMapsMixin) -> int:
    """The row stride of the layer's key compression (1 without)."""
    if getattr(layer, "kv_compress", None) is not None:
        return layer.kv_compress.conv.stride[0]
    after = layer.token_maps["k"][2]
    return 1 if after is None else getattr(layer, after).conv.stride[0]


def _lindit_layers(root: nn.Module):
    return [m for m in root.modules() if isinstance(m, OnGrid)]


def shard_layers(root: nn.Module, band: Band) -> None:
    """Swap the sharded layers into every lindit layer under ``root`` (``root`` itself included)."""
    for layer in _lindit_layers(root):
        for parent in list(layer.modules()):
            edge = "replicate" if isinstance(parent, KVCompress) else "zeros"
            for name, child in list(parent.named_children()):
                if type(child) in SHARDED:
                    setattr(parent, name, _as(SHARDED[type(child)], child, band=band, edge=edge))
        if isinstance(layer, TokenMapsMixin):
            layer.bands = RowBands(band, key_stride(layer))


def unshard_layers(root: nn.Module) -> None:
    """Undo ``shard_layers``: the plain layers, holding the same parameters, and one-device ``bands``."""
    for layer in _lindit_layers(root):
        for parent in list(layer.modules()):
            for name, child in list(parent.named_children()):
                if type(child) in PLAIN:
                    setattr(parent, name, _as(PLAIN[type(child)], child))
        layer.__dict__.pop("bands", None)
