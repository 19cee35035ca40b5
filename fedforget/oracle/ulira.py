"""U-LiRA (Hayes et al., SaTML 2025): would an attacker who knows the method
tell, for one forget example, a model that trained on it and then unlearned it
from a model retrained without it?

Inputs are the logit-scaled confidences ``phi`` of the forget examples under
many models of each kind: ``(models, examples)`` arrays for the unlearned side
(federations in which the client took part and the method under test then
unlearned it at the same event) and the retrained side (federations retrained
without it). Model ``s`` of each side is the target in turn (leave one out):
the other models give each example an IN Gaussian (unlearned) and an OUT
Gaussian (retrained), and the target's score is the likelihood ratio of its
``phi``. Positives are the unlearned targets' scores, negatives the retrained
targets'; AUC 0.5 means the method's models look like retrained ones one
example at a time. Pure NumPy/SciPy; the analysis layer supplies the arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedforget.oracle.attacks.lira import gaussian_params, lira_score
from fedforget.oracle.metrics import (
    auc_of,
    bootstrap_interval,
    roc_metrics,
    withheld_tpr_notes,
)

__all__ = ["UliraResult", "ulira", "ulira_scores"]

#: Fewer models than this on a side leave the leave-one-out Gaussians one model.
MIN_MODELS = 3


def _check(phi: np.ndarray, what: str) -> np.ndarray:
    phi = np.asarray(phi, dtype=np.float64)
    if phi.ndim != 2:
        raise ValueError(f"{what}: phi must be (models, examples)")
    if phi.shape[0] < MIN_MODELS:
        raise ValueError(f"{what}: U-LiRA needs at least {MIN_MODELS} models, got {phi.shape[0]}")
    if not np.all(np.isfinite(phi)):
        raise ValueError(f"{what}: phi must be finite")
    return phi


def ulira_scores(phi_unlearned: np.ndarray, phi_retrained: np.ndarray, *, fixed_variance: bool = True,
                 std_floor: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out likelihood-ratio scores of every target model.

    Parameters
    ----------
    phi_unlearned, phi_retrained : np.ndarray
        ``(models, examples)`` on the same examples in the same order. With as
        many models on both sides (paired seeds) model ``s`` is left out of
        both sides' Gaussians while either of the pair is the target.
    fixed_variance, std_floor
        As LiRA's (one pooled standard deviation; a floor on it).

    Returns
    -------
    (positives, negatives) : tuple of np.ndarray
        Scores of the unlearned targets and of the retrained targets, each
        ``(models, examples)``; higher = "this model unlearned the example".
    """
    u, r = _check(phi_unlearned, "unlearned"), _check(phi_retrained, "retrained")
    if u.shape[1] != r.shape[1]:
        raise ValueError("unlearned and retrained phi must cover the same examples")
    paired = u.shape[0] == r.shape[0]
    pos, neg = np.empty_like(u), np.empty_like(r)
    for s in range(max(u.shape[0], r.shape[0])):
        keep_u = np.arange(u.shape[0]) != s
        keep_r = np.arange(r.shape[0]) != s if paired or s < r.shape[0] else np.ones(r.shape[0], bool)
        mu_in, sd_in = gaussian_params(u[keep_u], fixed_variance, std_floor)
        mu_out, sd_out = gaussian_params(r[keep_r], fixed_variance, std_floor)
        if s < u.shape[0]:
            pos[s] = lira_score(u[s], mu_in, sd_in, mu_out, sd_out)
        if s < r.shape[0]:
            neg[s] = lira_score(r[s], mu_in, sd_in, mu_out, sd_out)
    return pos, neg


@dataclass(frozen=True)
class UliraResult:
    """U-LiRA's membership metrics for one method, client and round."""

    auc: float
    auc_lo: float
    auc_hi: float
    tpr_at_1pct_fpr: float
    tpr_at_01pct_fpr: float
    n_unlearned: int
    n_retrained: int
    n_examples: int
    notes: tuple[str, ...] = ()


def _pooled_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    # Bootstrap rows are examples (each row: that example's score under every target).
    return auc_of(np.concatenate([pos.ravel(), neg.ravel()]),
                  np.r_[np.ones(pos.size, bool), np.zeros(neg.size, bool)])


def ulira(phi_unlearned: np.ndarray, phi_retrained: np.ndarray, *, n_boot: int = 200, seed: int = 0,
          fixed_variance: bool = True, std_floor: float = 1e-3) -> UliraResult:
    """U-LiRA's AUC (with a bootstrap interval that resamples examples, since
    one example's scores under different targets are not independent) and its
    TPR at 1% and 0.1% FPR from the exact ROC (withheld, NaN, with too few
    negatives, as every oracle TPR)."""
    pos, neg = ulira_scores(phi_unlearned, phi_retrained, fixed_variance=fixed_variance, std_floor=std_floor)
    scores = np.concatenate([pos.ravel(), neg.ravel()])
    is_pos = np.r_[np.ones(pos.size, bool), np.zeros(neg.size, bool)]
    roc = roc_metrics(scores, is_pos)
    lo, hi = bootstrap_interval(_pooled_auc, [pos.T, neg.T], n_boot=n_boot, rng=np.random.default_rng(seed))
    return UliraResult(
        auc=roc["auc"], auc_lo=lo, auc_hi=hi,
        tpr_at_1pct_fpr=roc["tpr_at_1pct_fpr"], tpr_at_01pct_fpr=roc["tpr_at_0.1pct_fpr"],
        n_unlearned=pos.shape[0], n_retrained=neg.shape[0], n_examples=pos.shape[1],
        notes=withheld_tpr_notes(neg.size),
    )
