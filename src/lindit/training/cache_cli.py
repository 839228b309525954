"""Kept for ``demo/runner.py``'s import only: ``encode`` is ``lindit.training.cache.encode``, the command is
``lindit.cli.cache``. Remove once runner.py imports from ``training.cache``."""

from .cache import encode

__all__ = ["encode"]
