"""Tokens (B, N, C) and the row-major token grid (h, w) they come from.

Row-major tokens are the channels-last memory layout of a (B, C, h, w) image, so moving between the two
views is free: ``to_image`` returns a channels-last view and ``to_tokens`` undoes it without a copy when
the image is channels-last (as every conv output here is).
"""

from __future__ import annotations

import torch

Grid = tuple[int, int]


def check_grid(x: torch.Tensor, grid: Grid) -> None:
    """Raise ValueError unless x is (B, N, C) with N == h * w."""
    if x.dim() != 3:
        raise ValueError(f"tokens must have shape (B, N, C), got {tuple(x.shape)}")
    h, w = grid
    if h <= 0 or w <= 0 or x.shape[1] != h * w:
        raise ValueError(
            f"token count N={x.shape[1]} does not match the grid h={h} x w={w} (= {h * w}); "
            "tokens must be the row-major h*w grid of the latent image"
        )


def to_image(x: torch.Tensor, grid: Grid) -> torch.Tensor:
    """(B, h*w, C) -> (B, C, h, w), a channels-last view of the same memory."""
    b, _, c = x.shape
    h, w = grid
    return x.reshape(b, h, w, c).permute(0, 3, 1, 2)


def to_tokens(img: torch.Tensor) -> tuple[torch.Tensor, Grid]:
    """(B, C, h, w) -> ((B, h*w, C), (h, w)); free for channels-last images."""
    b, c, h, w = img.shape
    return img.permute(0, 2, 3, 1).reshape(b, h * w, c), (h, w)


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, N, H*d) -> (B, H, N, d)."""
    b, n, c = x.shape
    return x.view(b, n, heads, c // heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, N, d) -> (B, N, H*d)."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


class OneBand:
    """What the other row bands of the image add to a layer's attention: on one device there are none.

    Attention layers call these hooks (``self.bands``) where sequence parallelism must combine the bands;
    ``lindit.parallel`` swaps in its row-sharded version. ``k_grid`` is the local grid of the keys."""

    def reduce_state(self, k_grid: Grid):
        """``reduce_state`` for ``functional.linear_attention``: None keeps the local keys' state."""
        return None

    def combine(self, k_grid: Grid):
        """``combine`` for ``functional.joint_prompt_attention``: None keeps the local keys' part."""
        return None

    def gather(self, tokens, k_grid: Grid):
        """Every key token of the image, (..., M, C)."""
        return tokens

    def count(self, n: int, grid: Grid) -> int:
        """The image's token count from this band's ``n`` tokens on ``grid``."""
        return n


class OnGrid:
    """Mixin of layers that work on the token grid.

    Called directly, a layer takes its grid: ``layer(x, (h, w))``. Inside a converted diffusers model the
    blocks call it with diffusers' attention signature and no grid; then ``grid_source`` (the model's
    ``TokenGrid``, set at conversion) supplies the grid of the forward in progress. ``bands``: see ``OneBand``.
    """

    grid_source = None
    bands = OneBand()

    def resolve_grid(self, grid: Grid | None) -> Grid:
        if grid is not None:
            return grid
        if self.grid_source is None:
            raise ValueError(f"{type(self).__name__} needs the token grid: call it as layer(x, (h, w))")
        return self.grid_source.current()
