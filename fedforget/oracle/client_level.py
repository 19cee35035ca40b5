"""Client-level membership test: "is this client's data still in the model?"

Per-sample evidence fades as federations grow (a client that trains in one
round in ten leaves little trace on each sample), but it adds up over a
client's samples. The statistic is the mean per-sample score ``-loss`` over
the client's forget samples (the loss attack's score, so it needs no reference
models whatever the oracle's attack). Its null distribution comes from
*pseudo-clients*: draws of the same size and label histogram, with
replacement, from data nobody trained on (every client's ``audit`` part and
the test set, planted witness samples left out). With replacement, a
pseudo-client's mean has the sampling spread of a real client's mean, so

- ``client_mia_z`` = (client's mean - pseudo-clients' mean) / their std,
- ``client_mia_pvalue`` = one-sided ``P(Z >= z)`` under the normal null.

The pseudo-clients are drawn once per event (calibration) and reused for every
arm and round, like the rest of the oracle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

__all__ = ["ClientMembershipTest", "client_statistic"]


def client_statistic(scores: np.ndarray) -> float:
    """The client-level statistic: the mean per-sample membership score."""
    return float(np.mean(scores))


@dataclass(frozen=True)
class ClientMembershipTest:
    """Pseudo-clients fixed at calibration.

    Attributes
    ----------
    draws : np.ndarray
        ``(n_pseudo, n_members)`` indices into the reference pool, each row a
        pseudo-client with the members' label histogram.
    """

    draws: np.ndarray

    @classmethod
    def calibrate(
        cls, member_labels: np.ndarray, pool_labels: np.ndarray, n_pseudo: int, rng: np.random.Generator
    ) -> ClientMembershipTest:
        """Draw ``n_pseudo`` pseudo-clients, stratified by the members' labels.

        Raises
        ------
        ValueError
            If a member class has no sample in the pool.
        """
        member_labels = np.asarray(member_labels)
        pool_labels = np.asarray(pool_labels)
        cols = []
        for c, k in zip(*np.unique(member_labels, return_counts=True), strict=True):
            candidates = np.flatnonzero(pool_labels == c)
            if len(candidates) == 0:
                raise ValueError(f"client-level test: no never-trained sample of class {c} for pseudo-clients")
            cols.append(rng.choice(candidates, size=(n_pseudo, k), replace=True))
        return cls(np.concatenate(cols, axis=1))

    def evaluate(self, member_scores: np.ndarray, pool_scores: np.ndarray) -> dict[str, float]:
        """``client_mia_z`` and ``client_mia_pvalue`` of one model's scores."""
        null = np.asarray(pool_scores)[self.draws].mean(axis=1)
        sd = float(null.std(ddof=1))
        stat = client_statistic(member_scores)
        if not np.isfinite(sd) or sd == 0:
            return {"client_mia_z": float("nan"), "client_mia_pvalue": float("nan")}
        z = (stat - float(null.mean())) / sd
        return {"client_mia_z": z, "client_mia_pvalue": float(norm.sf(z))}
