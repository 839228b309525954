"""The token grid of a converted model's forward pass.

diffusers hands attention layers tokens (B, N, C) only, never the (h, w) grid, and aspect-ratio buckets
make sqrt(N) wrong. So a converted model owns one ``TokenGrid``: its forward reads the latent's height and
width from ``hidden_states`` on every call (pipelines included, whatever kwargs they pass), and every
converted layer reads the grid from it (``grid_source``). The lindit layers are real submodules of the
blocks (``block.attn1 = LinearAttention(...)``), so their weights live in the model's own state dict; no
attention processor is involved, which sidesteps shared processor instances and weights dropped by
``from_pretrained``.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from ...modules.grid import Grid


class TokenGrid:
    """The (h, w) token grid of the forward pass in progress."""

    def __init__(self, patch_size: int):
        self.patch_size = patch_size
        self.hw: Grid | None = None
        self.parallel = None  # set by lindit.parallel.enable_sequence_parallel: hands out row bands

    @property
    def hw(self) -> Grid | None:
        # Held as the shape of an empty tensor: torch.compile then sees sizes (symbolic under dynamic shapes),
        # not constants it would guard on, so one graph serves every resolution.
        return None if self._shape is None else tuple(self._shape.shape[:2])

    @hw.setter
    def hw(self, value: Grid | None) -> None:
        self._shape = None if value is None else torch.empty(value[0], value[1], 0)
        if value is not None and not torch.compiler.is_compiling():
            torch._dynamo.maybe_mark_dynamic(self._shape, (0, 1))

    def capture(self, args, kwargs) -> None:
        """From a transformer's forward arguments: latent (B, C, H, W) -> grid (H/p, W/p)."""
        latent = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        self.hw = (latent.shape[-2] // self.patch_size, latent.shape[-1] // self.patch_size)

    def current(self) -> Grid:
        """The grid of the tokens this process holds: the whole grid, or its row band when sharded."""
        if self.hw is None:
            raise RuntimeError(
                "no token grid: a lindit layer ran outside its model's forward; wrap direct block calls in "
                "lindit.integrations.diffusers.token_grid(model, (h, w))"
            )
        return self.hw if self.parallel is None else self.parallel.grid(self.hw)

    @contextmanager
    def at(self, hw: Grid | None):
        """Set the grid for the duration of a block of code, then restore the previous one."""
        previous, self.hw = self.hw, hw
        try:
            yield
        finally:
            self.hw = previous

    def checkpointed(self, checkpoint):
        """Wrap a gradient-checkpointing function (diffusers' ``_gradient_checkpointing_func(block, *args)``)
        so that a block recomputed in the backward pass runs on the grid of its own forward: by then another
        forward (another size) may have replaced ``hw``."""

        def run(block, *args, **kwargs):
            hw = self.hw

            def on_grid(*block_args, **block_kwargs):
                with self.at(hw):
                    return block(*block_args, **block_kwargs)

            return checkpoint(on_grid, *args, **kwargs)

        return run


@contextmanager
def token_grid(model: nn.Module, grid: Grid):
    """Set the grid by hand, for calling blocks or layers of a converted model directly (latency measurements)."""
    with model.lindit_grid.at(tuple(grid)):
        yield
