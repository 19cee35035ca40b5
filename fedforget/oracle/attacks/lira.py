"""The likelihood-ratio attack, LiRA (Carlini et al. 2022), with reference
federations trained by the run loop (its shadows: OUT without the audited
client, and with ``online`` IN federations that train on half its columns).

Everything LiRA-specific (per-example Gaussians, shadow counts, IN masks)
lives here, behind the :class:`~fedforget.oracle.attacks.base.Attack` template.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from pydantic import Field, model_validator
from scipy.stats import norm

from fedforget import registry
from fedforget.oracle.attacks.base import Attack, AttackParams
from fedforget.oracle.features import SampleStats, sample_statistics
from fedforget.oracle.reference import ReferenceRun

__all__ = ["LiraAttack", "gaussian_params", "lira_in_masks", "lira_offline_score", "lira_score"]


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


def gaussian_params(phi: np.ndarray, fixed_variance: bool, std_floor: float) -> tuple[np.ndarray, np.ndarray]:
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


@registry.attacks.register()
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
    reference_format = "{'phi_in': ..., 'phi_out': ...}"

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

    def fit_reference_statistics(self, reference: Mapping[str, Any]) -> LiraAttack:
        """``{"phi_in": array or None, "phi_out": array}``, each ``(n_shadow,
        n_columns)``, as :meth:`fit_reference` takes them; without ``phi_out``
        nothing is fitted (a reference fitted before is kept)."""
        if reference.get("phi_out") is None:
            return self
        return self.fit_reference(reference.get("phi_in"), reference["phi_out"])

    def has_reference(self) -> bool:
        return self.mu_out is not None

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
        self.mu_out, self.sigma_out = gaussian_params(phi_out, fv, floor)
        if phi_in is None:
            self.mu_in = self.sigma_in = None
        else:
            self.mu_in, self.sigma_in = gaussian_params(phi_in, fv, floor)
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


def lira_in_masks(n_samples: int, n_shadows: int, seed: int) -> np.ndarray:
    """``(n_shadows, n_samples)`` booleans: which samples each IN model trains
    on. Balanced as in Carlini et al.: every sample is IN in exactly half of
    the models (so every sample has both an IN and an OUT distribution)."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n_shadows, n_samples), bool)
    for j in range(n_samples):
        masks[rng.permutation(n_shadows)[: n_shadows // 2], j] = True
    return masks
