"""Sequence parallelism with 2 and 3 CPU processes (gloo) equals the single-process forward.

The token grid has 13 rows, so bands are uneven and start at odd rows (stride-2 compression must still
hand each compressed row to exactly one process).
"""

import sys
from pathlib import Path

import pytest
import torch

import lindit
from lindit.parallel import enable_sequence_parallel, launch

CASES = [("pixart", "edit", {}), ("pixart", "lit", {}), ("pixart", "sana", {}), ("pixart", "edit_cf_qk", {}),
         ("pixart", "kv_compress", {"layers": [0, 1]}), ("sd3", "mm_edit", {}), ("sd3", "mm_edit_exact", {}),
         ("sd3", "linear_mmdit_beta", {}), ("sd3", "sana_mmdit", {}), ("dit", "lit", {})]
LATENT = {"pixart": (26, 12), "sd3": (26, 12), "dit": (26, 26)}  # 13-row token grids


def _compare(rank, world, out_dir):
    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_models import BUILDERS, forward

    results = []
    for fam, method, options in CASES:
        torch.manual_seed(0)
        student = lindit.convert(BUILDERS[fam](), method, **options)
        reference = forward(student, fam, *LATENT[fam])
        enable_sequence_parallel(student)
        seen = []
        layer = next(iter(lindit.integrations.diffusers.converted_layers(student).values()))
        layer.register_forward_pre_hook(
            lambda m, a, kw: seen.append((a[0] if a else kw["hidden_states"]).shape[1]), with_kwargs=True)
        sharded = forward(student, fam, *LATENT[fam])
        err = (sharded - reference).abs().max().item() / reference.abs().max().item()
        results.append(f"{fam}/{method} {err:.3e} {seen[0]}")
    (Path(out_dir) / f"rank{rank}.txt").write_text("\n".join(results))


@pytest.mark.slow
@pytest.mark.parametrize("world", [2, 3])
def test_sharded_forward_equals_single_process(tmp_path, world):
    launch(_compare, world, str(tmp_path))
    for rank in range(world):
        for line in (tmp_path / f"rank{rank}.txt").read_text().splitlines():
            name, err, tokens = line.split()
            assert float(err) < 1e-5, f"rank {rank} {name}: relative error {err}"
            cols = LATENT[name.split("/")[0]][1] // 2
            assert int(tokens) < 13 * cols and int(tokens) % cols == 0, f"{name}: rank {rank} held {tokens} tokens"


def test_partially_converted_models_are_refused(monkeypatch):
    from tiny_models import tiny_pixart

    student = lindit.convert(tiny_pixart(), "kv_compress")  # default: only the second half of the blocks
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    with pytest.raises(ValueError, match=r"not converted: transformer_blocks\.0\.attn1"):
        enable_sequence_parallel(student)


class OneProcess:
    """torch.distributed of a group of one (the collectives leave their tensors as they are)."""

    @staticmethod
    def all_reduce(t, group=None):
        pass

    @staticmethod
    def all_gather(out, t, group=None):
        out[0].copy_(t)


@pytest.mark.parametrize("fam, method", [("pixart", "edit"), ("sd3", "mm_edit"), ("pixart", "lit")])
def test_the_swap_keeps_state_dict_names_saving_and_undoes_itself(monkeypatch, tmp_path, fam, method):
    from tiny_models import BUILDERS, forward

    import lindit.parallel.shard as shard
    from lindit.parallel import disable_sequence_parallel
    from lindit.parallel.layers import ShardedConv2d, ShardedGroupNorm

    for name, value in (("is_initialized", lambda: True), ("get_rank", lambda group=None: 0),
                        ("get_world_size", lambda group=None: 1)):
        monkeypatch.setattr(torch.distributed, name, value)
    monkeypatch.setattr(shard, "dist", OneProcess)
    torch.manual_seed(0)
    student = lindit.convert(BUILDERS[fam](), method)
    keys, reference = list(student.state_dict()), forward(student, fam, *LATENT[fam])
    enable_sequence_parallel(student)
    assert any(isinstance(m, ShardedConv2d) for m in student.modules())
    assert list(student.state_dict()) == keys
    torch.testing.assert_close(forward(student, fam, *LATENT[fam]), reference, rtol=1e-5, atol=1e-5)
    lindit.save(student, tmp_path / "sharded")
    assert list(lindit.load(tmp_path / "sharded").state_dict()) == keys
    disable_sequence_parallel(student)
    assert not any(isinstance(m, (ShardedConv2d, ShardedGroupNorm)) for m in student.modules())
    assert all("bands" not in m.__dict__ for m in student.modules()) and student.lindit_grid.parallel is None
    assert list(student.state_dict()) == keys
    torch.testing.assert_close(forward(student, fam, *LATENT[fam]), reference)
