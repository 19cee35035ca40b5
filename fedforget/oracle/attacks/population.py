"""The population attack: one logistic regression on output features for all samples."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from fedforget import registry
from fedforget.oracle.attacks.base import Attack, AttackParams
from fedforget.oracle.features import SampleStats


@registry.attacks.register()
class PopulationAttack(Attack):
    """Logistic regression on standardised output features, one model for all samples.

    Keyword parameters only; their defaults are those of :attr:`Params`.

    Parameters
    ----------
    C : float
        Inverse L2 regularisation strength.
    max_iter : int
        Solver iterations.
    class_weight : str or None
        ``"balanced"`` by default, so unequal calibration set sizes do not bias it.

    Notes
    -----
    The classifier and the threshold are fitted on the same calibration data,
    so its calibration accuracy is slightly optimistic.
    """

    name = "population"

    class Params(AttackParams):
        C: float = Field(1.0, gt=0, description="inverse L2 regularisation strength")
        max_iter: int = Field(1000, ge=1, description="solver iterations")
        class_weight: str | None = Field("balanced", description="'balanced' so unequal set sizes do not bias it")

    FEATURES: tuple[str, ...] = ("loss", "max_confidence", "entropy", "modified_entropy", "logit_scaled")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.model_ = None

    def _x(self, stats: SampleStats) -> np.ndarray:
        return stats.features(self.FEATURES)

    def fit(self, member_stats: SampleStats, nonmember_stats: SampleStats) -> PopulationAttack:
        x = np.vstack([self._x(member_stats), self._x(nonmember_stats)])
        y = np.r_[np.ones(len(member_stats)), np.zeros(len(nonmember_stats))]
        p = self.params
        self.model_ = make_pipeline(
            StandardScaler(),
            LogisticRegression(C=p["C"], max_iter=p["max_iter"], class_weight=p["class_weight"]),
        ).fit(x, y)
        return super().fit(member_stats, nonmember_stats)

    def score(self, stats: SampleStats) -> np.ndarray:
        if self.model_ is None:
            raise RuntimeError("PopulationAttack is not fitted; call fit() first")
        return self.model_.predict_proba(self._x(stats))[:, 1]
