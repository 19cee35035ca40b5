"""The attack template: what every membership attack provides, and the one
place an attack's calibration lives.

Every attack maps :class:`SampleStats` to a score (higher = member) and turns it
into a decision with a threshold fitted once on calibration data; the oracle
then freezes the fitted attack and reuses it on later models. An attack that
needs reference models asks for them with :meth:`Attack.reference_runs` and
receives them in :meth:`Attack.fit_reference_models` (or its statistics directly
in :meth:`Attack.fit_reference_statistics`); nothing outside the attack's own
module knows what they are.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from fedforget import registry
from fedforget.oracle.features import SampleStats
from fedforget.oracle.reference import ReferenceRun

__all__ = ["Attack", "AttackParams", "best_balanced_threshold", "get_attack"]


def best_balanced_threshold(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> tuple[float, float]:
    """Threshold ``t`` maximising balanced accuracy of the rule ``score >= t``.

    Searched exactly over every distinct decision: the lowest score (all
    "member"), each midpoint between consecutive sorted unique scores, and
    ``+inf`` (none). TPR/FPR at all candidates come from cumulative counts via
    ``searchsorted``, so the search is O(n log n). Ties go to the lowest
    threshold.

    Returns
    -------
    (threshold, balanced_accuracy) : tuple of float
    """
    m = np.sort(np.asarray(member_scores, dtype=np.float64).reshape(-1))
    n = np.sort(np.asarray(nonmember_scores, dtype=np.float64).reshape(-1))
    if m.size == 0 or n.size == 0:
        raise ValueError("need at least one member and one non-member score")
    if not (np.all(np.isfinite(m)) and np.all(np.isfinite(n))):
        raise ValueError("calibration scores must be finite")
    u = np.unique(np.concatenate([m, n]))
    mid = (u[:-1] + u[1:]) / 2
    # Adjacent doubles: the midpoint may round down onto u[i]; use u[i+1] then,
    # which still separates u[i] from u[i+1] under ">=".
    mid = np.where(mid > u[:-1], mid, u[1:])
    cand = np.concatenate([u[:1], mid, [np.inf]])
    tpr = (m.size - np.searchsorted(m, cand, side="left")) / m.size
    fpr = (n.size - np.searchsorted(n, cand, side="left")) / n.size
    ba = 0.5 * (tpr + 1.0 - fpr)
    i = int(np.argmax(ba))
    return float(cand[i]), float(ba[i])


class AttackParams(BaseModel):
    """Base of every attack's parameter table (``[oracle.<attack>]``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Attack(ABC):
    """Base class: a score function plus a balanced-accuracy-optimal threshold.

    Subclasses implement :meth:`score`. ``params`` holds the constructor
    hyper-parameters and, after :meth:`fit`, the fitted ``threshold`` and the
    ``calibration_balanced_accuracy``.

    The constructor takes keyword parameters only and validates them with the
    attack's :attr:`Params`, which is also where every default lives: a scenario
    table and a direct ``Attack(...)`` call get the same attack.
    """

    name: str = ""
    Params: ClassVar[type[AttackParams]] = AttackParams
    #: True when scoring needs per-example reference statistics (LiRA); such
    #: attacks accept ``columns=`` in :meth:`fit` and :meth:`score`.
    needs_columns: bool = False
    #: False when the attack can only audit whole clients (its reference
    #: models leave a client out entirely).
    supports_deletions: ClassVar[bool] = True
    #: What :meth:`fit_reference_statistics` takes, shown when an attack that
    #: needs a reference gets none ("" for attacks that need none).
    reference_format: ClassVar[str] = ""

    def __init__(self, **params: Any) -> None:
        self.params: dict[str, Any] = self.Params.model_validate(params).model_dump()
        self._ctor_params = dict(self.params)
        self.threshold: float | None = None

    @abstractmethod
    def score(self, stats: SampleStats) -> np.ndarray:
        """Membership score per sample (higher = more likely member)."""

    # -- reference models (default: none) ------------------------------------
    def reference_runs(self, client: int, column_ids: np.ndarray, rounds: int, seed: int) -> list[ReferenceRun]:
        """Federations this attack needs trained to audit ``client`` on the
        samples ``column_ids`` (its reference columns, in order), each up to
        ``rounds``. Default: none."""
        return []

    def fit_reference_models(self, models: Mapping[str, torch.nn.Module], x: torch.Tensor, y: torch.Tensor) -> Attack:
        """Fit per-column reference statistics from the trained reference models
        (by :class:`ReferenceRun` key) on the column samples ``(x, y)``. Default: nothing."""
        return self

    def fit_reference_statistics(self, reference: Mapping[str, Any]) -> Attack:
        """Fit the reference from statistics given directly (the attack's own
        format, :attr:`reference_format`) instead of from reference models.
        Default: the attack needs none and ignores them."""
        return self

    def has_reference(self) -> bool:
        """Whether the attack's reference is fitted, so it can be calibrated
        (always, for an attack that needs none)."""
        return True

    @property
    def n_columns(self) -> int:
        """Reference columns (attacks with :attr:`needs_columns` only)."""
        raise TypeError(f"attack {self.name!r} has no reference columns")

    def restricted(self, columns: np.ndarray) -> Attack:
        """An unfitted copy whose reference columns are ``columns`` of this one
        (one reference plan serves several audits of a client)."""
        return type(self)(**self._ctor_params)

    def _fit_threshold(self, member_scores: np.ndarray, nonmember_scores: np.ndarray) -> None:
        t, ba = best_balanced_threshold(member_scores, nonmember_scores)
        self.threshold = t
        self.params.update(threshold=t, calibration_balanced_accuracy=ba)

    def fit(self, member_stats: SampleStats, nonmember_stats: SampleStats) -> Attack:
        """Choose the threshold on calibration members vs non-members."""
        self._fit_threshold(self.score(member_stats), self.score(nonmember_stats))
        return self

    def _check_fitted(self) -> None:
        if self.threshold is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit() first")

    def decide(self, stats: SampleStats, **kwargs: Any) -> np.ndarray:
        """Boolean "member" decision per sample: ``score >= threshold``."""
        self._check_fitted()
        return self.score(stats, **kwargs) >= self.threshold


def get_attack(name: str, **params: Any) -> Attack:
    """Instantiate the attack registered under ``name`` (its constructor validates ``params``)."""
    return registry.attacks.get(name)(**params)
