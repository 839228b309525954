"""Comparing a lindit layer with its reference: random weights, outputs and every gradient."""

from __future__ import annotations

import torch

from .ops import Params


def randomise(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter drawn at random (float64), so no initial symmetry (SC's constant 1/9 kernel, zero
    biases, unit norms) can hide a transposed grid, a flipped kernel or a missing term."""
    g = torch.Generator().manual_seed(seed)
    module.double()
    with torch.no_grad():
        for p in module.parameters():
            fan_in = p[0].numel() if p.dim() > 1 else 4
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) / fan_in**0.5)
    return module


def tokens(n, dim, seed):
    """(2, n, dim) float64 tokens."""
    return torch.randn(2, n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def close(mine, ref, what):
    scale = ref.abs().max().item()
    torch.testing.assert_close(mine, ref, rtol=1e-4, atol=2e-5 * max(scale, 1e-3), msg=lambda m: f"{what}: {m}")


def compare(module, run, reference, inputs, what):
    """``run(*inputs)`` (a call of ``module``) and ``reference(Params.of(module), *inputs)`` on the same inputs
    and weights: outputs and the gradients of every input and parameter agree."""
    params = Params.of(module)
    mine_in = [t.clone().requires_grad_() for t in inputs]
    ref_in = [t.clone().requires_grad_() for t in inputs]
    mine, ref = run(*mine_in), reference(params, *ref_in)
    mine, ref = (mine, ref) if isinstance(mine, tuple) else ((mine,), (ref,))
    assert [m is None for m in mine] == [r is None for r in ref], what
    g = torch.Generator().manual_seed(7)
    upstream = [torch.randn(r.shape, generator=g, dtype=torch.float64) for r in ref if r is not None]
    pairs = [(m, r) for m, r in zip(mine, ref) if r is not None]
    for i, (m, r) in enumerate(pairs):
        close(m, r, f"{what}: output {i}")
    names = [n for n, _ in module.named_parameters()]
    grads = torch.autograd.grad(sum((m * u).sum() for (m, _), u in zip(pairs, upstream)),
                                mine_in + list(module.parameters()))
    ref_grads = torch.autograd.grad(sum((r * u).sum() for (_, r), u in zip(pairs, upstream)),
                                    ref_in + [params.tensors[n] for n in names])
    assert not params.unread(), f"{what}: the reference never used {sorted(params.unread())}"
    for name, m, r in zip([f"input {i}" for i in range(len(inputs))] + names, grads, ref_grads):
        close(m, r, f"{what}: gradient of {name}")
