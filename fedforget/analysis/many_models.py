"""Per-example privacy of unlearning from many models: ε and U-LiRA.

A seeds run on fixed data (``data.seed`` set, ``--seeds N``) trains N
federations on the same clients and forget examples, with different training
randomness. At each round the oracle keeps per-sample scores (right after each
event's step, and at the last round), seed ``s`` gives one model per arm: N
models each method unlearned, N models retrained without the client, and the
logit-scaled confidence ``phi`` of every forget example under each.

- **ε** (the NeurIPS 2023 unlearning challenge's estimator,
  :mod:`fedforget.oracle.epsilon`): per forget example, how well the N
  method models can be told from the N retrained ones; the forgetting quality
  is its bucketed mean. ``ceiling`` is the largest ε these N can show at all.
- **U-LiRA** (:mod:`fedforget.oracle.ulira`): each model in turn is the
  target, the others are its per-example IN (unlearned) and OUT (retrained)
  references; AUC 0.5 = an attacker who knows the method cannot tell.

The method's references are the other seeds' runs of the same method at the
same event, so every method (FedEraser's stored history included) is its own
reference with no extra machinery; the cost is the N seeds. Retrain's own row
is the null: half its models against the other half (so it needs 2 x 3
seeds). ``original`` is the model that kept the client: the top.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedforget.analysis.runs import Run, load_run, seed_dirs
from fedforget.analysis.stats import t_interval
from fedforget.oracle.epsilon import estimate
from fedforget.oracle.ulira import MIN_MODELS, ulira
from fedforget.schedule import ORIGINAL, RETRAIN

__all__ = ["SUMMARY_COLUMNS", "ManyModels", "many_models"]

SUMMARY_FILE, EXAMPLES_FILE = "many_models.csv", "epsilon_examples.parquet"
#: Seeds below which nothing is estimated (retrain's null splits them in halves of MIN_MODELS).
MIN_SEEDS = 2 * MIN_MODELS

SUMMARY_COLUMNS = (
    "client", "round", "point", "arm", "n_models", "n_retrained", "n_examples",
    "eps_ceiling", "eps_mean", "eps_median", "eps_p90", "eps_share_at_ceiling", "forgetting_quality",
    "ulira_auc", "ulira_auc_lo", "ulira_auc_hi", "ulira_tpr_at_1pct_fpr", "ulira_tpr_at_0.1pct_fpr",
    "attack", "attack_auc", "attack_auc_lo", "attack_auc_hi", "signal",
)


class ManyModelsError(ValueError):
    """The directory cannot give many-model estimates (one line naming why)."""


@dataclass(frozen=True)
class ManyModels:
    """ε and U-LiRA of every arm, per withdrawn client and audited round.

    Attributes
    ----------
    summary : pd.DataFrame
        One row per (client, round, arm), :data:`SUMMARY_COLUMNS`. ``point`` is
        ``"step"`` (right after the event's unlearning step) or ``"final"``.
        ``signal`` is False where original's U-LiRA AUC interval includes 0.5
        (nothing to forget that these models can show), None where original
        was not scored there (unknown).
    examples : pd.DataFrame
        Per-example ε: client, round, arm, sample_id, eps.
    n_seeds : int
        The models each side rests on.
    """

    summary: pd.DataFrame
    examples: pd.DataFrame
    n_seeds: int

    @classmethod
    def read(cls, out_dir: str | Path) -> ManyModels:
        """The tables :meth:`write` wrote."""
        out = Path(out_dir)
        summary = pd.read_csv(out / SUMMARY_FILE)
        summary["signal"] = summary["signal"].astype(object).where(summary["signal"].notna(), None)
        n_seeds = int(summary.loc[summary.arm != RETRAIN, "n_models"].max())
        return cls(summary, pd.read_parquet(out / EXAMPLES_FILE), n_seeds)

    def write(self, out_dir: str | Path) -> list[Path]:
        """``many_models.csv`` and ``epsilon_examples.parquet`` in ``out_dir``."""
        out = Path(out_dir)
        paths = [out / SUMMARY_FILE, out / EXAMPLES_FILE]
        self.summary.to_csv(paths[0], index=False)
        self.examples.to_parquet(paths[1], index=False)
        return paths


def _load_seeds(root: Path) -> list[Run]:
    if (root / "metrics.parquet").is_file():
        raise ManyModelsError(f"{root} is one run: ε and U-LiRA need a seeds run on fixed data "
                              "(fedforget run CONFIG data.seed=0 --seeds 16)")
    return [load_run(p) for p in seed_dirs(root) if (p / "metrics.parquet").is_file()]


def _check_seeds(root: Path, runs: list[Run]) -> None:
    if len(runs) < MIN_SEEDS:
        raise ManyModelsError(f"{root}: {len(runs)} finished seed-* runs; ε and U-LiRA need at least {MIN_SEEDS}")
    data_seeds = {r.scenario.get("data", {}).get("seed") for r in runs}
    if None in data_seeds or len(data_seeds) > 1:
        raise ManyModelsError(f"{root}: the seeds did not train on the same data (data.seed is "
                              f"{'unset' if None in data_seeds else 'not the same in every seed'}), so one seed's "
                              "forget examples are not another's; re-run with data.seed fixed")
    for r in runs:
        if r.scores is None:
            raise ManyModelsError(f"{r.path}: no scores.parquet (oracle.scores = false)")
        if any("phi" not in g.columns for g in r.scores.values()):
            raise ManyModelsError(f"{r.path}/scores.parquet has no phi column: it was written by an older "
                                  "fedforget; re-run the seeds")


def _phi(runs: list[Run], arm: str, rnd: float, client: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``(models, examples)`` phi of the forget examples, and their ids; None
    where some seed did not score this arm there."""
    rows, ids = [], None
    for r in runs:
        g = r.scores.get((arm, rnd, client))
        if g is None:
            return None
        m = g[g["member"]].sort_values("sample_id", kind="stable")
        if m["sample_id"].duplicated().any():
            raise ManyModelsError(f"{r.path}: client {client}'s forget examples repeat a sample id at round {rnd:g}")
        if not np.all(np.isfinite(m["phi"].to_numpy(np.float64))):
            raise ManyModelsError(f"{r.path}: non-finite phi for {arm} at round {rnd:g} (a diverged model?)")
        if ids is None:
            ids = m["sample_id"].to_numpy()
        elif not np.array_equal(ids, m["sample_id"].to_numpy()):
            raise ManyModelsError(f"{r.path}: client {client}'s forget examples at round {rnd:g} differ from "
                                  f"{runs[0].path}'s; the seeds did not share data")
        rows.append(m["phi"].to_numpy(np.float64))
    return np.stack(rows), ids


def _attack_auc(runs: list[Run], arm: str, rnd: float, client: int) -> tuple[float, float, float]:
    est = t_interval([r.value(arm, rnd, client, "mia_auc") for r in runs])
    return est.mean, est.lo, est.hi


def _row(client: int, rnd: float, arm: str, phi_u: np.ndarray, phi_r: np.ndarray, runs: list[Run],
         n_boot: int) -> tuple[dict, np.ndarray]:
    eps = estimate(phi_u, phi_r)
    ul = ulira(phi_u, phi_r, n_boot=n_boot, seed=client)
    auc, lo, hi = _attack_auc(runs, arm, rnd, client)
    row = {
        "client": client, "round": rnd, "point": "step" if rnd != math.floor(rnd) else "final", "arm": arm,
        "n_models": phi_u.shape[0], "n_retrained": phi_r.shape[0], "n_examples": phi_u.shape[1],
        "eps_ceiling": eps.ceiling, "eps_mean": float(eps.epsilons.mean()),
        "eps_median": float(np.median(eps.epsilons)), "eps_p90": float(np.quantile(eps.epsilons, 0.9)),
        # A ceiling of 0 (too few models to show anything) is not a share worth reading.
        "eps_share_at_ceiling": float(np.mean(eps.epsilons >= eps.ceiling - 1e-12)) if eps.ceiling > 0 else math.nan,
        "forgetting_quality": eps.quality,
        "ulira_auc": ul.auc, "ulira_auc_lo": ul.auc_lo, "ulira_auc_hi": ul.auc_hi,
        "ulira_tpr_at_1pct_fpr": ul.tpr_at_1pct_fpr, "ulira_tpr_at_0.1pct_fpr": ul.tpr_at_01pct_fpr,
        "attack": str(runs[0].scenario.get("oracle", {}).get("attack", "loss")),
        "attack_auc": auc, "attack_auc_lo": lo, "attack_auc_hi": hi,
    }
    return row, eps.epsilons


def _signal(original: dict | None) -> bool | None:
    """Whether original's U-LiRA interval excludes 0.5; None where original
    was not scored or has no interval."""
    if original is None or not (np.isfinite(original["ulira_auc_lo"]) and np.isfinite(original["ulira_auc_hi"])):
        return None
    return not original["ulira_auc_lo"] <= 0.5 <= original["ulira_auc_hi"]


def _points(runs: list[Run]) -> list[tuple[int, float]]:
    """(client, round) where every seed scored retrain: after each step, and the last round."""
    keys = set.intersection(*({(c, r) for (a, r, c) in run.scores if a == RETRAIN} for run in runs))
    return sorted(keys)


def _arms(runs: list[Run], rnd: float, client: int) -> list[str]:
    present = set.intersection(*({a for (a, r, c) in run.scores if (r, c) == (rnd, client)} for run in runs))
    order = [ORIGINAL, *runs[0].scenario.get("unlearning", {}).get("methods", [])]
    present.discard(RETRAIN)  # retrain's row is the null, built apart
    return [a for a in order if a in present] + sorted(present - set(order))


def many_models(path: str | Path, *, n_boot: int = 200, runs: list[Run] | None = None) -> ManyModels:
    """ε and U-LiRA of every arm of a seeds run on fixed data.

    Parameters
    ----------
    path : str or Path
        A directory of ``seed-*`` runs (``fedforget run ... --seeds N`` with
        ``data.seed`` set), or a sweep cell of them.
    n_boot : int
        Bootstrap replicates of U-LiRA's AUC interval (examples resampled).
    runs : list of Run, optional
        The seeds already loaded from ``path`` (a report has them), so they are
        not read again.

    Raises
    ------
    ManyModelsError
        One run, fewer than 6 seeds, seeds on different data, or scores
        without ``phi``.
    """
    runs = _load_seeds(Path(path)) if runs is None else runs
    _check_seeds(Path(path), runs)
    rows, examples = [], []
    for client, rnd in _points(runs):
        retrained = _phi(runs, RETRAIN, rnd, client)
        if retrained is None:
            continue
        phi_r, ids = retrained
        # Retrain's null: its even seeds play the method, its odd seeds retrain.
        pairs = [(RETRAIN, phi_r[0::2], phi_r[1::2])]
        for arm in _arms(runs, rnd, client):
            got = _phi(runs, arm, rnd, client)
            if got is None:
                continue
            if not np.array_equal(got[1], ids):
                raise ManyModelsError(f"{path}: {arm}'s forget examples for client {client} at round {rnd:g} "
                                      "are not retrain's")
            pairs.append((arm, got[0], phi_r))
        point = []
        for arm, phi_u, phi_ref in pairs:
            row, eps = _row(client, rnd, arm, phi_u, phi_ref, runs, n_boot)
            point.append(row)
            examples.append(pd.DataFrame({"client": client, "round": rnd, "arm": arm, "sample_id": ids, "eps": eps}))
        signal = _signal(next((r for r in point if r["arm"] == ORIGINAL), None))
        rows += [{**r, "signal": signal} for r in point]
    if not rows:
        raise ManyModelsError(f"{path}: no withdrawn client was scored by retrain in every seed")
    summary = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    return ManyModels(summary, pd.concat(examples, ignore_index=True), len(runs))
