"""Sequence parallelism: one image's token grid split by rows across processes (torch.distributed).

``enable_sequence_parallel(model)`` makes every forward of a converted model run on a band of rows per
process. Two hooks do it without touching diffusers' forward: the patch embedding's output is cut to the
local rows, and the final projection's output is gathered back to the whole image, so the scheduler and
VAE see exactly what a single process would. In between, lindit layers compute on their band as on a whole
image, and the sharded layers swapped into them (``layers.py``) communicate only where the math needs it
(``shard.py``): linear attention all-reduces its (heads x d x d) state, convolutions swap halo rows,
GroupNorm all-reduces its statistics, and softmax attention to image keys (prompt queries of MM-EDiT, KV
compression) gathers those keys. ``disable_sequence_parallel`` swaps the plain layers back.

Every collective tensor lives on the device of the activations (NCCL reduces GPU tensors only) and no
layer reads a tensor back to the host. The process group serves both devices ("cpu:gloo,cuda:nccl" where
CUDA is present), so a model on either device works. Inference only: the collectives are not differentiable.
"""

from __future__ import annotations

import logging
import os
import tempfile

import torch
import torch.distributed as dist
from torch import nn

from ..errors import UserError
from ..integrations.diffusers import converted_layers
from ..integrations.diffusers.families import family_of
from .layers import shard_layers, unshard_layers
from .shard import RowShard, ShardedGrid, gather_rows, partition_rows


class _Parallel:
    """What a TokenGrid needs to hand out row bands."""

    def __init__(self, group):
        self.group = group
        self.rank = dist.get_rank(group)
        self.world = dist.get_world_size(group)

    def grid(self, hw) -> ShardedGrid:
        h, w = hw
        start, stop = partition_rows(h, self.world, self.rank)
        return ShardedGrid(RowShard(self.rank, self.world, h, start, stop, self.group), w)


def _check_fully_converted(model: nn.Module) -> None:
    fam = family_of(model)
    names = set(converted_layers(model, attention_only=True))
    missing = [f"transformer_blocks.{i}.{fam.attention}" for i in range(len(model.transformer_blocks))
               if f"transformer_blocks.{i}.{fam.attention}" not in names]
    if missing:
        raise ValueError(f"sequence parallelism needs every image attention layer converted; not converted: "
                         f"{', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''} (convert with all layers)")


def _final_projection(model: nn.Module) -> nn.Module:
    return model.proj_out_2 if hasattr(model, "proj_out_2") else model.proj_out  # DiT / PixArt, SD3


def enable_sequence_parallel(model: nn.Module, group=None) -> nn.Module:
    """Split every forward of a converted model by token-grid rows across the processes of ``group``."""
    if not dist.is_initialized():
        raise RuntimeError("torch.distributed is not initialised; start with torchrun or lindit generate --parallel")
    if getattr(model, "lindit_grid", None) is None:
        raise ValueError("sequence parallelism needs a model converted by lindit.convert")
    _check_fully_converted(model)
    grid = model.lindit_grid
    grid.parallel = _Parallel(group)

    def cut_rows(module, args, tokens):  # (B, N, C) -> (B, n_local, C)
        shard = grid.current().shard
        return tokens[:, shard.start * grid.hw[1]: shard.stop * grid.hw[1]]

    def gather(module, args, tokens):  # (B, n_local, C_out) -> (B, N, C_out)
        return gather_rows(tokens, grid.current())

    shard_layers(model, lambda: grid.current().shard)
    model.lindit_parallel_hooks = (model.pos_embed.register_forward_hook(cut_rows),
                                   _final_projection(model).register_forward_hook(gather))
    return model


def disable_sequence_parallel(model: nn.Module) -> nn.Module:
    """Undo ``enable_sequence_parallel``: the model computes the whole image on this process again."""
    for hook in model.__dict__.pop("lindit_parallel_hooks", ()):
        hook.remove()
    model.lindit_grid.parallel = None
    unshard_layers(model)
    return model


def backend() -> str:
    """The process group's backend: gloo for CPU tensors, plus NCCL for CUDA tensors where CUDA is present."""
    return "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"


def _use_local_gpu(local_rank: int) -> None:
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank % torch.cuda.device_count())  # one process per GPU


def _worker(rank: int, world: int, store: str, fn, args) -> None:
    dist.init_process_group(backend(), init_method=f"file://{store}", rank=rank, world_size=world)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    _use_local_gpu(rank)
    try:
        fn(rank, world, *args)
    except Exception as err:  # noqa: BLE001 -- a user error goes back to the parent as one line, quietly
        from ..errors import user_message

        line = user_message(err)
        if line is None:
            raise
        with open(f"{store}.error.{rank}", "w") as f:
            f.write(line)
        raise SystemExit(2) from None
    finally:
        dist.destroy_process_group()


def launch(fn, world: int, *args) -> None:
    """Run ``fn(rank, world, *args)`` in ``world`` processes with torch.distributed initialised (gloo on
    CPU, NCCL on GPUs, one GPU per process). Under torchrun (RANK/WORLD_SIZE set) the current process just
    joins its group."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        dist.init_process_group(backend())
        _use_local_gpu(int(os.environ.get("LOCAL_RANK", os.environ["RANK"])))
        try:
            fn(dist.get_rank(), dist.get_world_size(), *args)
        finally:
            dist.destroy_process_group()
        return
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        store = os.path.join(tmp, "store")
        quiet = logging.getLogger("torch.multiprocessing.spawn")  # it logs the SIGTERM of the other workers
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            mp.spawn(_worker, args=(world, store, fn, args), nprocs=world, join=True)
        except mp.ProcessExitedException:
            errors = sorted(p for p in os.listdir(tmp) if p.startswith("store.error."))
            if not errors:
                raise
            with open(os.path.join(tmp, errors[0])) as f:
                raise UserError(f.read()) from None
        finally:
            quiet.setLevel(level)

