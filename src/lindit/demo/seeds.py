"""Several seeds of one demo cell: mean and spread, and the rule that turns two cells into a verdict.

Each seed repeats a model's distillation (its data draws, noise and order) and its sampling noise, so the
spread of a cell over seeds is what the report's claims are judged against:

    reproduced       the means satisfy the claim by more than the noise
    not reproduced   the means miss it by more than the noise
    within noise     otherwise

where the noise of a comparison of cells a and b is sqrt(sd_a^2 + sd_b^2), the spread of the difference of
two single runs, with sd the sample standard deviation over the seeds (n - 1 in the denominator). One seed
has no spread: its verdicts compare the two values and are one-seed verdicts.
"""

from __future__ import annotations

import math
import statistics

SPREAD = "sample standard deviation over seeds"
# Row values averaged over seeds; the rest (latency, train steps) are the first seed's.
AVERAGED = ("fid", "adherence", "mse_to_teacher", "psnr_to_teacher", "mse_unpaired", "train_seconds")
SPREAD_OF = ("fid", "adherence", "mse_to_teacher", "psnr_to_teacher")


def combine(runs: list[dict], seeds: list[int]) -> dict:
    """One row from the rows of several seeds: means, "sd" per metric and the per-seed values."""
    row = dict(runs[0])
    for key in AVERAGED:
        values = [r[key] for r in runs if r.get(key) is not None]
        row[key] = round(statistics.fmean(values), 6) if values else None
    if len(runs) > 1:
        row["sd"] = {k: _sd([r[k] for r in runs if r.get(k) is not None]) for k in SPREAD_OF}
        row["seeds"] = list(seeds)
        row["per_seed"] = [{k: r.get(k) for k in SPREAD_OF} for r in runs]
    return row


def _sd(values: list[float]) -> float | None:
    return round(statistics.stdev(values), 6) if len(values) > 1 else None


def sd(row: dict, key: str) -> float | None:
    """The spread of a cell, None for a one-seed row."""
    return (row.get("sd") or {}).get(key)


def noise(*spreads: float | None) -> float | None:
    """sqrt of the summed squares; None if any cell has no spread (one seed)."""
    if any(s is None for s in spreads):
        return None
    return math.sqrt(sum(s * s for s in spreads))


def verdict(margin: float, noise_: float | None, inclusive: bool = False) -> str:
    """``margin`` > 0: the means satisfy the claim by that much (``inclusive``: a bar met exactly counts);
    ``noise_`` None: one seed."""
    if noise_ is None:
        return "reproduced" if margin > 0 or (inclusive and margin == 0) else "not reproduced"
    if margin > noise_:
        return "reproduced"
    return "not reproduced" if margin < -noise_ else "within noise"
