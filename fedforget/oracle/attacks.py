"""Membership-inference attacks used as the oracle's per-sample decision rule.

Every attack maps :class:`SampleStats` to a score (higher = member) and turns it
into a decision with a threshold fitted once on calibration data; the oracle
then freezes the fitted attack and reuses it on later models.

An attack is one class registered by name in :data:`ATTACKS`, with its
parameters in its own ``Params`` table (``[oracle.<name>]`` in a scenario). An
attack that needs reference models asks for them with :meth:`Attack.reference_runs`
and receives them in :meth:`Attack.fit_reference_models`; nothing outside this
module knows what they are.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy.stats import norm
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from fedforget.oracle.features import SampleStats, sample_statistics
from fedforget.oracle.reference import ReferenceRun

__all__ = [
    "Attack",
    "AttackParams",
    "LossThresholdAttack",
    "PopulationAttack",
    "LiraAttack",
    "ATTACKS",
    "get_attack",
    "best_balanced_threshold",
    "lira_score",
    "lira_offline_score",
]


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


class LossThresholdAttack(Attack):
    """Global loss threshold (Yeom et al. 2018): score = ``-loss``."""

    name = "loss"

    def score(self, stats: SampleStats) -> np.ndarray:
        return -stats.loss


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


def lira_score(
    phi: np.ndarray,
    mu_in: np.ndarray,
    sigma_in: np.ndarray,
    mu_out: np.ndarray,
    sigma_out: np.ndarray,
) -> np.ndarray:
    """Online LiRA score: ``log N(phi; mu_in, sigma_in) - log N(phi; mu_out, sigma_out)``."""
    phi = np.asarray(phi, dtype=np.float64)
    return norm.logpdf(phi, mu_in, sigma_in) - norm.logpdf(phi, mu_out, sigma_out)


def lira_offline_score(phi: np.ndarray, mu_out: np.ndarray, sigma_out: np.ndarray) -> np.ndarray:
    """Offline LiRA score: ``log P[Z <= phi]``, ``Z ~ N(mu_out, sigma_out^2)``.

    The one-sided test of Carlini et al. (2022): a large value means ``phi`` is
    above what models that never saw the sample produce.
    """
    phi = np.asarray(phi, dtype=np.float64)
    return norm.logcdf((phi - np.asarray(mu_out)) / np.asarray(sigma_out))


def _gaussian_params(phi: np.ndarray, fixed_variance: bool, std_floor: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and std of ``phi`` (n_shadow, n_samples); NaN = not observed."""
    phi = np.asarray(phi, dtype=np.float64)
    if phi.ndim != 2:
        raise ValueError("reference statistics must have shape (n_shadow, n_samples)")
    if np.any(np.all(np.isnan(phi), axis=0)):
        raise ValueError("every sample needs at least one reference value")
    mu = np.nanmean(phi, axis=0)
    if fixed_variance:
        # Pooled within-example variance: one sigma shared by all examples,
        # which is more stable with few shadows (Carlini et al. 2022, Sec. 4).
        sd = np.full_like(mu, np.sqrt(np.nanmean((phi - mu) ** 2)))
    else:
        sd = np.nanstd(phi, axis=0)
    return mu, np.maximum(sd, std_floor)


class LiraAttack(Attack):
    """Likelihood-ratio attack with per-example Gaussians (Carlini et al. 2022).

    Call :meth:`fit_reference` with shadow-model statistics first, then
    :meth:`fit` for the threshold. Keyword parameters only; their defaults are
    those of :attr:`Params`.

    Parameters
    ----------
    fixed_variance : bool
        Share one (pooled) standard deviation across examples instead of a
        per-example one (default True, Carlini et al.'s choice for few shadows).
    std_floor : float
        Lower bound on every standard deviation (one shadow gives std 0).
    shadows, online : int, bool
        Reference federations per kind, and whether IN federations are trained too.

    Notes
    -----
    Reference statistics are per column (sample). :meth:`score`, :meth:`fit`
    and :meth:`decide` take ``columns``: for each given sample, the reference
    column it corresponds to; ``None`` means the samples are exactly the
    reference columns in order. For :meth:`fit`, ``member_columns`` and
    ``nonmember_columns`` default to ``0..n_m-1`` and ``n_m..n_m+n_n-1`` (the
    reference was computed on members followed by non-members).
    """

    name = "lira"
    needs_columns = True
    supports_deletions = False

    class Params(AttackParams):
        shadows: int = Field(4, ge=1, description="reference federations per kind (without / with the client)")
        online: bool = Field(False, description="also train reference federations with the client (online LiRA)")
        fixed_variance: bool = Field(True, description="one pooled std (Carlini et al.'s choice for few shadows)")
        std_floor: float = Field(1e-3, gt=0, description="lower bound on every standard deviation")

        @model_validator(mode="after")
        def _online_needs_two(self) -> LiraAttack.Params:
            if self.online and self.shadows < 2:
                raise ValueError("shadows must be >= 2 for online LiRA (each sample is IN in half of them)")
            return self

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.mu_in: np.ndarray | None = None
        self.sigma_in: np.ndarray | None = None
        self.mu_out: np.ndarray | None = None
        self.sigma_out: np.ndarray | None = None
        self.in_masks_: dict[str, np.ndarray | None] = {}  # reference key -> IN mask (None = OUT)

    def reference_runs(self, client: int, column_ids: np.ndarray, rounds: int, seed: int) -> list[ReferenceRun]:
        """OUT federations never sample ``client``; with ``online``, IN
        federations let it train on a balanced random half of the columns
        (members and non-members), so every sample has an IN and an OUT
        distribution (Carlini et al. 2022)."""
        from fedforget.schedule import derive_seed

        k_shadows, online = self.params["shadows"], self.params["online"]
        if online and k_shadows < 2:
            raise ValueError("online LiRA needs oracle.lira.shadows >= 2 (each sample is IN in half of them)")
        masks = lira_in_masks(len(column_ids), k_shadows, derive_seed(seed, "lira-in", client)) if online else None
        runs = []
        for k in range(k_shadows):
            for kind in ("out", "in") if online else ("out",):
                key = f"{self.name}/{kind}/{client}/{k}"
                s_seed = derive_seed(seed, "reference", self.name, kind, client, k)
                if kind == "out":
                    runs.append(ReferenceRun(key, s_seed, rounds, excluded=frozenset({client})))
                    self.in_masks_[key] = None
                else:
                    runs.append(ReferenceRun(key, s_seed, rounds, train_ids={client: column_ids[masks[k]]}))
                    self.in_masks_[key] = masks[k]
        return runs

    def fit_reference_models(self, models: Mapping[str, torch.nn.Module], x: torch.Tensor, y: torch.Tensor) -> LiraAttack:
        """phi (logit-scaled confidence) of every reference model on every
        column; NaN where a model is not in a sample's IN / OUT distribution."""
        phi_in, phi_out = [], []
        for key, mask in self.in_masks_.items():
            if key not in models:
                raise ValueError(f"lira: reference model {key!r} was not trained")
            phi = sample_statistics(models[key], x, y).logit_scaled
            if mask is None:
                phi_out.append(phi)
            else:
                phi_in.append(np.where(mask, phi, np.nan))
                phi_out.append(np.where(mask, np.nan, phi))
        if not phi_out:
            raise ValueError("lira: no reference models planned; call reference_runs() first")
        return self.fit_reference(np.stack(phi_in) if phi_in else None, np.stack(phi_out))

    def restricted(self, columns: np.ndarray) -> LiraAttack:
        out = LiraAttack(**self._ctor_params)
        if self.mu_out is None:
            raise RuntimeError("LiraAttack.restricted needs a fitted reference")
        c = np.asarray(columns, dtype=np.int64)
        out.mu_out, out.sigma_out = self.mu_out[c], self.sigma_out[c]
        if self.mu_in is not None:
            out.mu_in, out.sigma_in = self.mu_in[c], self.sigma_in[c]
        out.params["online"] = out.online
        return out

    @property
    def online(self) -> bool:
        return self.mu_in is not None

    @property
    def n_columns(self) -> int:
        if self.mu_out is None:
            raise RuntimeError("LiraAttack has no reference; call fit_reference() first")
        return int(self.mu_out.shape[0])

    def fit_reference(self, phi_in: np.ndarray | None, phi_out: np.ndarray) -> LiraAttack:
        """Fit per-example Gaussians to shadow-model logit-scaled confidences.

        Parameters
        ----------
        phi_in : np.ndarray or None
            ``(n_shadow_in, n_samples)`` statistics of shadows that trained on
            (and, for U-LiRA, then unlearned) each sample; ``None`` = offline.
            NaN marks a shadow that does not belong to this distribution for
            that sample, so in/out shadow sets may differ per sample.
        phi_out : np.ndarray
            ``(n_shadow_out, n_samples)`` statistics of shadows that never saw
            each sample.
        """
        fv, floor = self.params["fixed_variance"], self.params["std_floor"]
        self.mu_out, self.sigma_out = _gaussian_params(phi_out, fv, floor)
        if phi_in is None:
            self.mu_in = self.sigma_in = None
        else:
            self.mu_in, self.sigma_in = _gaussian_params(phi_in, fv, floor)
            if self.mu_in.shape != self.mu_out.shape:
                raise ValueError("phi_in and phi_out must have the same number of columns")
        self.params["online"] = self.online
        return self

    def _columns(self, n: int, columns: np.ndarray | None) -> np.ndarray:
        if columns is None:
            if n != self.n_columns:
                raise ValueError(
                    f"{n} samples but the reference has {self.n_columns} columns; pass columns="
                )
            return np.arange(n)
        columns = np.asarray(columns, dtype=np.int64).reshape(-1)
        if columns.size != n:
            raise ValueError("columns must give one reference column per sample")
        return columns

    def score(self, stats: SampleStats, columns: np.ndarray | None = None) -> np.ndarray:
        """LiRA score of ``stats.logit_scaled``, per-example via ``columns``."""
        c = self._columns(len(stats), columns)
        phi = stats.logit_scaled
        if self.online:
            return lira_score(phi, self.mu_in[c], self.sigma_in[c], self.mu_out[c], self.sigma_out[c])
        return lira_offline_score(phi, self.mu_out[c], self.sigma_out[c])

    def fit(
        self,
        member_stats: SampleStats,
        nonmember_stats: SampleStats,
        member_columns: np.ndarray | None = None,
        nonmember_columns: np.ndarray | None = None,
    ) -> LiraAttack:
        """Choose the threshold on calibration data (requires :meth:`fit_reference`)."""
        n_m, n_n = len(member_stats), len(nonmember_stats)
        if member_columns is None:
            member_columns = np.arange(n_m)
        if nonmember_columns is None:
            nonmember_columns = n_m + np.arange(n_n)
        self._fit_threshold(
            self.score(member_stats, member_columns), self.score(nonmember_stats, nonmember_columns)
        )
        return self

    def decide(self, stats: SampleStats, columns: np.ndarray | None = None) -> np.ndarray:
        return super().decide(stats, columns=columns)


ATTACKS: dict[str, type[Attack]] = {
    LossThresholdAttack.name: LossThresholdAttack,
    PopulationAttack.name: PopulationAttack,
    LiraAttack.name: LiraAttack,
}


def get_attack(name: str, **params: Any) -> Attack:
    """Instantiate the attack registered under ``name`` (its constructor validates ``params``)."""
    try:
        cls = ATTACKS[name]
    except KeyError:
        raise ValueError(f"unknown attack {name!r}; known attacks: {sorted(ATTACKS)}") from None
    return cls(**params)


def lira_in_masks(n_samples: int, n_shadows: int, seed: int) -> np.ndarray:
    """``(n_shadows, n_samples)`` booleans: which samples each IN model trains
    on. Balanced as in Carlini et al.: every sample is IN in exactly half of
    the models (so every sample has both an IN and an OUT distribution)."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n_shadows, n_samples), bool)
    for j in range(n_samples):
        masks[rng.permutation(n_shadows)[: n_shadows // 2], j] = True
    return masks
