"""Client-level membership test: "is this client's data still in the model?"

Per-sample evidence fades as federations grow (a client that trains in one
round in ten leaves little trace on each sample), but it adds up over a
client's samples. The test compares the client's forget samples with a *pool*
of data nobody trained on (every client's ``audit`` part and the test set,
planted witness samples left out), class by class, on the per-sample score
``-loss`` (the loss attack's score, so it needs no reference models whatever
the oracle's attack).

Statistic. With ``k_c`` of the client's ``n`` samples in class ``c`` and
``P_c`` pool samples of that class,

    D = sum_c (k_c / n) * (client's class-c mean score - pool's class-c mean score),

the shift of the client's mean score over never-trained data of the same label
histogram. A uniform rise of δ in the client's scores raises ``D`` by δ.

Null. Both sides of ``D`` are samples: the client's *and* the pool's. The
earlier test drew pseudo-clients with replacement from the pool and took their
spread as the null, which leaves out the pool mean's own variance
(``sum_c w_c² s_c² / P_c``) and rejects far too often when the client is large
next to the pool (about 15% at a nominal 5% with ``n/P`` near 1). We use an
exact stratified permutation test instead: when the client was never trained
on, its class-``c`` samples and the pool's class-``c`` samples are exchangeable,
so relabelling which ``k_c`` of the ``k_c + P_c`` are "the client", within
every class, gives ``D``'s null distribution with no normal approximation and
no variance formula; it holds for skewed scores and small classes alike. The
``n_permutations`` relabellings are drawn once per event (calibration) and
reused for every arm and round, like the rest of the oracle.

- ``client_mia_pvalue`` = ``(1 + #{D* >= D}) / (1 + n_permutations)``, one-sided
  (membership raises scores); valid at every level, resolution
  ``1 / (1 + n_permutations)``;
- ``client_mia_z`` = ``(D - mean D*) / sd D*``, for reading and pairing across seeds;
- ``client_mia_mde`` = ``(z_0.95 + z_0.80) * sd D*``: the smallest shift of the
  client's mean score the test detects 80% of the time at the 5% level, at
  this client's size and pool. A p above 0.05 means "not detected", and this
  says how large a trace could still hide.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

__all__ = ["ClientMembershipTest", "client_statistic", "MDE_FACTOR", "N_PERMUTATIONS"]

#: Relabellings per event: p-values resolve 0.001.
N_PERMUTATIONS = 999
#: ``z_{1-0.05} + z_{0.80}``: a one-sided 5% test detects a shift of this many
#: null standard deviations 80% of the time.
MDE_FACTOR = float(norm.ppf(0.95) + norm.ppf(0.80))
#: The pool is "too small" when it inflates the test's detectable shift by more
#: than this factor over an unlimited pool (sqrt(2): the pool's variance equals
#: the client's own), or when even a shift of one within-class standard
#: deviation of the score goes undetected.
POOL_INFLATION_WARN = float(np.sqrt(2.0))
MDE_SD_WARN = 1.0


def client_statistic(scores: np.ndarray) -> float:
    """The client's mean per-sample membership score."""
    return float(np.mean(scores))


@dataclass(frozen=True)
class _Stratum:
    """One class: the positions (into members then pool) of its samples, and
    the relabelled "client" positions of every permutation."""

    members: np.ndarray  # (k,) positions of the client's samples of this class
    pool: np.ndarray  # (P,) positions of the pool's samples of this class
    relabelled: np.ndarray  # (n_permutations, k) positions drawn as "the client"
    weight: float  # k / n

    def shift(self, scores: np.ndarray, chosen_sum: np.ndarray | float) -> np.ndarray | float:
        """``w * (mean of the chosen k - mean of the other P)`` from the chosen sums."""
        k, p = len(self.members), len(self.pool)
        total = scores[self.members].sum() + scores[self.pool].sum()
        return self.weight * (chosen_sum / k - (total - chosen_sum) / p)


@dataclass(frozen=True)
class ClientMembershipTest:
    """A stratified permutation test fixed at calibration.

    Build it with :meth:`calibrate`, then :meth:`evaluate` any model's scores.

    Attributes
    ----------
    strata : tuple of _Stratum
        One per class of the client's samples.
    n_members, n_pool : int
        The client's sample count and the pool's (in the client's classes).
    """

    strata: tuple[_Stratum, ...]
    n_members: int
    n_pool: int

    @classmethod
    def calibrate(
        cls, member_labels: np.ndarray, pool_labels: np.ndarray, n_permutations: int, rng: np.random.Generator
    ) -> ClientMembershipTest:
        """Draw ``n_permutations`` within-class relabellings of the client's
        samples and the pool.

        Raises
        ------
        ValueError
            If a member class has no sample in the pool.
        """
        member_labels, pool_labels = np.asarray(member_labels), np.asarray(pool_labels)
        n = len(member_labels)
        strata = []
        for c, k in zip(*np.unique(member_labels, return_counts=True), strict=True):
            pool = n + np.flatnonzero(pool_labels == c)
            if len(pool) == 0:
                raise ValueError(f"client-level test: no never-trained sample of class {c} in the pool")
            members = np.flatnonzero(member_labels == c)
            group = np.r_[members, pool]
            # A uniform random k-subset per permutation: the k smallest of iid uniform keys.
            keys = rng.random((n_permutations, len(group)))
            chosen = np.argpartition(keys, k - 1, axis=1)[:, :k]
            strata.append(_Stratum(members, pool, group[chosen].astype(np.int32), k / n))
        return cls(tuple(strata), n, int(sum(len(s.pool) for s in strata)))

    def _shifts(self, scores: np.ndarray) -> tuple[float, np.ndarray]:
        observed = sum(float(s.shift(scores, scores[s.members].sum())) for s in self.strata)
        null = sum(s.shift(scores, scores[s.relabelled].sum(axis=1)) for s in self.strata)
        return observed, np.asarray(null, dtype=float)

    def evaluate(self, member_scores: np.ndarray, pool_scores: np.ndarray) -> dict[str, float]:
        """``client_mia_z``, ``client_mia_pvalue`` and ``client_mia_mde`` of one model's scores.

        Parameters
        ----------
        member_scores : np.ndarray
            The client's per-sample scores, in calibration order.
        pool_scores : np.ndarray
            The whole pool's scores, in calibration order.
        """
        scores = np.r_[np.asarray(member_scores, float), np.asarray(pool_scores, float)]
        observed, null = self._shifts(scores)
        sd = float(null.std(ddof=1))
        nan = float("nan")
        if not (np.isfinite(observed) and np.isfinite(sd)) or sd == 0:
            return {"client_mia_z": nan, "client_mia_pvalue": nan, "client_mia_mde": nan}
        p = (1 + int(np.sum(null >= observed))) / (1 + len(null))
        return {"client_mia_z": (observed - float(null.mean())) / sd, "client_mia_pvalue": p,
                "client_mia_mde": MDE_FACTOR * sd}

    def pool_inflation(self) -> float:
        """How much the finite pool widens the test's detectable shift over an
        unlimited pool, with equal within-class variances:
        ``sqrt(sum w² (1/k + 1/P) / sum w² / k)``."""
        with_pool = sum(s.weight ** 2 * (1 / len(s.members) + 1 / len(s.pool)) for s in self.strata)
        unlimited = sum(s.weight ** 2 / len(s.members) for s in self.strata)
        return float(np.sqrt(with_pool / unlimited))

    def mde_in_sd(self) -> float:
        """The detectable shift in within-class standard deviations of the score."""
        return MDE_FACTOR * float(np.sqrt(sum(s.weight ** 2 * (1 / len(s.members) + 1 / len(s.pool))
                                              for s in self.strata)))

    def power_warning(self) -> str | None:
        """Why this client's test has little power, or None."""
        inflation, mde = self.pool_inflation(), self.mde_in_sd()
        if inflation <= POOL_INFLATION_WARN and mde <= MDE_SD_WARN:
            return None
        return (f"the client-level test has little power: {self.n_members} samples against a never-trained pool "
                f"of {self.n_pool} in their classes; it detects a shift of the mean score of "
                f"{mde:.2f} within-class standard deviations 80% of the time "
                f"({inflation:.2f}x what an unlimited pool would give). \"Not detected\" says little here.")
