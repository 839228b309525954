"""How a lindit layer sits in a diffusers block: the call signature of the layer it replaces, plus the grid.

diffusers hands attention layers tokens (B, N, C) only, never the (h, w) grid, and aspect-ratio buckets
make sqrt(N) wrong. So a converted model owns one ``TokenGrid``: a forward pre-hook on the model reads
the latent's height and width from ``hidden_states`` on every call (pipelines included, whatever kwargs
they pass) and every adapter reads the grid from it. The lindit layer is a real submodule of the block
(``block.attn1 = SelfAttentionAdapter(...)``), so its weights live in the model's own state dict; no
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

    def capture(self, module, args, kwargs) -> None:
        """Forward pre-hook (with_kwargs=True) of the transformer: latent (B, C, H, W) -> grid (H/p, W/p)."""
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


def install_grid(model: nn.Module, patch_size: int) -> TokenGrid:
    """Give ``model`` a TokenGrid kept current by a forward pre-hook; returns it."""
    grid = TokenGrid(patch_size)
    model.lindit_grid = grid
    model.register_forward_pre_hook(grid.capture, with_kwargs=True)
    return grid


@contextmanager
def token_grid(model: nn.Module, grid: Grid):
    """Set the grid by hand, for calling blocks or layers of a converted model directly (benchmarks)."""
    tracker: TokenGrid = model.lindit_grid
    previous, tracker.hw = tracker.hw, tuple(grid)
    try:
        yield
    finally:
        tracker.hw = previous


class _GridAdapter(nn.Module):
    """Holds a lindit module as ``.inner`` and the model's TokenGrid (a plain attribute, not a submodule)."""

    def __init__(self, inner: nn.Module, grid: TokenGrid):
        super().__init__()
        self.inner = inner
        self.grid = grid


class SelfAttentionAdapter(_GridAdapter):
    """Stands in for a diffusers self-attention ``Attention`` (PixArt/DiT ``attn1``, SD3.5 ``attn2``)."""

    def forward(self, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        if encoder_hidden_states is not None:
            raise ValueError("a converted self-attention layer got encoder_hidden_states; it attends to image tokens only")
        if attention_mask is not None:
            raise ValueError("image-token attention masks are not supported by converted self-attention layers")
        return self.inner(hidden_states, self.grid.current())  # (B, N, C)


class JointAttentionAdapter(_GridAdapter):
    """Stands in for SD3's joint ``Attention``: returns (image tokens, prompt tokens or None)."""

    def forward(self, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        if encoder_hidden_states is None:
            raise ValueError("a converted joint attention layer needs encoder_hidden_states (prompt tokens)")
        if attention_mask is not None:
            raise ValueError("attention masks are not supported by converted joint attention layers")
        return self.inner(hidden_states, self.grid.current(), encoder_hidden_states)


class FeedForwardAdapter(_GridAdapter):
    """Stands in for a block's ``ff`` when a method replaces it (SANA's Mix-FFN needs the grid)."""

    def forward(self, hidden_states, *args, **kwargs):
        return self.inner(hidden_states, self.grid.current())  # (B, N, C)
