"""Training metrics: a progress bar with every loss term, ``metrics.csv``, and TensorBoard when installed.

The CSV has one row per ``logging.every`` optimisation steps; on resume, rows after the checkpoint's step
(written by the run that was interrupted) are dropped, so the file reads as one uninterrupted run.
"""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

from tqdm.auto import tqdm

from ..io import write_text
from .losses import TERMS

COLUMNS = ("step", "stage", "lr", "loss", *TERMS, "samples_per_s")


def tensorboard_available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


class MetricsLog:
    """Rows of COLUMNS appended to ``path`` (main process only)."""

    def __init__(self, path: str | Path, resume_step: int = 0):
        self.path = Path(path)
        if self.path.is_file():  # rows of an interrupted attempt of this run (a new run gets a new folder)
            self._truncate_after(resume_step)

    def _truncate_after(self, step: int) -> None:
        with open(self.path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) <= step]
        lines = [",".join(COLUMNS)] + [",".join(r.get(c, "") for c in COLUMNS) for r in rows]
        write_text(self.path, "\n".join(lines) + "\n")

    def write(self, row: dict) -> None:
        new = not self.path.is_file()
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({k: _fmt(row.get(k, "")) for k in COLUMNS})


def _fmt(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def progress_bar(total: int, initial: int, enabled: bool) -> tqdm:
    return tqdm(total=total, initial=initial, disable=not enabled, desc="distill", dynamic_ncols=True)


def postfix(row: dict) -> dict[str, str]:
    """The loss terms of a row, short enough for a progress bar."""
    return {k: f"{row[k]:.4g}" for k in ("loss", *TERMS) if isinstance(row.get(k), float)}
