"""The membership oracle behind the forgetting rate.

FR is only meaningful with a *fixed* oracle (METHODS.md, Implementation note 1):
the attack is calibrated once, on the global model just before a client
withdraws, and the same fitted attack then judges every later model (other
rounds, other unlearning arms). Its decisions on the members at calibration
time are the "before" decisions B of ``FR = (A_F - B_F) / B_T``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fedforget.oracle.attacks import Attack, get_attack
from fedforget.oracle.features import SampleStats, sample_statistics
from fedforget.oracle.metrics import (
    auc_interval,
    balanced_accuracy,
    forgetting_rate,
    fr_at_fixed_fpr,
    fr_interval,
    roc_metrics,
    withheld_tpr_notes,
)

__all__ = ["OracleReport", "MembershipOracle"]

#: ``(x, y, ids)``: inputs, integer labels and global sample ids (``None`` ids
#: become ``0..n-1``).
SampleSet = tuple[Any, Any, Any]


@dataclass(frozen=True)
class OracleReport:
    """What the oracle says about one model.

    Attributes
    ----------
    metrics : dict
        ``fr``, ``fr_transition``, ``b_t``, ``n_forget``, ``mia_auc``,
        ``mia_balanced_accuracy``, ``tpr_at_1pct_fpr``, ``tpr_at_0.1pct_fpr``
        (NaN with too few non-members, see ``notes``), ``fr_lo``, ``fr_hi``,
        ``mia_auc_lo``, ``mia_auc_hi``, ``n_nonmembers``, and two drift
        controls: ``fr_fixed_fpr`` (FR with the threshold re-chosen on this
        model so the non-member FPR equals the calibration one; 0 on the
        calibration model and under a uniform shift of all scores) and
        ``nonmember_fpr`` (share of non-members the fixed threshold flags on
        this model; equals ``fpr_calibration`` on the calibration model, and
        a departure from it signals drift).
    per_sample : dict of np.ndarray
        Equal-length arrays over the evaluated members then all non-members:
        ``sample_id``, ``member`` (bool), ``score``, ``decision`` (bool, on this
        model), ``decision_before`` (bool, at calibration) and ``phi`` (the
        logit-scaled confidence ``log p_y - log(1 - p_y)`` on this model).
    roc : tuple of np.ndarray
        ``(fpr, tpr)`` of members vs non-members on this model.
    notes : tuple of str
        One human-readable reason per metric withheld (reported as NaN), e.g.
        a TPR at an FPR level with fewer than ``10 / FPR`` non-members.
    """

    metrics: dict[str, float]
    per_sample: dict[str, np.ndarray]
    roc: tuple[np.ndarray, np.ndarray]
    notes: tuple[str, ...] = ()


def _unpack(data: SampleSet, what: str) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    if len(data) != 3:
        raise ValueError(f"{what} must be a tuple (x, y, ids)")
    x, y, ids = data
    x = torch.as_tensor(x).detach().cpu()
    y = torch.as_tensor(y).detach().cpu().long().reshape(-1)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{what}: x has {x.shape[0]} samples but y has {y.shape[0]}")
    ids = np.arange(y.shape[0]) if ids is None else np.asarray(ids).reshape(-1)
    if ids.shape[0] != y.shape[0]:
        raise ValueError(f"{what}: {ids.shape[0]} ids for {y.shape[0]} samples")
    if y.shape[0] == 0:
        raise ValueError(f"{what} is empty")
    return x, y, ids


class MembershipOracle:
    """A membership attack frozen at calibration, with its "before" decisions.

    Build it with :meth:`calibrate`; afterwards it cannot be refitted or
    modified, so every later :meth:`evaluate` uses the same decision rule.

    Attributes
    ----------
    attack : Attack
        The fitted attack.
    before_member, before_nonmember : np.ndarray of bool
        Decisions at calibration; ``before_member`` defines B.
    fpr_calibration : float
        Share of non-members flagged at calibration (mean of
        ``before_nonmember``); the FPR ``fr_fixed_fpr`` holds on later models.
    calibration : OracleReport
        The report on the calibration model itself (FR is 0 there).
    """

    def __init__(
        self,
        attack: Attack,
        members: tuple[torch.Tensor, torch.Tensor, np.ndarray],
        nonmembers: tuple[torch.Tensor, torch.Tensor, np.ndarray],
        *,
        member_stats: SampleStats,
        nonmember_stats: SampleStats,
        n_boot: int,
        seed: int,
        batch_size: int,
    ) -> None:
        self.attack = attack
        self.members = members
        self.nonmembers = nonmembers
        self.n_boot = int(n_boot)
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        m_cols, n_cols = self._columns(np.arange(len(member_stats)))
        self.before_member = self._decide(member_stats, m_cols)
        self.before_nonmember = self._decide(nonmember_stats, n_cols)
        self.fpr_calibration = float(self.before_nonmember.mean())
        self.calibration = self.evaluate_stats(member_stats, nonmember_stats)
        self._frozen = True

    def __setattr__(self, name: str, value: Any) -> None:
        # Refitting or swapping parts after calibration would silently change B.
        if getattr(self, "_frozen", False):
            raise AttributeError("MembershipOracle is frozen after calibration")
        super().__setattr__(name, value)

    @classmethod
    def calibrate(
        cls,
        model: torch.nn.Module,
        members: SampleSet,
        nonmembers: SampleSet,
        attack: str | Attack = "loss",
        attack_params: Mapping[str, Any] | None = None,
        n_boot: int = 200,
        seed: int = 0,
        reference: Mapping[str, np.ndarray | None] | None = None,
        batch_size: int = 1024,
    ) -> MembershipOracle:
        """Fit the attack on ``model`` and freeze it.

        Parameters
        ----------
        model : torch.nn.Module
            The global model just before the withdrawal.
        members : tuple (x, y, ids)
            The forget samples (e.g. the withdrawing client's train part).
        nonmembers : tuple (x, y, ids)
            Non-members, ideally class-matched (see ``class_matched_nonmembers``).
        attack : str or Attack
            A name in :data:`fedforget.registry.attacks` (``"loss"``,
            ``"population"``, ``"lira"``), or an attack instance.
        attack_params : mapping, optional
            Keyword arguments of the attack's constructor.
        n_boot : int
            Bootstrap replicates for the FR and AUC intervals.
        seed : int
            Seeds the bootstrap (``np.random.SeedSequence(seed)``); every
            :meth:`evaluate` call restarts from it, so results do not depend on
            call order.
        reference : mapping, optional
            Reference statistics given directly, for an attack that needs a
            reference, in its own format (:meth:`Attack.fit_reference_statistics`,
            :attr:`Attack.reference_format`), with ``n_members + n_nonmembers``
            columns ordered as the members followed by the non-members.
        batch_size : int
            Forward-pass batch size.
        """
        members_t = _unpack(members, "members")
        nonmembers_t = _unpack(nonmembers, "nonmembers")
        # An Attack instance may come with its reference already fitted (the
        # audit fits it from reference models); a name builds a fresh one.
        att = attack if isinstance(attack, Attack) else get_attack(attack, **dict(attack_params or {}))
        if reference is not None:
            att.fit_reference_statistics(reference)  # the attack's own format; ignored by one that needs none
        if not att.has_reference():
            raise ValueError(f"attack {att.name!r} needs reference={att.reference_format}")
        if att.needs_columns:
            expected = members_t[1].shape[0] + nonmembers_t[1].shape[0]
            if att.n_columns != expected:
                raise ValueError(
                    f"reference has {att.n_columns} columns, expected n_members + n_nonmembers = {expected}"
                )
        m_stats = sample_statistics(model, members_t[0], members_t[1], batch_size)
        n_stats = sample_statistics(model, nonmembers_t[0], nonmembers_t[1], batch_size)
        att.fit(m_stats, n_stats)
        return cls(att, members_t, nonmembers_t, member_stats=m_stats, nonmember_stats=n_stats, n_boot=n_boot, seed=seed,
                   batch_size=batch_size)

    @property
    def n_members(self) -> int:
        return int(self.members[1].shape[0])

    @property
    def n_nonmembers(self) -> int:
        return int(self.nonmembers[1].shape[0])

    def _columns(self, member_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Reference columns of the chosen members and of all non-members."""
        return member_idx, self.n_members + np.arange(self.n_nonmembers)

    def _score(self, stats: SampleStats, columns: np.ndarray) -> np.ndarray:
        if self.attack.needs_columns:
            return self.attack.score(stats, columns=columns)
        return self.attack.score(stats)

    def _decide(self, stats: SampleStats, columns: np.ndarray) -> np.ndarray:
        return self._score(stats, columns) >= self.attack.threshold

    def _member_index(self, subset_mask: np.ndarray | None) -> np.ndarray:
        if subset_mask is None:
            return np.arange(self.n_members)
        sel = np.asarray(subset_mask)
        if sel.dtype == bool:
            if sel.shape != (self.n_members,):
                raise ValueError(f"subset_mask must be a boolean mask of length {self.n_members}")
            return np.flatnonzero(sel)
        return sel.astype(np.int64).reshape(-1)

    def evaluate(self, model: torch.nn.Module, subset_mask: np.ndarray | None = None) -> OracleReport:
        """Judge ``model`` with the frozen attack.

        Parameters
        ----------
        model : torch.nn.Module
            Any later model (another round, another unlearning arm).
        subset_mask : np.ndarray, optional
            Boolean mask (or indices) over the members, e.g. witness samples:
            FR is computed on that subset and the MIA metrics compare it with
            all non-members.
        """
        m_stats = sample_statistics(model, self.members[0], self.members[1], self.batch_size)
        n_stats = sample_statistics(model, self.nonmembers[0], self.nonmembers[1], self.batch_size)
        return self.evaluate_stats(m_stats, n_stats, subset_mask)

    def evaluate_stats(
        self,
        member_stats: SampleStats,
        nonmember_stats: SampleStats,
        subset_mask: np.ndarray | None = None,
    ) -> OracleReport:
        """Like :meth:`evaluate`, from statistics already computed on all members/non-members."""
        if len(member_stats) != self.n_members or len(nonmember_stats) != self.n_nonmembers:
            raise ValueError("statistics must cover all calibration members and non-members, in order")
        idx = self._member_index(subset_mask)
        m_cols, n_cols = self._columns(idx)
        chosen = member_stats.subset(idx)
        m_score = self._score(chosen, m_cols)
        n_score = self._score(nonmember_stats, n_cols)
        thr = self.attack.threshold
        m_dec, n_dec = m_score >= thr, n_score >= thr

        before = self.before_member[idx]
        scores = np.concatenate([m_score, n_score])
        is_member = np.r_[np.ones(idx.size, bool), np.zeros(self.n_nonmembers, bool)]
        decisions = np.concatenate([m_dec, n_dec])

        fr_ss, auc_ss = np.random.SeedSequence(self.seed).spawn(2)
        roc = roc_metrics(scores, is_member)
        fr_lo, fr_hi = fr_interval(before, m_dec, self.n_boot, np.random.default_rng(fr_ss))
        auc_lo, auc_hi = auc_interval(scores, is_member, self.n_boot, np.random.default_rng(auc_ss))
        metrics = {
            **forgetting_rate(before, m_dec),
            "fr_fixed_fpr": fr_at_fixed_fpr(before, m_score, n_score, self.fpr_calibration),
            "nonmember_fpr": float(n_dec.mean()),
            "mia_auc": roc["auc"],
            "mia_balanced_accuracy": balanced_accuracy(decisions, is_member),
            "tpr_at_1pct_fpr": roc["tpr_at_1pct_fpr"],
            "tpr_at_0.1pct_fpr": roc["tpr_at_0.1pct_fpr"],
            "fr_lo": fr_lo,
            "fr_hi": fr_hi,
            "mia_auc_lo": auc_lo,
            "mia_auc_hi": auc_hi,
            "n_nonmembers": self.n_nonmembers,
        }
        per_sample = {
            "sample_id": np.concatenate([self.members[2][idx], self.nonmembers[2]]),
            "member": is_member,
            "score": scores,
            "decision": decisions,
            "decision_before": np.concatenate([before, self.before_nonmember]),
            # The logit-scaled confidence, whatever the attack: many models'
            # statistics (fedforget.analysis.many_models) read it across seeds.
            "phi": np.concatenate([chosen.logit_scaled, nonmember_stats.logit_scaled]),
        }
        return OracleReport(
            metrics=metrics,
            per_sample=per_sample,
            roc=(roc["fpr"], roc["tpr"]),
            notes=withheld_tpr_notes(self.n_nonmembers),
        )
