"""The membership audit of a scenario: which clients, against which non-members,
calibrated when, and the rows it adds to the metrics table.

For each withdrawal event the oracle is calibrated once, on the ``original``
global model just before the event (DESIGN rule 5), separately for every
withdrawing client and for ``controls`` clients that never withdraw (their FR
should stay near 0: a check that FR measures forgetting, not drift). Members are
the client's train part; non-members are its held-out part topped up with global
test samples, resampled to the members' label histogram and equal in number.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from fedforget.data.federated import FederatedData
from fedforget.oracle.features import sample_statistics
from fedforget.oracle.oracle import MembershipOracle
from fedforget.oracle.sampling import class_matched_nonmembers
from fedforget.schedule import ORIGINAL, RETRAIN, derive_seed

Row = tuple[str, int, int | None, str, float]

WITNESS_KEYS = {"mia_auc": "witness_mia_auc", "fr": "witness_fr"}
OVER_UNLEARNING_ACC_MARGIN = 0.02


def nonmember_ids(fd: FederatedData, client: int, seed: int, members: np.ndarray | None = None) -> np.ndarray:
    """Class-matched non-members of a client's members (default its train part):
    its held-out part first, then test samples."""
    members = fd.train_ids[client] if members is None else members
    pool = np.concatenate([fd.holdout_ids[client], fd.test_ids])
    preferred = np.r_[np.ones(len(fd.holdout_ids[client]), bool), np.zeros(len(fd.test_ids), bool)]
    rng = np.random.default_rng(derive_seed(seed, "nonmembers", client))
    idx = class_matched_nonmembers(fd.y[members], fd.y[pool], len(members), rng, preferred=preferred)
    return pool[idx]


def audit_ids(
    fd: FederatedData, client: int, seed: int, members: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Members (default: the client's train part; a deletion's forget set
    otherwise) and class-matched non-members, in the column order every oracle
    reference uses."""
    members = fd.train_ids[client] if members is None else members
    return members, nonmember_ids(fd, client, seed, members)


def lira_in_masks(n_samples: int, n_shadows: int, seed: int, client: int) -> np.ndarray:
    """``(n_shadows, n_samples)`` booleans: which audit samples each IN shadow
    trains on. Balanced as in Carlini et al.: every sample is IN in exactly half
    of the shadows (so every sample has both an IN and an OUT distribution)."""
    rng = np.random.default_rng(derive_seed(seed, "lira-in", client))
    masks = np.zeros((n_shadows, n_samples), bool)
    for j in range(n_samples):
        masks[rng.permutation(n_shadows)[: n_shadows // 2], j] = True
    return masks


@dataclass
class LiraShadows:
    """Reference models of one audited client: OUT shadows never saw its data;
    IN shadows trained on the audit samples where ``in_masks`` is True."""

    out_models: list[torch.nn.Module]
    in_models: list[torch.nn.Module] = field(default_factory=list)
    in_masks: np.ndarray | None = None


@dataclass
class _Watch:
    client: int
    event_round: int
    withdrawn: bool
    oracle: MembershipOracle
    witness_mask: np.ndarray | None = None
    warned: bool = False


@dataclass
class MembershipAudit:
    """Oracles of one scenario and the metrics they produce."""

    fd: FederatedData
    seed: int
    attack: str = "loss"
    n_boot: int = 200
    controls: int = 2
    keep_scores: bool = True
    watches: list[_Watch] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    score_frames: list[pd.DataFrame] = field(default_factory=list)

    def control_clients(self, withdrawn: list[int]) -> list[int]:
        """A seeded choice of ``controls`` clients that never withdraw."""
        pool = [c for c in range(self.fd.num_clients) if c not in withdrawn]
        rng = np.random.default_rng(derive_seed(self.seed, "controls"))
        k = min(self.controls, len(pool))
        return sorted(rng.choice(pool, size=k, replace=False).tolist()) if k else []

    def calibrate(
        self,
        model: torch.nn.Module,
        event_round: int,
        clients: list[int],
        withdrawn: bool,
        shadows: dict[int, LiraShadows] | None = None,
        attack_params: dict | None = None,
        members: dict[int, np.ndarray] | None = None,
    ) -> list[Row]:
        """Calibrate one oracle per client on ``model`` (original, end of round
        event_round - 1) and return original's "before" rows at that round.

        ``shadows[c]``: for ``lira``, the reference models of client ``c``."""
        rows: list[Row] = []
        for c in clients:
            mem, non = audit_ids(self.fd, c, self.seed, (members or {}).get(c))
            x_m, y_m = self.fd.tensors(mem)
            x_n, y_n = self.fd.tensors(non)
            reference = None
            if self.attack == "lira":
                if not shadows or c not in shadows or not shadows[c].out_models:
                    raise ValueError(f"lira needs shadow models for client {c}")
                reference = self._lira_reference(shadows[c], x_m, y_m, x_n, y_n)
            oracle = MembershipOracle.calibrate(
                model,
                (x_m, y_m, mem),
                (x_n, y_n, non),
                attack=self.attack,
                n_boot=self.n_boot,
                seed=derive_seed(self.seed, "oracle", c),
                reference=reference,
                attack_params=attack_params,
            )
            mask = None
            if withdrawn and c in self.fd.witness_ids:
                mask = np.isin(mem, self.fd.witness_ids[c])
            w = _Watch(c, event_round, withdrawn, oracle, mask)
            self.watches.append(w)
            rows += self._rows_for(w, ORIGINAL, event_round - 1, model, scores=True)
        return rows

    def evaluate(self, arm: str, rnd: int, model: torch.nn.Module, last_round: int) -> list[Row]:
        """Rows of every calibrated oracle on an arm's model at a round (from
        each oracle's event round on)."""
        rows: list[Row] = []
        for w in self.watches:
            if rnd >= w.event_round:
                keep = self.keep_scores and rnd in (w.event_round, last_round)
                rows += self._rows_for(w, arm, rnd, model, scores=keep)
        return rows

    def _rows_for(self, w: _Watch, arm: str, rnd: int, model: torch.nn.Module, scores: bool) -> list[Row]:
        has_witness = w.witness_mask is not None and w.witness_mask.any()
        # With a witness, one forward pass over members and non-members serves both reports.
        stats = self._stats(w, model) if has_witness else None
        rep = w.oracle.evaluate_stats(*stats) if has_witness else w.oracle.evaluate(model)
        out: list[Row] = [(arm, rnd, w.client, k, float(v)) for k, v in rep.metrics.items()]
        if np.isnan(rep.metrics["fr"]) and not w.warned:
            w.warned = True
            self.warnings.append(
                f"client {w.client}, event round {w.event_round}: the oracle flags none of its samples "
                "as members before the withdrawal (B_T = 0), so FR is undefined (NaN)"
            )
        if has_witness:
            wrep = w.oracle.evaluate_stats(*stats, subset_mask=w.witness_mask)
            out += [(arm, rnd, w.client, WITNESS_KEYS[k], float(wrep.metrics[k])) for k in WITNESS_KEYS]
        if scores and self.keep_scores:
            ps = rep.per_sample
            self.score_frames.append(
                pd.DataFrame(
                    {
                        "arm": arm,
                        "round": rnd,
                        "client": w.client,
                        "sample_id": ps["sample_id"].astype(np.int64),
                        "member": ps["member"],
                        "score": ps["score"],
                        "decision": ps["decision"],
                    }
                )
            )
        return out

    @staticmethod
    def _lira_reference(sh: LiraShadows, x_m, y_m, x_n, y_n) -> dict:
        """phi (logit-scaled confidence) of every shadow on every audit sample;
        NaN where a shadow does not belong to a sample's IN / OUT distribution."""

        def phi(model):
            return np.concatenate(
                [sample_statistics(model, x_m, y_m).logit_scaled, sample_statistics(model, x_n, y_n).logit_scaled]
            )

        phi_out = [phi(m) for m in sh.out_models]
        phi_in = []
        for model, mask in zip(sh.in_models, sh.in_masks if sh.in_masks is not None else [], strict=True):
            p = phi(model)
            phi_in.append(np.where(mask, p, np.nan))
            phi_out.append(np.where(mask, np.nan, p))
        return {"phi_in": np.stack(phi_in) if phi_in else None, "phi_out": np.stack(phi_out)}

    @staticmethod
    def _stats(w: _Watch, model: torch.nn.Module):
        o = w.oracle
        return (
            sample_statistics(model, o.members[0], o.members[1], o.batch_size),
            sample_statistics(model, o.nonmembers[0], o.nonmembers[1], o.batch_size),
        )


def over_unlearning_rows(metrics: pd.DataFrame, methods: list[str], withdrawn: list[int]) -> list[Row]:
    """``over_unlearning`` = 1 where a method's MIA AUC on a forgetting client is
    below the retrain arm's by more than retrain's interval (auc < retrain's
    lower bound), or its forget accuracy is more than 2 points below retrain's."""
    df = metrics[metrics.client.isin(withdrawn)]
    piv = df.pivot_table(index=["arm", "round", "client"], columns="metric", values="value")
    rows: list[Row] = []
    if RETRAIN not in piv.index.get_level_values(0):
        return rows
    ref = piv.loc[RETRAIN]
    for m in methods:
        if m not in piv.index.get_level_values(0):
            continue
        mine = piv.loc[m]
        for (rnd, client), r in mine.iterrows():
            if "mia_auc" not in r or pd.isna(r.get("mia_auc")) or (rnd, client) not in ref.index:
                continue
            base = ref.loc[(rnd, client)]
            if pd.isna(base.get("mia_auc", np.nan)):
                continue  # before the event: retrain is not audited there
            auc_low = r["mia_auc"] < base.get("mia_auc_lo", np.nan)
            acc_low = r.get("forget_accuracy", np.nan) < base.get("forget_accuracy", np.nan) - OVER_UNLEARNING_ACC_MARGIN
            rows.append((m, int(rnd), int(client), "over_unlearning", float(bool(auc_low or acc_low))))
    return rows
