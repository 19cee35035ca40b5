"""A per-example privacy estimate of unlearning from many models.

The NeurIPS 2023 machine-unlearning challenge scored a method by how well an
attacker can tell, for one forget example, models the method unlearned from
models retrained without it. For each forget example: its logit-scaled
confidence ``phi = log p_y - log(1 - p_y)`` under N unlearned and N retrained
models; for every threshold, the false positive and false negative rates of
"unlearned if phi is on one side"; with ``delta = 1e-5``,

    eps = max over thresholds and sides of
          max(log(1 - delta - FPR) - log FNR, log(1 - delta - FNR) - log FPR),

with both rates replaced by their Clopper-Pearson upper bounds (so few models
never claim more than they show). Per-example eps is bucketed in widths of 0.5
and scored 1, 1/2, 1/4, ...; forgetting quality is the mean score.

Only the estimator lives here (pure NumPy/SciPy). ``resolvable_epsilon(N)`` is
the largest eps N models can show at all (perfectly separated samples): an
estimate at that ceiling means "as distinguishable as N models can tell".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import beta

__all__ = ["EpsilonEstimate", "clopper_pearson_upper", "epsilon_of", "forgetting_quality", "resolvable_epsilon"]

DELTA = 1e-5
ALPHA = 0.05  # two-sided Clopper-Pearson level
BUCKET = 0.5


def clopper_pearson_upper(k: np.ndarray | int, n: int, alpha: float = ALPHA) -> np.ndarray:
    """Upper end of the two-sided Clopper-Pearson interval of ``k`` successes in ``n``."""
    k = np.asarray(k, dtype=np.float64)
    upper = beta.ppf(1 - alpha / 2, k + 1, n - k)
    return np.where(k >= n, 1.0, upper)


def _best_epsilon(fpr: np.ndarray, fnr: np.ndarray, delta: float) -> float:
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.log(np.clip(1 - delta - fpr, 1e-300, None)) - np.log(fnr)
        b = np.log(np.clip(1 - delta - fnr, 1e-300, None)) - np.log(fpr)
    values = np.concatenate([a, b])
    values = values[np.isfinite(values)]
    return float(max(values.max(initial=0.0), 0.0))


def epsilon_of(phi_unlearned: np.ndarray, phi_retrained: np.ndarray, delta: float = DELTA,
               alpha: float = ALPHA) -> float:
    """The estimate for one example from its ``phi`` under N unlearned and M
    retrained models (both sides of every threshold; rates at their
    Clopper-Pearson upper bounds); 0 when nothing tells them apart."""
    u = np.sort(np.asarray(phi_unlearned, dtype=np.float64))
    r = np.sort(np.asarray(phi_retrained, dtype=np.float64))
    if u.size == 0 or r.size == 0:
        raise ValueError("need phi under at least one unlearned and one retrained model")
    thresholds = np.concatenate([np.unique(np.concatenate([u, r])), [np.inf]])
    # "unlearned when phi >= t": positives are unlearned models.
    u_below = np.searchsorted(u, thresholds, side="left")  # unlearned called retrained: false negatives
    r_at_or_above = r.size - np.searchsorted(r, thresholds, side="left")  # retrained called unlearned
    fnr = clopper_pearson_upper(u_below, u.size, alpha)
    fpr = clopper_pearson_upper(r_at_or_above, r.size, alpha)
    # and "unlearned when phi < t"
    fnr2 = clopper_pearson_upper(u.size - u_below, u.size, alpha)
    fpr2 = clopper_pearson_upper(r.size - r_at_or_above, r.size, alpha)
    return max(_best_epsilon(fpr, fnr, delta), _best_epsilon(fpr2, fnr2, delta))


def resolvable_epsilon(n_unlearned: int, n_retrained: int | None = None, delta: float = DELTA,
                       alpha: float = ALPHA) -> float:
    """The largest estimate N unlearned and M retrained models can give:
    perfectly separated samples (no error observed on either side)."""
    m = n_unlearned if n_retrained is None else n_retrained
    return epsilon_of(np.ones(n_unlearned), np.zeros(m), delta, alpha)


@dataclass(frozen=True)
class EpsilonEstimate:
    """Per-example estimates of one method and what they rest on."""

    epsilons: np.ndarray
    n_unlearned: int
    n_retrained: int
    ceiling: float  # resolvable_epsilon for these counts

    @property
    def quality(self) -> float:
        return forgetting_quality(self.epsilons)


def forgetting_quality(epsilons: np.ndarray, width: float = BUCKET) -> float:
    """Mean over examples of 2^-k, k = the example's eps bucket (widths ``width``):
    1 for eps < 0.5, 1/2 for [0.5, 1), ... ."""
    eps = np.asarray(epsilons, dtype=np.float64)
    if eps.size == 0:
        return float("nan")
    return float(np.mean(2.0 ** -np.floor(eps / width)))


def estimate(phi_unlearned: np.ndarray, phi_retrained: np.ndarray) -> EpsilonEstimate:
    """Per-example estimates from arrays of shape (models, examples)."""
    u, r = np.asarray(phi_unlearned, dtype=np.float64), np.asarray(phi_retrained, dtype=np.float64)
    if u.ndim != 2 or r.ndim != 2 or u.shape[1] != r.shape[1]:
        raise ValueError("phi arrays must be (models, examples) with the same examples")
    eps = np.array([epsilon_of(u[:, j], r[:, j]) for j in range(u.shape[1])])
    return EpsilonEstimate(eps, u.shape[0], r.shape[0], resolvable_epsilon(u.shape[0], r.shape[0]))
