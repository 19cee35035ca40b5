"""Estimates with their intervals: across-seed t-intervals, or one run's
oracle-sampling bootstrap bounds, and how they print."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95
NO_SIGNAL = "no signal"
#: Original's MIA AUC on a client at calibration below which the oracle barely
#: sees it, so its FR has no signal. One threshold for the whole project: the
#: reports, the analysis API, the sweeps and the tuning scripts import it.
SIGNAL_AUC = 0.65
NAN = float("nan")


@dataclass(frozen=True)
class Estimate:
    """A value with an optional interval.

    ``across_seeds``: the interval is a t-interval of the mean over ``n``
    seeds (shown as mean ± half-width); otherwise it is the oracle's bootstrap
    interval of one run, model fixed (shown as value [lo, hi]). A mean of +inf
    (a speed-up over a method that costs nothing) shows as "∞".
    """

    mean: float
    lo: float = NAN
    hi: float = NAN
    n: int = 1
    across_seeds: bool = False
    no_signal: bool = False  # an FR of a client the oracle did not see: not a forgetting rate
    note: str = ""  # appended to the text, e.g. "2 of 3 seeds"

    def text(self, digits: int = 3, interval: bool = True) -> str:
        if self.no_signal:
            return NO_SIGNAL
        if self.mean == math.inf:
            return "∞" + self._note()
        if not finite(self.mean):
            return "n/a"
        m = num_text(self.mean, digits)
        if not interval or not (finite(self.lo) and finite(self.hi)):
            return m + self._note()
        if self.across_seeds:
            return f"{m} ± {num_text((self.hi - self.lo) / 2, digits)}" + self._note()
        return f"{m} [{num_text(self.lo, digits)}, {num_text(self.hi, digits)}]" + self._note()

    def _note(self) -> str:
        return f" ({self.note})" if self.note else ""


def finite(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def num_text(x: float, digits: int) -> str:
    return f"{x:,.{digits}f}" if digits == 0 else f"{x:.{digits}f}"


def bounds(metric: str) -> tuple[str, str]:
    """The bootstrap bounds a single run may carry for a metric."""
    return f"{metric}_lo", f"{metric}_hi"


def round_text(r: float) -> str:
    """4.0 -> "4", 3.5 -> "3.5"."""
    r = float(r)
    return str(int(r)) if r.is_integer() else f"{r:g}"


def event_point(t: float) -> float:
    """The round label right after the unlearning step of the event at round t."""
    return float(t) - 0.5


def t_interval(values: Sequence[float]) -> Estimate:
    """Mean and 95% t-interval of the finite values (no interval for n < 2)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return Estimate(NAN, n=0, across_seeds=True)
    mean = float(x.mean())
    if x.size < 2:
        return Estimate(mean, n=1, across_seeds=True)
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return Estimate(mean, mean - half, mean + half, int(x.size), True)


def estimate_of(values: Sequence[float], lo: Sequence[float], hi: Sequence[float], across_seeds: bool,
                 usable: Sequence[bool] | None = None) -> Estimate:
    """One cell from per-run values: across seeds a t-interval of the usable runs'
    values, for one run its value with its bootstrap bounds.

    ``usable`` False marks a run whose value has no signal (an FR of a client
    the oracle did not see): left out; none usable gives "no signal". A value of
    +inf (a speed-up over a method that costs nothing) in every seed gives "∞";
    in some seeds only, the interval of the finite ones notes how many were ∞.
    """
    keep = [i for i in range(len(values)) if usable is None or usable[i]]
    if not keep:
        return Estimate(NAN, no_signal=True, across_seeds=across_seeds)
    dropped = len(values) - len(keep)
    if not across_seeds:
        i = keep[0]
        return Estimate(values[i], lo[i], hi[i])
    x = np.asarray([values[i] for i in keep], dtype=float)
    n_inf = int(np.sum(x == math.inf))
    notes = []
    if dropped:
        notes.append(f"{len(keep)} of {len(values)} seeds; {dropped} {NO_SIGNAL}")
    if n_inf and n_inf == int(np.sum(~np.isnan(x))):
        return Estimate(math.inf, n=n_inf, across_seeds=True, note="; ".join(notes))
    if n_inf:
        notes.append(f"∞ in {n_inf} of {x.size} seeds")
    est = t_interval(x)
    return Estimate(est.mean, est.lo, est.hi, est.n, True, note="; ".join(notes))


def band_across(curves: list[pd.Series]) -> pd.DataFrame:
    """Per-round mean and t-interval across seeds' curves."""
    frame = pd.concat(curves, axis=1, ignore_index=True)
    n = frame.notna().sum(axis=1)
    mean = frame.mean(axis=1)
    tq = pd.Series(stats.t.ppf(0.5 + CONFIDENCE / 2, np.maximum(n - 1, 1)), index=frame.index).where(n >= 2)
    half = tq * frame.std(axis=1, ddof=1) / np.sqrt(n)
    return pd.DataFrame({"mean": mean, "lo": mean - half, "hi": mean + half})


def across(df: pd.DataFrame, column: str, keys: list[str]) -> pd.DataFrame:
    """Mean, 95% t-interval (NaN with one value) and count of ``column`` per ``keys``."""
    def summary(x: pd.Series) -> pd.Series:
        x = x.dropna()
        n, mean = len(x), float(x.mean()) if len(x) else float("nan")
        half = float(stats.t.ppf(0.975, n - 1) * x.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
        return pd.Series({"mean": mean, "lo": mean - half, "hi": mean + half, "n": n})

    return df.groupby(keys)[column].apply(summary).unstack().reset_index()
