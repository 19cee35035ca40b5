"""Paired verdicts: a method against retrain, seed by seed.

One seed gives the method arm and the retrain arm the same data, the same
initialisation and the same client sampling, so the two are compared as pairs:
per seed the difference method − retrain, then the mean difference with its
95% t-interval over the seeds. Comparing a method's mean with retrain's own
interval (unpaired) throws that pairing away and mistakes seed-to-seed spread
for a difference, or hides one.

Each difference is judged against a margin declared once, in
:data:`VERDICT_MARGINS`: a gap inside ± margin is too small to matter.

- **equivalent**: the interval lies inside [−margin, +margin]: any gap there
  is too small to matter (this wins over a gap that is real but negligible);
- **worse** / **better**: otherwise, the interval excludes 0 on the worse /
  better side (:data:`WORSE_IF_HIGHER` gives each metric's side): the method
  differs from retrain, by more than the margin allows us to ignore;
- **undecided**: the interval holds 0 and reaches past the margin;
  :attr:`PairedVerdict.seeds_to_decide` says how many seeds would decide it if
  the mean and the spread stayed as observed;
- **one seed, no interval**: a single pair has no spread to judge by.

For example, a paired AUC gap of +0.028 ± 0.019 over 3 seeds ([0.009, 0.047])
is *worse*; an FR gap of −0.055 ± 0.091 is *undecided*.

Which side is worse, per metric: a method *worse* than retrain remembers more
of the client, or serves the federation less well.

- ``mia_auc``, ``client_mia_z``, ``forget_accuracy``: higher is worse (the
  model still separates, or still fits, the client's samples). Clearly lower
  than retrain reads "better" here; for forgetting it is the
  over-unlearning side, which the ``over_unlearning`` flag judges.
- ``fr``, ``fr_fixed_fpr``: lower is worse (less was forgotten).
- ``test_accuracy`` (a global metric): lower is worse.
- ``relapse_auc``, ``relapse_z`` (already a change of a gap, one per seed):
  higher is worse (the gap to retrain grew after the step), judged on the
  margin of the metric they are a change of.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from fedforget.analysis.stats import CONFIDENCE, NAN, t_interval
from fedforget.oracle.audit import DETECTION_LEVEL

__all__ = ["BETTER", "DETECTION_LEVEL", "EQUIVALENT", "GLOBAL_METRICS", "NEVER", "NO_PAIRS", "ONE_SEED",
           "PairedVerdict", "RELAPSE_OF", "UNDECIDED", "VERDICT_COLUMNS", "VERDICT_LABELS", "VERDICT_MARGINS",
           "VERDICT_METRICS", "WORSE", "WORSE_IF_HIGHER", "margin_of", "paired_verdict", "seeds_to_decide",
           "verdict_table"]

#: The margin of each metric's paired gap to retrain: a gap inside ± margin is
#: too small to matter (AUC and accuracies in their own units, z in null SDs).
VERDICT_MARGINS: dict[str, float] = {
    "mia_auc": 0.02,
    "fr": 0.05,
    "fr_fixed_fpr": 0.05,
    "forget_accuracy": 0.02,
    "test_accuracy": 0.02,
    "client_mia_z": 0.5,
}
#: The metrics judged against retrain, in the order reports show them.
VERDICT_METRICS: tuple[str, ...] = tuple(VERDICT_MARGINS)
#: True where a method above retrain is worse (it remembers more of the client).
WORSE_IF_HIGHER: dict[str, bool] = {
    "mia_auc": True, "client_mia_z": True, "forget_accuracy": True,
    "fr": False, "fr_fixed_fpr": False, "test_accuracy": False,
    "relapse_auc": True, "relapse_z": True,
}
#: Verdict metrics read on the global rows (client NaN), paired per run like the others.
GLOBAL_METRICS: tuple[str, ...] = ("test_accuracy",)
#: Relapse metrics -> the metric whose gap to retrain they are a change of (its margin applies).
RELAPSE_OF: dict[str, str] = {"relapse_auc": "mia_auc", "relapse_z": "client_mia_z"}

#: How reports name the verdict metrics.
VERDICT_LABELS: dict[str, str] = {
    "mia_auc": "MIA AUC", "fr": "FR", "fr_fixed_fpr": "FR (fixed FPR)", "forget_accuracy": "forget accuracy",
    "test_accuracy": "test accuracy", "client_mia_z": "client-level z",
    "relapse_auc": "AUC relapse", "relapse_z": "z relapse",
}

EQUIVALENT, WORSE, BETTER, UNDECIDED = "equivalent", "worse", "better", "undecided"
ONE_SEED = "one seed, no interval"
NO_PAIRS = "n/a"  # no seed has both values (or, set by the caller, "no signal": none has a meaningful one)
NEVER = "never at this spread"  # no number of seeds decides it (a zero mean against a zero margin)
#: Columns of a verdict table, after its grouping keys.
VERDICT_COLUMNS = ["metric", "at", "n_seeds", "mean", "lo", "hi", "margin", "verdict", "seeds_to_decide"]


def margin_of(metric: str) -> float:
    """The declared margin of a metric (a relapse metric: its base metric's)."""
    return VERDICT_MARGINS[RELAPSE_OF.get(metric, metric)]


@dataclass(frozen=True)
class PairedVerdict:
    """A method's paired gap to retrain over seeds, and what it decides.

    Attributes
    ----------
    metric : str
        The metric compared.
    n : int
        Seeds with a finite difference (the pairs used).
    mean, lo, hi : float
        Mean difference method − retrain and its 95% t-interval (NaN bounds
        with fewer than two pairs; NaN mean with none).
    margin : float
        The metric's margin (:data:`VERDICT_MARGINS`).
    verdict : str
        ``equivalent``, ``worse``, ``better``, ``undecided``, ``one seed, no
        interval``, or ``n/a`` (no pair).
    seeds_to_decide : float
        For ``undecided`` only: the smallest number of seeds whose t-interval,
        at the observed mean and standard deviation, would decide it; ``inf``
        when no number would. NaN otherwise.
    """

    metric: str
    n: int
    mean: float
    lo: float
    hi: float
    margin: float
    verdict: str
    seeds_to_decide: float = NAN

    def gap_text(self, digits: int = 3) -> str:
        """``+0.028 ± 0.019``; one pair: ``+0.028``; none: ``n/a``."""
        if not math.isfinite(self.mean):
            return NO_PAIRS
        mean = f"{self.mean:+.{digits}f}"
        if not (math.isfinite(self.lo) and math.isfinite(self.hi)):
            return mean
        return f"{mean} ± {(self.hi - self.lo) / 2:.{digits}f}"

    def verdict_text(self) -> str:
        """The verdict word; an undecided one says how many seeds would decide it."""
        if self.verdict != UNDECIDED:
            return self.verdict
        if math.isinf(self.seeds_to_decide):
            return f"{UNDECIDED} ({NEVER})"
        return f"{UNDECIDED} ({int(self.seeds_to_decide)} seeds would decide it at this spread)"

    def text(self, digits: int = 3) -> str:
        """Gap and verdict in one cell: ``+0.028 ± 0.019, worse``; without a
        pair, the verdict alone (``n/a``, ``no signal``)."""
        return self.verdict if self.n == 0 else f"{self.gap_text(digits)}, {self.verdict_text()}"


def paired_verdict(diffs: Sequence[float], metric: str) -> PairedVerdict:
    """Judge the per-seed differences method − retrain of one metric.

    Parameters
    ----------
    diffs : sequence of float
        One difference per seed; NaN and infinite values (a seed missing
        either arm's value) are left out.
    metric : str
        A key of :data:`VERDICT_MARGINS` or :data:`RELAPSE_OF`: gives the
        margin and which side is worse.

    Returns
    -------
    PairedVerdict
    """
    x = np.asarray(diffs, dtype=float)
    x = x[np.isfinite(x)]
    margin = margin_of(metric)
    est = t_interval(x)
    if x.size < 2:
        verdict = ONE_SEED if x.size == 1 else NO_PAIRS
        return PairedVerdict(metric, int(x.size), est.mean, NAN, NAN, margin, verdict)
    verdict = _decide(est.lo, est.hi, margin, WORSE_IF_HIGHER[metric])
    n_more = seeds_to_decide(est.mean, float(x.std(ddof=1)), margin, x.size) if verdict == UNDECIDED else NAN
    return PairedVerdict(metric, int(x.size), est.mean, est.lo, est.hi, margin, verdict, n_more)


def _decide(lo: float, hi: float, margin: float, worse_if_higher: bool) -> str:
    """The verdict of an interval [lo, hi] of method − retrain."""
    if -margin <= lo and hi <= margin:
        return EQUIVALENT
    if lo > 0:
        return WORSE if worse_if_higher else BETTER
    if hi < 0:
        return BETTER if worse_if_higher else WORSE
    return UNDECIDED


def _half_width(sd: float, n: int) -> float:
    return float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * sd / math.sqrt(n))


def seeds_to_decide(mean: float, sd: float, margin: float, n_seen: int = 1) -> float:
    """The smallest number of seeds (more than ``n_seen``) whose t-interval,
    at this mean and standard deviation, decides against ``margin``.

    An interval is decided once it clears 0 (half-width below ``|mean|``:
    worse or better) or fits the band (half-width within ``margin − |mean|``:
    equivalent), whichever comes first. A mean of 0 with a margin of 0 is
    never decided: ``inf``.
    """
    to_clear_zero, to_fit_band = abs(mean), margin - abs(mean)
    if to_clear_zero == 0 and to_fit_band <= 0:
        return math.inf

    def decided(h: float) -> bool:
        return h < to_clear_zero or h <= to_fit_band

    # The normal quantile's answer is a lower bound (t > z); step up from it.
    z = stats.norm.ppf(0.5 + CONFIDENCE / 2)
    n = max(2, n_seen + 1, math.ceil((z * sd / max(to_clear_zero, to_fit_band)) ** 2))
    while not decided(_half_width(sd, n)):
        n += 1
    return float(n)


def verdict_table(gaps: pd.DataFrame, keys: list[str], at: str) -> pd.DataFrame:
    """Paired verdicts of a long table of per-seed gaps.

    Parameters
    ----------
    gaps : DataFrame
        Columns ``keys``, ``metric`` and ``gap`` (method − retrain, one row per
        seed and metric).
    keys : list of str
        What one verdict is about (e.g. ``["arm", "client"]``).
    at : str
        The ``at`` column's value (``event`` or ``final``).

    Returns
    -------
    DataFrame
        ``keys`` then :data:`VERDICT_COLUMNS`, one row per group and metric.
    """
    rows = []
    for k, g in gaps.groupby([*keys, "metric"], sort=False, dropna=False):
        v = paired_verdict(g["gap"].to_numpy(dtype=float), str(k[-1]))
        rows.append([*k, at, v.n, v.mean, v.lo, v.hi, v.margin, v.verdict, v.seeds_to_decide])
    return pd.DataFrame(rows, columns=[*keys, *VERDICT_COLUMNS])
