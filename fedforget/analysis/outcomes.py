"""The numbers a report shows, computed from a :class:`~fedforget.analysis.runs.Study`:
per-arm outcome values of a withdrawn client, ROC points, and the
cost–forgetting frontier's coordinates."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from fedforget.analysis.runs import GLOBAL, Run, Study
from fedforget.analysis.stats import (
    NAN,
    Estimate,
    bounds,
    estimate_of,
    event_point,
    finite,
    t_interval,
)
from fedforget.schedule import RETRAIN

TPR_FPR = {"tpr_at_1pct_fpr": 0.01, "tpr_at_0.1pct_fpr": 0.001}  # metric -> its false-positive rate
TPR_MIN_NEGATIVES = 10  # TPR at FPR f needs at least 10 / f non-members


def tpr_if_enough(run: Run, arm: str, rnd: float, client: int, metric: str) -> float:
    """TPR at FPR f, or NaN unless the oracle scored at least 10 / f non-members
    (with fewer, that FPR is a handful of samples or none)."""
    need = math.ceil(TPR_MIN_NEGATIVES / TPR_FPR[metric] - 1e-9)
    n = run.n_nonmembers(arm, rnd, client)
    return run.value(arm, rnd, client, metric) if finite(n) and n >= need else NAN


# metrics of a withdrawn client read right after the unlearning step (t - 0.5), as key "<metric>@event"
EVENT_METRICS = ("fr", "mia_auc", "client_mia_pvalue")
# metrics of a withdrawn client read at the last round, with their bootstrap bounds where a run has them
FINAL_METRICS = ("fr", "fr_fixed_fpr", "mia_auc", "forget_accuracy", "retain_accuracy", "witness_accuracy",
                 "witness_mia_auc", "witness_fr", "witness_fr_fixed_fpr", "over_unlearning", "client_mia_pvalue")
# global cost metrics of a method arm at its event round t (bytes shown as MB)
COST_METRICS = ("cost_wall_s", "cost_client_steps", "cost_rounds", "cost_bytes_up", "cost_bytes_down",
                "cost_server_storage_bytes", "speedup_steps", "speedup_bytes", "speedup_wall")
# global metrics of the retrain arm at round t: retraining's cost up to the event and to the end
RETRAIN_YARDSTICK = ("retrain_steps_to_event", "retrain_bytes_to_event", "retrain_wall_s_to_event",
                     "retrain_steps_to_end", "retrain_bytes_to_end", "retrain_wall_s_to_end")


def row_values(run: Run, arm: str, client: int, T: float, event_round: int) -> dict[str, float]:
    """One run's table values for one arm and withdrawn client (NaN where absent).

    Keys: ``<metric>@event`` at t - 0.5, ``<metric>`` at the last round (each
    with ``_lo``/``_hi``), TPRs, and the cost record at t
    (bytes in MB; ``cost_bytes_total`` = up + down)."""
    v: dict[str, float] = {}
    at = event_point(event_round)
    for m in EVENT_METRICS:
        for key, src in zip((f"{m}@event", *bounds(f"{m}@event")), (m, *bounds(m)), strict=True):
            v[key] = run.value(arm, at, client, src)
    for m in FINAL_METRICS:
        for key in (m, *bounds(m)):
            v[key] = run.value(arm, T, client, key)
    for m in TPR_FPR:
        v[m] = tpr_if_enough(run, arm, T, client, m)
    v["test_accuracy"] = run.value(arm, T, GLOBAL, "test_accuracy")
    for key in (*COST_METRICS, *RETRAIN_YARDSTICK):
        x = run.value(arm, event_round, GLOBAL, key)
        v[key] = x / 1e6 if "bytes" in key and not key.startswith("speedup") else x  # bytes shown as MB
    up, down = v["cost_bytes_up"], v["cost_bytes_down"]
    v["cost_bytes_total"] = float(np.nansum([up, down])) if finite(up) or finite(down) else NAN
    return v


def roc_points(g: pd.DataFrame) -> tuple[np.ndarray, np.ndarray] | None:
    g = g[np.isfinite(g["score"])]
    if g["member"].nunique() < 2:
        return None
    fpr, tpr, _ = roc_curve(g["member"].to_numpy(), g["score"].to_numpy())
    return fpr, tpr


def frontier_points(study: Study, client: int, event_round: int) -> pd.DataFrame:
    """Per run and method arm, the frontier's coordinates at the event of round t.

    Columns: ``run`` (index into ``study.runs``), ``arm``, ``speedup_steps`` and
    ``speedup_wall`` (the global speed-ups at round t; +inf for a method that
    cost nothing, NaN when absent) and ``auc_gap`` = |the arm's MIA AUC −
    retrain's| on the client at t − 0.5, right after the unlearning step (NaN
    when either is missing). Rows in run order, then the methods' order;
    retrain (the reference, at speed-up 1 and gap 0) is not a row.
    """
    at = event_point(event_round)
    rows = []
    for i, run in enumerate(study.runs):
        ref = run.value(RETRAIN, at, client, "mia_auc")
        for arm in study.methods:
            rows.append({
                "run": i,
                "arm": arm,
                "speedup_steps": run.value(arm, event_round, GLOBAL, "speedup_steps"),
                "speedup_wall": run.value(arm, event_round, GLOBAL, "speedup_wall"),
                "auc_gap": abs(run.value(arm, at, client, "mia_auc") - ref),
            })
    cols = ["run", "arm", "speedup_steps", "speedup_wall", "auc_gap"]
    return pd.DataFrame(rows, columns=cols).astype({"run": np.int64, "arm": str, "speedup_steps": float,
                                                     "speedup_wall": float, "auc_gap": float})


#: The speed-ups a frontier plots a method's gap against.
FRONTIER_KEYS = ("speedup_steps", "speedup_wall")


def has_speedups(study: Study, event_round: int) -> bool:
    """Does any method arm carry a speed-up at the event round?"""
    return any(not math.isnan(run.value(arm, event_round, GLOBAL, key))
               for run in study.runs for arm in study.methods for key in FRONTIER_KEYS)


def frontier_estimates(study: Study, points: pd.DataFrame, key: str) -> list[tuple[str, Estimate, Estimate]]:
    """Per method arm: (arm, speed-up estimate, gap estimate) over the runs in
    ``points``; across seeds means with t-intervals (a speed-up of +inf in
    every seed stays +inf), for one run its values. Arms without a finite gap
    or without a speed-up are left out."""
    out = []
    for arm in study.methods:
        g = points[points["arm"] == arm]
        ok = g[key].notna() & g["auc_gap"].notna()
        g = g[ok]
        if g.empty:
            continue
        nan = [NAN] * len(g)
        x = estimate_of(g[key].tolist(), nan, nan, study.across_seeds)
        y = t_interval(g["auc_gap"].tolist()) if study.across_seeds else Estimate(float(g["auc_gap"].iloc[0]))
        if x.mean == math.inf or finite(x.mean):
            out.append((arm, x, y))
    return out
