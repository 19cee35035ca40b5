"""Class-matched non-member selection.

Under label skew a membership attack can key on class identity instead of
membership; drawing non-members with the members' label histogram removes that
shortcut (METHODS.md, Implementation note 2).
"""

from __future__ import annotations

import numpy as np

__all__ = ["largest_remainder_counts", "matched_total", "class_matched_nonmembers"]


def largest_remainder_counts(counts: np.ndarray, n: int) -> np.ndarray:
    """Scale integer ``counts`` to sum exactly to ``n`` (Hamilton's method).

    Each entry gets ``floor(n * c / sum)``; the leftover units go to the entries
    with the largest fractional parts (ties: lower index first).
    """
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total <= 0:
        raise ValueError("counts must have a positive sum")
    if n < 0:
        raise ValueError("n must be >= 0")
    exact = counts * n / total
    base = np.floor(exact).astype(np.int64)
    left = n - int(base.sum())
    order = np.argsort(-(exact - base), kind="stable")
    base[order[:left]] += 1
    return base


def matched_total(counts: np.ndarray, available: np.ndarray, n: int) -> int:
    """The largest total ``m <= n`` whose largest-remainder split of ``counts``
    fits ``available`` in every class (so no class needs a sample twice)."""
    counts, available = np.asarray(counts, np.int64), np.asarray(available, np.int64)
    total = int(counts.sum())
    # No class may ask for more than it has: m * count / total <= available (+1 for rounding).
    m = min(int(n), int(np.min(available * total // np.maximum(counts, 1))) + len(counts))
    while m > 0 and np.any(largest_remainder_counts(counts, m) > available):
        m -= 1
    return max(m, 0)


def class_matched_nonmembers(
    member_labels: np.ndarray,
    candidate_labels: np.ndarray,
    n: int | None,
    rng: np.random.Generator,
    preferred: np.ndarray | None = None,
) -> np.ndarray:
    """Indices of candidates whose label histogram matches the members'.

    Parameters
    ----------
    member_labels : np.ndarray
        Labels of the member set (e.g. the withdrawing client's train part).
    candidate_labels : np.ndarray
        Labels of the candidate non-member pool.
    n : int or None
        Number of non-members; ``None`` means ``len(member_labels)``. Per-class
        counts are the member histogram scaled to ``n`` with largest-remainder
        rounding, so they sum exactly to ``n``.
    rng : np.random.Generator
        Randomness source.
    preferred : np.ndarray of bool, optional
        Candidates to use first (the withdrawing client's own held-out part);
        the rest (e.g. global test samples) only fill what they cannot.

    Returns
    -------
    np.ndarray of int
        Sorted, distinct indices into ``candidate_labels``: sampling is without
        replacement, always. When a class has fewer candidates than its share
        of ``n``, the whole set shrinks (every class in proportion) to the
        largest size that still matches the members' histogram, so fewer than
        ``n`` may come back. We match by subsampling rather than by weights:
        every later statistic (ROC, bootstrap, the ``10 / FPR`` rule) then
        counts each non-member once and with equal weight.

    Raises
    ------
    ValueError
        If a class that needs at least one non-member has no candidate.
    """
    member_labels = np.asarray(member_labels).reshape(-1)
    candidate_labels = np.asarray(candidate_labels).reshape(-1)
    if member_labels.size == 0:
        raise ValueError("member_labels is empty")
    n = member_labels.size if n is None else int(n)
    if preferred is None:
        preferred = np.zeros(candidate_labels.size, dtype=bool)
    preferred = np.asarray(preferred, dtype=bool).reshape(-1)
    if preferred.shape != candidate_labels.shape:
        raise ValueError("preferred must be a boolean mask over the candidates")

    classes, counts = np.unique(member_labels, return_counts=True)
    available = np.array([np.sum(candidate_labels == c) for c in classes])
    targets = largest_remainder_counts(counts, n)
    missing = [c for c, k, a in zip(classes, targets, available) if k > 0 and a == 0]
    if missing:
        raise ValueError(
            f"no non-member candidates for member class(es) {[x.item() for x in missing]}; "
            "cannot build a class-matched non-member set"
        )

    targets = largest_remainder_counts(counts, matched_total(counts, available, n))
    chosen = []
    for c, k in zip(classes, targets):
        in_class = candidate_labels == c
        pref = np.flatnonzero(in_class & preferred)
        rest = np.flatnonzero(in_class & ~preferred)
        got = rng.choice(pref, size=min(k, pref.size), replace=False)
        chosen.append(np.concatenate([got, rng.choice(rest, size=k - got.size, replace=False)]))
    out = np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)
    return np.sort(out.astype(np.int64))
