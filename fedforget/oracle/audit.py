"""The membership audit of a scenario: which clients, against which non-members,
calibrated when, and the rows it adds to the metrics table.

For each withdrawal event the oracle is calibrated once, on the ``original``
global model just before the event (DESIGN rule 5), separately for every
forgetting client and for ``controls`` clients that never withdraw (their FR
should stay near 0: a check that FR measures forgetting, not drift).

Data roles (DESIGN "Data roles"): members are the client's forget set; its
non-members come from its ``audit`` part (which no method reads) topped up with
test samples, resampled to the members' label histogram, at least
``min_nonmembers`` of them where the data allows. Planted witness samples are
audited against witness non-members planted the same way on ``audit`` samples
nobody trained on; the client-wide metrics leave planted samples out on both
sides (like against like).

Reference models are the attack's business: the audit collects the attack's
:class:`~fedforget.oracle.reference.ReferenceRun` requests (``reference_runs``)
and hands the trained models back at calibration; the run loop never knows what
they are.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from fedforget.data.federated import FederatedData
from fedforget.oracle.attacks import Attack, get_attack
from fedforget.oracle.client_level import N_PERMUTATIONS, ClientMembershipTest
from fedforget.oracle.features import SampleStats, sample_statistics
from fedforget.oracle.oracle import MembershipOracle, OracleReport
from fedforget.oracle.reference import ReferenceRun
from fedforget.oracle.sampling import class_matched_nonmembers
from fedforget.results import MetricRow
from fedforget.schedule import ORIGINAL, RETRAIN, derive_seed

WITNESS_KEYS = {"mia_auc": "witness_mia_auc", "mia_auc_lo": "witness_mia_auc_lo", "mia_auc_hi": "witness_mia_auc_hi",
                "fr": "witness_fr", "fr_fixed_fpr": "witness_fr_fixed_fpr"}
#: Two-sided normal quantile of the 95% interval of a difference of accuracies.
Z95 = 1.959963984540054
#: A p-value below this is "detected" (the client-level test's level).
DETECTION_LEVEL = 0.05


def nonmember_ids(
    fd: FederatedData, client: int, seed: int, members: np.ndarray, min_count: int = 1
) -> np.ndarray:
    """Class-matched, distinct non-members of ``members``: the client's clean
    ``audit`` samples first, then test samples; ``max(len(members), min_count)``
    of them where every class has enough, fewer (the histogram kept) where not."""
    planted = fd.witness_audit_ids.get(client, np.zeros(0, np.int64))
    audit = np.setdiff1d(fd.audit_ids[client], planted)
    pool = np.concatenate([audit, fd.test_ids])
    preferred = np.r_[np.ones(len(audit), bool), np.zeros(len(fd.test_ids), bool)]
    n = min(max(len(members), int(min_count)), len(pool))
    rng = np.random.default_rng(derive_seed(seed, "nonmembers", client))
    return pool[class_matched_nonmembers(fd.y[members], fd.y[pool], n, rng, preferred=preferred)]


@dataclass
class AuditTarget:
    """One audited client at one event and the samples the oracle reads.

    ``members``/``nonmembers``: the client-wide audit (planted samples left
    out); ``witness_members``/``witness_nonmembers``: planted train samples
    against planted audit samples (empty without a witness). ``attack`` is the
    instance that planned the reference runs of all four sets' columns.
    """

    client: int
    event_round: int
    withdrawn: bool
    members: np.ndarray
    nonmembers: np.ndarray
    witness_members: np.ndarray
    witness_nonmembers: np.ndarray
    attack: Attack

    @property
    def columns(self) -> np.ndarray:
        return np.concatenate([self.members, self.nonmembers, self.witness_members, self.witness_nonmembers])

    @property
    def has_witness(self) -> bool:
        return len(self.witness_members) > 0 and len(self.witness_nonmembers) > 0


@dataclass
class _Watch:
    target: AuditTarget
    oracle: MembershipOracle
    witness_oracle: MembershipOracle | None = None
    client_test: ClientMembershipTest | None = None


@dataclass(kw_only=True)
class MembershipAudit:
    """Oracles of one scenario and the metrics they produce.

    Build it with the audited clients (:meth:`add`), read ``reference_runs`` for
    the training the attack needs, then :meth:`calibrate` at each event and
    :meth:`evaluate` every arm at every round label.
    """

    fd: FederatedData
    seed: int
    attack: str = "loss"
    attack_params: dict = field(default_factory=dict)
    n_boot: int = 200
    min_nonmembers: int = 1000
    keep_scores: bool = True
    targets: list[AuditTarget] = field(default_factory=list)
    reference_runs: list[ReferenceRun] = field(default_factory=list)
    watches: list[_Watch] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    score_frames: list[pd.DataFrame] = field(default_factory=list)
    _warned: set = field(default_factory=set)
    _pool: np.ndarray | None = None

    def __getstate__(self) -> dict:
        # A checkpoint holds the oracle's state, not the dataset (rebuilt from the scenario).
        return {k: v for k, v in self.__dict__.items() if k != "fd"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, fd=None)

    @property
    def pool_ids(self) -> np.ndarray:
        """Never-trained data for the client-level test's pseudo-clients: every
        client's audit part (planted witness samples left out) and the test set."""
        if self._pool is None:
            planted = np.concatenate([np.zeros(0, np.int64), *self.fd.witness_audit_ids.values()])
            audit = np.setdiff1d(np.concatenate(self.fd.audit_ids), planted)
            self._pool = np.concatenate([audit, self.fd.test_ids])
        return self._pool

    def _statistics(self, model: torch.nn.Module, watches: list[_Watch]) -> Callable[[np.ndarray], SampleStats]:
        """One forward pass over every sample the watches and the client-level
        test read (members, non-members, the pseudo-client pool); returns a
        lookup from sample ids to their statistics."""
        ids = np.unique(np.concatenate([self.pool_ids, *(np.r_[w.target.members, w.target.nonmembers]
                                                         for w in watches)]))
        stats = sample_statistics(model, *self.fd.tensors(ids))
        return lambda wanted: stats.subset(np.searchsorted(ids, wanted))

    def control_clients(self, forgetting: list[int], k: int) -> list[int]:
        """A seeded choice of ``k`` clients that never forget anything."""
        pool = [c for c in range(self.fd.num_clients) if c not in forgetting]
        rng = np.random.default_rng(derive_seed(self.seed, "controls"))
        k = min(k, len(pool))
        return sorted(rng.choice(pool, size=k, replace=False).tolist()) if k else []

    def add(self, client: int, event_round: int, withdrawn: bool, forget: np.ndarray) -> AuditTarget:
        """Audit ``client`` from ``event_round`` on, with ``forget`` as its members,
        and plan the reference training its attack needs."""
        planted = self.fd.witness_ids.get(client, np.zeros(0, np.int64)) if withdrawn else np.zeros(0, np.int64)
        members = np.setdiff1d(forget, planted)
        target = AuditTarget(
            client, event_round, withdrawn, members,
            nonmember_ids(self.fd, client, self.seed, members, self.min_nonmembers),
            planted, self.fd.witness_audit_ids.get(client, np.zeros(0, np.int64)) if withdrawn else planted,
            get_attack(self.attack, **self.attack_params),
        )
        self.targets.append(target)
        self.reference_runs += target.attack.reference_runs(client, target.columns, event_round - 1, self.seed)
        return target

    def calibrate(self, event_round: int, model: torch.nn.Module, references: Mapping[str, torch.nn.Module]) -> list[MetricRow]:
        """Calibrate the oracles of every target of ``event_round`` on ``model``
        (original after round event_round - 1), with the trained reference
        models; return original's rows at the calibration round."""
        rows: list[MetricRow] = []
        new: list[_Watch] = []
        for t in (t for t in self.targets if t.event_round == event_round):
            x_cols, y_cols = self.fd.tensors(t.columns)
            t.attack.fit_reference_models(references, x_cols, y_cols)
            n_main = len(t.members) + len(t.nonmembers)
            oracle = self._oracle(model, t, t.members, t.nonmembers, np.arange(n_main), "main")
            witness = None
            if t.has_witness:
                cols = n_main + np.arange(len(t.witness_members) + len(t.witness_nonmembers))
                witness = self._oracle(model, t, t.witness_members, t.witness_nonmembers, cols, "witness")
            rng = np.random.default_rng(derive_seed(self.seed, "client-test", t.client, event_round))
            test = ClientMembershipTest.calibrate(self.fd.y[t.members], self.fd.y[self.pool_ids], N_PERMUTATIONS, rng)
            self._warn_once(t.client, event_round, test.power_warning())
            new.append(_Watch(t, oracle, witness, test))
        self.watches += new
        lookup = self._statistics(model, new)
        for w in new:
            rows += self._rows_for(w, ORIGINAL, event_round - 1, model, True, lookup)
        return rows

    def _oracle(self, model, t: AuditTarget, mem, non, columns, part: str) -> MembershipOracle:
        return MembershipOracle.calibrate(
            model,
            (*self.fd.tensors(mem), mem),
            (*self.fd.tensors(non), non),
            attack=t.attack.restricted(columns),
            n_boot=self.n_boot,
            seed=derive_seed(self.seed, "oracle", t.client, part),
        )

    def evaluate(self, arm: str, rnd: float, model: torch.nn.Module, score_rounds: set[float]) -> list[MetricRow]:
        """Rows of every calibrated oracle on an arm's model at a round label
        (from each oracle's event on: labels > event round - 1)."""
        rows: list[MetricRow] = []
        live = [w for w in self.watches if rnd > w.target.event_round - 1]
        lookup = self._statistics(model, live) if live else None
        for w in live:
            rows += self._rows_for(w, arm, rnd, model, rnd in score_rounds, lookup)
        return rows

    def _rows_for(
        self, w: _Watch, arm: str, rnd: float, model: torch.nn.Module, scores: bool,
        lookup: Callable[[np.ndarray], SampleStats],
    ) -> list[MetricRow]:
        c, t = w.target.client, w.target
        # One forward pass serves the oracle and the client-level test (see _statistics).
        m_stats = lookup(t.members)
        rep = w.oracle.evaluate_stats(m_stats, lookup(t.nonmembers))
        client_level = w.client_test.evaluate(-m_stats.loss, -lookup(self.pool_ids).loss) if w.client_test else {}
        out: list[MetricRow] = [MetricRow(arm, rnd, c, k, float(v)) for k, v in rep.metrics.items()]
        out += [MetricRow(arm, rnd, c, k, float(v)) for k, v in client_level.items()]
        self._note(c, w.target.event_round, rep)
        if w.witness_oracle is not None:
            wrep = w.witness_oracle.evaluate(model)
            out += [MetricRow(arm, rnd, c, WITNESS_KEYS[k], float(wrep.metrics[k])) for k in WITNESS_KEYS]
        if scores and self.keep_scores:
            self._keep_scores(arm, rnd, c, rep)
        return out

    def _note(self, client: int, event_round: int, rep: OracleReport) -> None:
        """Each reason for a NaN metric, once per client and event."""
        reasons = list(getattr(rep, "notes", ()))
        if np.isnan(rep.metrics["fr"]):
            reasons.append("the oracle flags none of its samples as members before the withdrawal "
                           "(B_T = 0), so FR is undefined (NaN)")
        for why in reasons:
            self._warn_once(client, event_round, why)

    def _warn_once(self, client: int, event_round: int, why: str | None) -> None:
        if why and (client, event_round, why) not in self._warned:
            self._warned.add((client, event_round, why))
            self.warnings.append(f"client {client}, event round {event_round}: {why}")

    def _keep_scores(self, arm: str, rnd: float, client: int, rep: OracleReport) -> None:
        ps = rep.per_sample
        self.score_frames.append(pd.DataFrame({
            "arm": arm, "round": float(rnd), "client": client,
            "sample_id": ps["sample_id"].astype(np.int64), "member": ps["member"],
            "score": ps["score"], "decision": ps["decision"], "phi": ps["phi"],
        }))


def _pivot(metrics: pd.DataFrame, withdrawn: list[int]) -> pd.DataFrame:
    df = metrics[metrics.client.isin(withdrawn)]
    return df.pivot_table(index=["arm", "round", "client"], columns="metric", values="value")


def accuracy_difference_halfwidth(acc_a: float, acc_b: float, n: float) -> float:
    """Half-width of the 95% interval of the difference of two accuracies on
    the same ``n`` samples, from their binomial variances. It ignores the
    pairing (which would narrow it), so a flag it raises is conservative."""
    return Z95 * float(np.sqrt((acc_a * (1 - acc_a) + acc_b * (1 - acc_b)) / n))


def over_unlearning_rows(metrics: pd.DataFrame, methods: list[str], withdrawn: list[int]) -> list[MetricRow]:
    """``over_unlearning`` = 1 where a method's MIA AUC on a forgetting client is
    below the retrain arm's by more than retrain's interval (auc < retrain's
    lower bound), or its forget accuracy is below retrain's by more than the
    95% interval of the difference (:func:`accuracy_difference_halfwidth` on the
    client's ``n_forget`` samples); 0 where both are compared and neither holds."""
    piv = _pivot(metrics, withdrawn)
    rows: list[MetricRow] = []
    if RETRAIN not in piv.index.get_level_values(0):
        return rows
    ref = piv.loc[RETRAIN]
    for m in methods:
        if m not in piv.index.get_level_values(0):
            continue
        for (rnd, client), r in piv.loc[m].iterrows():
            if "mia_auc" not in r or pd.isna(r.get("mia_auc")) or (rnd, client) not in ref.index:
                continue
            base = ref.loc[(rnd, client)]
            if pd.isna(base.get("mia_auc", np.nan)):
                continue  # before the event: retrain is not audited there
            auc_low = r["mia_auc"] < base.get("mia_auc_lo", np.nan)
            acc, acc_ref = r.get("forget_accuracy", np.nan), base.get("forget_accuracy", np.nan)
            margin = accuracy_difference_halfwidth(acc, acc_ref, r.get("n_forget", np.nan))
            rows.append(MetricRow(m, float(rnd), int(client), "over_unlearning", float(bool(auc_low or acc < acc_ref - margin))))
    return rows


def relapse_rows(metrics: pd.DataFrame, methods: list[str], events: dict[int, int]) -> list[MetricRow]:
    """Forgetting that comes back, per method and withdrawn client, at the last round T.

    - ``relapse_auc``: (AUC - retrain's AUC) at T minus the same gap right after
      the step (label t - 0.5); positive: the method's model re-learned the client
      faster than retrain's.
    - ``relapse_z``: the same with the client-level ``client_mia_z``.
    - ``relapse_flag``: 1 when the client-level test did not detect the client
      right after the step (p >= 0.05) and detects it at a later round, else 0.

    ``events`` maps each withdrawn client to its event round t.
    """
    piv = _pivot(metrics, list(events))
    if RETRAIN not in piv.index.get_level_values(0):
        return []
    rows: list[MetricRow] = []
    for m in (m for m in methods if m in piv.index.get_level_values(0)):
        for client, t in events.items():
            rows += _relapse_of(piv, m, client, float(t) - 0.5)
    return rows


def _relapse_of(piv: pd.DataFrame, arm: str, client: int, step: float) -> list[MetricRow]:
    mine = piv.loc[arm].xs(client, level="client")
    ref = piv.loc[RETRAIN].xs(client, level="client") if client in piv.loc[RETRAIN].index.get_level_values(1) else None
    if ref is None or step not in mine.index or step not in ref.index:
        return []
    last = float(mine.index.max())
    out: list[MetricRow] = []
    for metric, key in (("mia_auc", "relapse_auc"), ("client_mia_z", "relapse_z")):
        if metric in mine and metric in ref and last in ref.index:
            gap = mine[metric] - ref[metric].reindex(mine.index)
            out.append(MetricRow(arm, last, client, key, float(gap.loc[last] - gap.loc[step])))
    if "client_mia_pvalue" in mine:
        p = mine["client_mia_pvalue"]
        later = p[p.index > step]
        flag = bool(p.loc[step] >= DETECTION_LEVEL and (later < DETECTION_LEVEL).any())
        out.append(MetricRow(arm, last, client, "relapse_flag", float(flag)))
    return out
