"""Sequence parallelism's device plumbing, checked without a GPU or a second process.

Collectives are replaced by a recorder that keeps what each was handed (device, dtype, shape) and answers
as a second process holding the same tensors would. Layers then run on a band of rows on the ``meta``
device: a collective tensor made on the CPU (NCCL would refuse it) shows up as a CPU entry, and a host
sync (``.item()``) raises, since meta tensors have no values. On the CPU, a dispatch mode counts syncs.
"""

import copy

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import lindit.parallel.shard as shard
from lindit import parallel
from lindit.methods import REGISTRY, LayerSpec
from lindit.modules import MixFFN, SoftmaxAttention
from lindit.parallel.layers import shard_layers
from lindit.parallel.shard import RowShard, ShardedGrid, partition_rows

ROWS, COLS, WORLD = 13, 6, 3


class RecordingCollectives:
    """Stands in for torch.distributed inside lindit.parallel.shard."""

    def __init__(self):
        self.calls = []

    def all_reduce(self, t, group=None):
        self.calls.append(("all_reduce", t.device.type, t.dtype, tuple(t.shape)))
        t.mul_(WORLD)

    def all_gather(self, out, t, group=None):
        self.calls.append(("all_gather", t.device.type, t.dtype, tuple(t.shape)))
        for o in out:
            o.copy_(t)


class CountSyncs(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.syncs = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.item.default):
            self.syncs.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.fixture
def collectives(monkeypatch):
    recorder = RecordingCollectives()
    monkeypatch.setattr(shard, "dist", recorder)
    return recorder


def _layers():
    """(name, layer, joint) for every mechanism a converted model can hold, small."""
    out = []
    for name, method in REGISTRY.items():
        joint = method.kind == "joint"
        spec = LayerSpec(32, 2, 32, 32, qk_norm="rms_norm" if joint else None, context_dim=32 if joint else None)
        out.append((name, method.build(spec), joint))
    out.append(("kv_compress_softmax", SoftmaxAttention(32, 2, kv_compress=2), False))
    out.append(("mixffn", MixFFN(32), False))
    return out


def _band(rank: int) -> ShardedGrid:
    start, stop = partition_rows(ROWS, WORLD, rank)
    return ShardedGrid(RowShard(rank, WORLD, ROWS, start, stop, group=None), COLS)


def _sharded(layer, grid: ShardedGrid, device):
    """A copy of the layer on ``device`` with the sharded layers swapped in, on the band ``grid``."""
    layer = copy.deepcopy(layer).to(device)
    shard_layers(layer, lambda: grid.shard)
    return layer


def _call(layer, joint, grid, device):
    x = torch.randn(2, grid[0] * grid[1], 32, device=device)
    with torch.no_grad():
        return layer(x, grid, torch.randn(2, 5, 32, device=device)) if joint else layer(x, grid)


LAYERS = _layers()


@pytest.mark.parametrize("name, layer, joint", LAYERS, ids=[n for n, _, _ in LAYERS])
def test_collective_tensors_live_on_the_input_device_and_no_layer_syncs(collectives, name, layer, joint):
    for rank in (0, WORLD - 1):  # the first band (zero halo on top) and the last (short band, odd offset)
        collectives.calls.clear()
        _call(_sharded(layer, _band(rank), "meta"), joint, _band(rank), "meta")  # a sync raises; CPU tensors recorded
        assert collectives.calls, f"{name}: a sharded layer communicates"
        assert {c[1] for c in collectives.calls} == {"meta"}, f"{name}: {collectives.calls}"
        with CountSyncs() as counter:
            _call(_sharded(layer, _band(rank), "cpu"), joint, _band(rank), "cpu")
        assert not counter.syncs, f"{name} reads tensors back to the host: {counter.syncs}"


def test_the_sync_counter_sees_item():
    with CountSyncs() as counter:
        torch.ones(2).sum().item()
    assert counter.syncs


def test_gather_sizes_come_from_the_band_table(collectives):
    """Strided convs hand output rows to the band holding their centre input row: the gather knows every
    band's size without asking (bands of 5, 4, 4 rows -> compressed 3, 2, 2)."""
    grid = _band(1)
    conv = torch.nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4)
    img = torch.randn(1, 4, grid[0], COLS)
    out, out_grid = shard.grid_conv(conv, img, grid)
    assert out_grid.shard.bands == ((0, 3), (3, 5), (5, 7)) and out.shape[2] == 2
    tokens = torch.randn(1, out.shape[2] * out.shape[3], 4)
    gathered = shard.gather_rows(tokens, out_grid)
    assert gathered.shape[1] == 7 * out_grid[1]
    assert shard.global_count(tokens.shape[1], out_grid) == 7 * out_grid[1]


def test_backend_serves_the_devices_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert parallel.backend() == "gloo"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert parallel.backend() == "cpu:gloo,cuda:nccl"  # CPU and GPU tensors both have a backend
    chosen = []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    parallel._use_local_gpu(3)
    assert chosen == [1]
