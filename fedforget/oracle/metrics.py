"""Attack-quality and forgetting metrics, with percentile-bootstrap intervals.

Conventions: a higher score means "more likely a member"; ``is_member`` and
decisions are boolean arrays; undefined quantities are NaN rather than errors,
so a run with a degenerate client still produces a complete record.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy.stats import rankdata

__all__ = [
    "MIN_COUNT_FACTOR",
    "TPR_FPR_LEVELS",
    "roc_metrics",
    "tpr_at_fpr",
    "min_nonmembers_for_fpr",
    "withheld_tpr_notes",
    "threshold_at_fpr",
    "fr_at_fixed_fpr",
    "balanced_accuracy",
    "forgetting_rate",
    "bootstrap_interval",
    "auc_interval",
    "auc_of",
    "fr_interval",
]

RngLike = np.random.Generator | int | np.random.SeedSequence | None

#: A TPR at FPR level ``f`` is reported only with at least ``MIN_COUNT_FACTOR / f``
#: non-members, i.e. when about ten non-members may be flagged; below that the
#: "low-FPR" point is decided by a handful of (or zero) false positives.
MIN_COUNT_FACTOR = 10

#: Metric name -> FPR level of the low-FPR TPRs that ``roc_metrics`` reports.
TPR_FPR_LEVELS: dict[str, float] = {"tpr_at_1pct_fpr": 0.01, "tpr_at_0.1pct_fpr": 0.001}


def _as_bool(a: np.ndarray) -> np.ndarray:
    return np.asarray(a).astype(bool).reshape(-1)


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, max_fpr: float) -> float:
    """Largest TPR among ROC points whose FPR is at most ``max_fpr``.

    ``fpr``/``tpr`` must contain every ROC point (``drop_intermediate=False``):
    dropping collinear points can remove the best point below ``max_fpr``.
    """
    ok = np.asarray(fpr) <= max_fpr
    return float(np.max(np.asarray(tpr)[ok])) if ok.any() else float("nan")


def min_nonmembers_for_fpr(fpr: float, min_count_factor: float = MIN_COUNT_FACTOR) -> int:
    """Fewest non-members for which a TPR at FPR ``fpr`` is reported: ``ceil(factor / fpr)``.

    E.g. 1,000 for 1% and 10,000 for 0.1% with the default factor of 10.
    """
    if not 0 < fpr <= 1:
        raise ValueError("fpr must be in (0, 1]")
    # factor / fpr carries rounding error (7 / 0.07 = 99.99999999999999); when it lands
    # just above an integer instead, ceil must not add a non-member for it.
    return int(math.ceil(min_count_factor / fpr - 1e-9))


def withheld_tpr_notes(n_nonmembers: int, min_count_factor: float = MIN_COUNT_FACTOR) -> tuple[str, ...]:
    """One human-readable reason per TPR in ``TPR_FPR_LEVELS`` withheld (NaN) by the count rule."""
    notes = []
    for key, f in TPR_FPR_LEVELS.items():
        need = min_nonmembers_for_fpr(f, min_count_factor)
        if n_nonmembers < need:
            notes.append(
                f"{key}: NaN because {n_nonmembers} non-members < {need} needed ({min_count_factor:g} / FPR)"
            )
    return tuple(notes)


def exact_roc(scores: np.ndarray, is_member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FPR and TPR at every distinct score threshold, from (0, 0): the arrays of
    ``sklearn.metrics.roc_curve(..., drop_intermediate=False)`` (same algorithm,
    without its input validation, which costs more than the curve here)."""
    order = np.argsort(scores, kind="mergesort")[::-1]
    s, y = scores[order], is_member[order].astype(np.float64)
    last_of_value = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]
    tps = np.cumsum(y)[last_of_value]
    fps = 1 + last_of_value - tps
    tps, fps = np.r_[0, tps], np.r_[0, fps]
    return fps / fps[-1], tps / tps[-1]


def roc_metrics(scores: np.ndarray, is_member: np.ndarray, min_count_factor: float = MIN_COUNT_FACTOR) -> dict:
    """ROC summary of a membership score.

    Parameters
    ----------
    scores : np.ndarray
        Higher = more likely member.
    is_member : np.ndarray
        Boolean ground truth.
    min_count_factor : float
        A TPR at FPR level ``f`` is reported only with at least
        ``min_nonmembers_for_fpr(f, min_count_factor)`` non-members, otherwise
        NaN: with fewer, e.g. 512 non-members at 0.1%, the point is really the
        TPR at zero false positives.

    Returns
    -------
    dict
        ``auc``, ``tpr_at_1pct_fpr``, ``tpr_at_0.1pct_fpr`` (floats; NaN when a
        class is missing or the count rule withholds them) and the full ROC as
        ``fpr``, ``tpr`` arrays, computed on the exact sorted scores.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    is_member = _as_bool(is_member)
    if scores.shape != is_member.shape:
        raise ValueError("scores and is_member must have the same length")
    n_pos = int(is_member.sum())
    nan = float("nan")
    if n_pos == 0 or n_pos == is_member.size:
        empty = np.zeros(0)
        return {"auc": nan, **{k: nan for k in TPR_FPR_LEVELS}, "fpr": empty, "tpr": empty}
    n_neg = int((~is_member).sum())
    fpr, tpr = exact_roc(scores, is_member)
    low_fpr = {
        key: tpr_at_fpr(fpr, tpr, f) if n_neg >= min_nonmembers_for_fpr(f, min_count_factor) else nan
        for key, f in TPR_FPR_LEVELS.items()
    }
    # The rank formula: roc_auc_score's value without its input validation (~9 ms a call).
    return {"auc": auc_of(scores, is_member), **low_fpr, "fpr": fpr, "tpr": tpr}


def balanced_accuracy(decisions: np.ndarray, is_member: np.ndarray) -> float:
    """Mean of the TPR on members and the TNR on non-members (NaN if a class is empty)."""
    d = _as_bool(decisions)
    m = _as_bool(is_member)
    if d.shape != m.shape:
        raise ValueError("decisions and is_member must have the same length")
    if not m.any() or m.all():
        return float("nan")
    return float(0.5 * (d[m].mean() + (~d[~m]).mean()))


def forgetting_rate(before: np.ndarray, after: np.ndarray) -> dict:
    """Forgetting rate of the forget set from oracle decisions before/after.

    Parameters
    ----------
    before, after : np.ndarray
        Boolean oracle decisions ("member") per forget sample, on the model
        before and after the withdrawal, aligned by sample.

    Returns
    -------
    dict
        ``fr = (A_F - B_F) / B_T`` (a net rate; negative when more samples are
        flagged after), ``fr_transition = |before & ~after| / B_T`` (per-sample
        T->F rate, which ignores F->T flips), ``b_t`` and ``n_forget``. Both
        rates are NaN when ``B_T == 0``.
    """
    b = _as_bool(before)
    a = _as_bool(after)
    if b.shape != a.shape:
        raise ValueError("before and after must have the same length")
    n = int(b.size)
    b_t = int(b.sum())
    a_f = n - int(a.sum())
    b_f = n - b_t
    if b_t == 0:
        fr = fr_t = float("nan")
    else:
        fr = (a_f - b_f) / b_t
        fr_t = int((b & ~a).sum()) / b_t
    return {"fr": float(fr), "fr_transition": float(fr_t), "b_t": b_t, "n_forget": n}


def threshold_at_fpr(nonmember_scores: np.ndarray, fpr: float) -> float:
    """Lowest threshold ``t`` of the rule ``score >= t`` with the largest FPR not above ``fpr``.

    With ``n`` scores, at most ``k = floor(fpr * n)`` may be flagged. ``t`` is
    just above the ``(k+1)``-th largest score ``a`` (``np.nextafter(a, inf)``),
    so exactly the scores ``> a`` are flagged: ties at ``a`` all stay
    unflagged, and no threshold flags more without exceeding ``k``. ``k == 0``
    gives ``nextafter(max, inf)``; ``k >= n`` gives ``-inf`` (all flagged).

    Taking the lowest such threshold, rather than any point of the gap between
    non-member scores, matches how ``best_balanced_threshold`` breaks ties, so
    on the calibration model it flags exactly the members the fitted threshold
    flags.

    Parameters
    ----------
    nonmember_scores : np.ndarray
        Finite scores of non-members (higher = more likely member).
    fpr : float
        Target false-positive rate in ``[0, 1]``.

    Returns
    -------
    float
    """
    s = np.sort(np.asarray(nonmember_scores, dtype=np.float64).reshape(-1))
    if s.size == 0:
        raise ValueError("need at least one non-member score")
    if not np.all(np.isfinite(s)):
        raise ValueError("non-member scores must be finite")
    if not 0 <= fpr <= 1:
        raise ValueError("fpr must be in [0, 1]")
    # 1e-9: fpr = c / n computed in floating point may land just below c / n.
    k = int(np.floor(fpr * s.size + 1e-9))
    if k >= s.size:
        return float("-inf")
    return float(np.nextafter(s[s.size - 1 - k], np.inf))


def fr_at_fixed_fpr(
    before_member: np.ndarray,
    member_scores: np.ndarray,
    nonmember_scores: np.ndarray,
    fpr: float,
) -> float:
    """FR with the threshold re-chosen on this model to keep the non-member FPR at ``fpr``.

    A threshold fixed at calibration also moves with drift (e.g. every loss
    rising with continued training), which the plain FR counts as forgetting.
    Here the threshold is re-chosen with :func:`threshold_at_fpr` on *this*
    model's non-member scores, so a uniform shift of all scores gives FR 0 and
    only a change of the members relative to the non-members counts.

    Parameters
    ----------
    before_member : np.ndarray
        Boolean decisions on the forget samples at calibration (defines B).
    member_scores : np.ndarray
        Scores of the same forget samples on this model, aligned.
    nonmember_scores : np.ndarray
        Scores of the non-members on this model.
    fpr : float
        Non-member FPR at calibration.

    Returns
    -------
    float
        ``(A_F - B_F) / B_T`` as in :func:`forgetting_rate`; NaN when
        ``B_T == 0``, ``fpr`` is NaN or a non-member score is not finite.
    """
    n = np.asarray(nonmember_scores, dtype=np.float64).reshape(-1)
    if not np.isfinite(fpr) or n.size == 0 or not np.all(np.isfinite(n)):
        return float("nan")
    after = np.asarray(member_scores, dtype=np.float64).reshape(-1) >= threshold_at_fpr(n, fpr)
    return forgetting_rate(before_member, after)["fr"]


def _rng(rng: RngLike) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def bootstrap_interval(
    statistic_fn: Callable[..., float],
    arrays: Sequence[np.ndarray],
    n_boot: int = 200,
    alpha: float = 0.05,
    rng: RngLike = None,
    strata: np.ndarray | None = None,
) -> tuple[float, float]:
    """Percentile-bootstrap ``(1 - alpha)`` interval of a per-sample statistic.

    Parameters
    ----------
    statistic_fn : callable
        ``statistic_fn(*resampled_arrays) -> float``.
    arrays : sequence of np.ndarray
        Arrays indexed by sample along axis 0 (same length); resampled jointly,
        so pairings (e.g. before/after decisions) are kept.
    n_boot : int
        Number of bootstrap replicates.
    alpha : float
        Two-sided level; the interval is the ``alpha/2`` and ``1 - alpha/2``
        percentiles of the replicates.
    rng : Generator, int, SeedSequence or None
        Randomness source.
    strata : np.ndarray, optional
        Labels; if given, samples are resampled with replacement within each
        stratum separately, keeping stratum sizes fixed (used for AUC so every
        replicate has the original numbers of members and non-members).

    Returns
    -------
    (lo, hi) : tuple of float
        NaN replicates are ignored; ``(nan, nan)`` if all are NaN.
    """
    arrays = [np.asarray(a) for a in arrays]
    if not arrays:
        raise ValueError("bootstrap_interval needs at least one array")
    n = arrays[0].shape[0]
    if any(a.shape[0] != n for a in arrays):
        raise ValueError("all arrays must have the same length along axis 0")
    if n == 0 or n_boot < 1:
        return float("nan"), float("nan")
    gen = _rng(rng)
    if strata is None:
        groups = [np.arange(n)]
    else:
        strata = np.asarray(strata).reshape(-1)
        if strata.shape[0] != n:
            raise ValueError("strata must have one label per sample")
        groups = [np.flatnonzero(strata == s) for s in np.unique(strata)]

    # All of a stratum's draws at once (stratum by stratum): one call per stratum.
    draws = [g[gen.integers(0, g.size, size=(n_boot, g.size))] for g in groups]
    reps = np.empty(n_boot, dtype=np.float64)
    for b in range(n_boot):
        idx = np.concatenate([d[b] for d in draws])
        reps[b] = statistic_fn(*(a[idx] for a in arrays))
    reps = reps[np.isfinite(reps)]
    if reps.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(reps, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def auc_of(scores: np.ndarray, is_member: np.ndarray) -> float:
    """ROC AUC by the Mann-Whitney rank formula (ties averaged): the same value
    as ``roc_auc_score``, several times faster, which matters inside bootstraps."""
    m = is_member.astype(bool)
    n_m = int(m.sum())
    n_n = m.size - n_m
    if n_m == 0 or n_n == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[m].sum() - n_m * (n_m + 1) / 2) / (n_m * n_n))


def auc_interval(
    scores: np.ndarray,
    is_member: np.ndarray,
    n_boot: int = 200,
    rng: RngLike = None,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Bootstrap interval of the ROC AUC, resampling members and non-members separately.

    The same replicates as ``bootstrap_interval(auc_of, ..., strata=is_member)``
    (the same draws in the same order), computed for all replicates at once from
    resampling counts: each member's share of non-members below it (ties half)
    is a cumulative sum over the sorted non-member scores. The oracle computes
    several intervals per arm and round, so this is most of its time otherwise.
    """
    is_member = _as_bool(is_member)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if scores.shape[0] != is_member.shape[0]:
        raise ValueError("scores and is_member must have the same length")
    s_non, s_mem = scores[~is_member], scores[is_member]
    n_n, n_m = s_non.size, s_mem.size
    if n_n == 0 or n_m == 0 or n_boot < 1:
        return float("nan"), float("nan")
    gen = _rng(rng)
    idx_non = gen.integers(0, n_n, size=(n_boot, n_n))  # strata in np.unique order:
    idx_mem = gen.integers(0, n_m, size=(n_boot, n_m))  # non-members, then members
    order = np.argsort(s_non, kind="stable")
    rank_of = np.empty(n_n, dtype=np.int64)
    rank_of[order] = np.arange(n_n)
    rows = np.arange(n_boot)[:, None]
    count_non = np.bincount((rank_of[idx_non] + rows * n_n).ravel(), minlength=n_boot * n_n).reshape(n_boot, n_n)
    cum = np.zeros((n_boot, n_n + 1))
    np.cumsum(count_non, axis=1, out=cum[:, 1:])
    sorted_non = s_non[order]
    lo = np.searchsorted(sorted_non, s_mem, side="left")
    hi = np.searchsorted(sorted_non, s_mem, side="right")
    below = cum[:, lo] + 0.5 * (cum[:, hi] - cum[:, lo])  # (n_boot, n_m) per original member
    count_mem = np.bincount((idx_mem + rows * n_m).ravel(), minlength=n_boot * n_m).reshape(n_boot, n_m)
    reps = (count_mem * below).sum(axis=1) / (n_m * n_n)
    reps = reps[np.isfinite(reps)]
    if reps.size == 0:
        return float("nan"), float("nan")
    low, high = np.percentile(reps, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)


def fr_interval(
    before: np.ndarray,
    after: np.ndarray,
    n_boot: int = 200,
    rng: RngLike = None,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Bootstrap interval of FR, resampling forget samples (paired before/after).

    The replicates of ``bootstrap_interval`` on :func:`forgetting_rate` (same
    draws), vectorised: ``fr = (B_T - A_T) / B_T`` of each resample.
    """
    b, a = _as_bool(before), _as_bool(after)
    if b.shape != a.shape:
        raise ValueError("before and after must have the same length")
    n = b.size
    if n == 0 or n_boot < 1:
        return float("nan"), float("nan")
    gen = _rng(rng)
    idx = gen.integers(0, n, size=(n_boot, n))
    b_t = b[idx].sum(axis=1)
    a_t = a[idx].sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        reps = (b_t - a_t) / b_t
    reps = reps[(b_t > 0) & np.isfinite(reps)]
    if reps.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(reps, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)
