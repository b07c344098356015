"""Percentile bootstrap confidence intervals for several statistics sharing one set of resamples."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

#: Named statistics of the cases an index array picks; a name left out is undefined in that resample.
Statistics = Callable[[np.ndarray], dict[str, float]]

#: An interval needs the statistic to be defined in at least this share of the resamples.
MIN_DEFINED_SHARE = 0.5


@dataclass(frozen=True)
class Interval:
    low: float | None
    high: float | None
    resamples: int  # resamples in which the statistic was defined
    note: str | None = None

    def as_dict(self) -> dict:
        return {"low": self.low, "high": self.high, "resamples": self.resamples, "note": self.note}


def bootstrap_intervals(
    statistics: Statistics,
    names: list[str],
    n_cases: int,
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    progress: bool = False,
) -> dict[str, Interval]:
    """Percentile intervals of each named statistic over ``resamples`` seeded resamples of the cases."""
    if not 0 < confidence < 1:
        raise ValueError("confidence must lie between 0 and 1")
    if n_cases == 0 or resamples == 0:
        return {name: Interval(None, None, 0, "no resamples") for name in names}
    rng = np.random.default_rng(seed)
    values: dict[str, list[float]] = {name: [] for name in names}
    rounds = range(resamples)
    if progress:
        from rich.progress import track

        rounds = track(rounds, description=f"bootstrap ({resamples} resamples)", transient=True)
    for _ in rounds:
        found = statistics(rng.integers(0, n_cases, n_cases))
        for name in names:
            if found.get(name) is not None:
                values[name].append(found[name])
    tail = (1 - confidence) / 2 * 100
    intervals = {}
    for name, found in values.items():
        if len(found) < MIN_DEFINED_SHARE * resamples:
            intervals[name] = Interval(None, None, len(found), "undefined in most resamples (too few cases of a class)")
        else:
            low, high = np.percentile(found, [tail, 100 - tail])
            intervals[name] = Interval(float(low), float(high), len(found))
    return intervals
