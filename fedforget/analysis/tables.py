"""Read runs, multi-seed directories and sweep studies back as tidy tables.

``fedforget.load(path)`` returns :class:`Results` whose frames carry one column
per identifier (``cell``, swept keys, ``seed``, ``arm``, ``round``, ``client``),
so a question is a filter and a group-by. Helpers answer the usual ones: a
client's forgetting curve beside retrain, each method's gap to retrain,
across-seed means with 95% intervals, and each method's paired verdicts
against retrain (:meth:`Results.verdicts`) and relapse (:meth:`Results.relapse`).
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from fedforget.analysis.runs import FR_METRICS
from fedforget.analysis.stats import NO_SIGNAL, SIGNAL_AUC, across
from fedforget.analysis.verdicts import (
    GLOBAL_METRICS,
    RELAPSE_OF,
    VERDICT_COLUMNS,
    VERDICT_METRICS,
    verdict_table,
)
from fedforget.config import flatten
from fedforget.results import read_events, read_metrics
from fedforget.schedule import ORIGINAL, RETRAIN

STUDY_FILE = "study.json"  # a sweep study directory: axes, cells, seeds

#: What every metric means (the data dictionary of exports).
METRICS: dict[str, str] = {
    "test_accuracy": "accuracy of the arm's global model on the test split",
    "test_loss": "mean cross-entropy on the test split",
    "forget_accuracy": "accuracy on the client's forget set (its train part when it withdraws)",
    "retain_accuracy": "accuracy on every other client's train part",
    "witness_accuracy": "canaries: accuracy on the planted labels; backdoor: attack success on triggered test samples",
    "mia_auc": "membership attack's ROC AUC, the client's forget samples against audit/test non-members",
    "mia_auc_lo": "lower end of the oracle-sampling 95% bootstrap interval of mia_auc (model fixed)",
    "mia_auc_hi": "upper end of that interval",
    "mia_balanced_accuracy": "balanced accuracy of the oracle's member decisions",
    "tpr_at_1pct_fpr": "TPR at 1% FPR from the exact ROC (NaN with fewer than 1,000 non-members)",
    "tpr_at_0.1pct_fpr": "TPR at 0.1% FPR from the exact ROC (NaN with fewer than 10,000 non-members)",
    "fr": "forgetting rate (A_F - B_F) / B_T of the oracle's decisions before (calibration) and now",
    "fr_lo": "lower end of the bootstrap interval of fr",
    "fr_hi": "upper end of the bootstrap interval of fr",
    "fr_transition": "share of samples flagged before that are no longer flagged (T->F flips only)",
    "fr_fixed_fpr": "fr with the threshold re-chosen so non-members' FPR equals calibration's (discounts drift)",
    "nonmember_fpr": "share of non-members the oracle flags as members",
    "b_t": "forget samples flagged as members at calibration (B_T)",
    "n_forget": "forget samples audited",
    "n_nonmembers": "non-members audited",
    "witness_mia_auc": "AUC of planted witness members against witnesses planted on audit samples",
    "witness_mia_auc_lo": "lower end of the bootstrap 95% interval of witness_mia_auc (original's at calibration "
                          "including 0.5: the witness metrics have no signal)",
    "witness_mia_auc_hi": "upper end of that interval",
    "witness_fr": "fr of the planted witness samples",
    "witness_fr_fixed_fpr": "fr_fixed_fpr of the planted witness samples",
    "client_mia_z": "client-level test: the shift of the client's mean score (-loss) over never-trained data of its "
                    "label histogram, in standard deviations of that shift's null",
    "client_mia_pvalue": "one-sided p-value of the client-level test (below 0.05: detected, the client's data is "
                         "still in the model; above: not detected, which is not proof of forgetting)",
    "client_mia_mde": "the client-level test's power: the smallest shift of the client's mean score (-loss) it "
                      "detects 80% of the time at the 5% level, at that client's size and pool",
    "over_unlearning": "1 where a method's MIA AUC falls below retrain's interval, or its forget accuracy falls below "
                       "retrain's by more than the 95% interval of the difference (a noise model on the client's "
                       "forget samples, not a fixed margin)",
    "relapse_auc": "method's MIA AUC gap to retrain at the last round minus the gap right after its step (t - 0.5); "
                   "positive: the federation re-taught the client",
    "relapse_z": "relapse_auc with the client-level client_mia_z in place of the AUC",
    "relapse_flag": "1 when the client-level test did not detect the client right after the method's step "
                    "(p >= 0.05 at t - 0.5) and detects it at a later round (p < 0.05), else 0",
    "l2_to_retrain": "L2 distance of the arm's weights to the retrain arm's",
    "changed_fraction": "share of weights the unlearning step changed",
    "mask_fraction": "Forsaken: share of maskable neurons selected",
    "cost_wall_s": "wall seconds of the unlearning step",
    "cost_client_steps": "client training samples processed by the step (epochs x samples)",
    "cost_bytes_up": "bytes clients sent during the step",
    "cost_bytes_down": "bytes sent to clients during the step",
    "cost_rounds": "training rounds the step ran over the remaining clients",
    "cost_server_storage_bytes": "client updates the server stored for the method",
    "speedup_steps": "retraining's client steps to the event divided by the step's (inf: the step cost none)",
    "speedup_bytes": "retraining's bytes to the event divided by the step's",
    "speedup_wall": "retraining's wall seconds to the event divided by the step's",
    "retrain_steps_to_event": "client steps of the retrain arm's rounds 1..t-1",
    "retrain_bytes_to_event": "bytes of the retrain arm's rounds 1..t-1",
    "retrain_wall_s_to_event": "wall seconds of the retrain arm's rounds 1..t-1",
    "retrain_steps_to_end": "client steps of every retrain round",
    "retrain_bytes_to_end": "bytes of every retrain round",
    "retrain_wall_s_to_end": "wall seconds of every retrain round",
    "failed_clients": "train replies that failed in the arm's round (runtime.client_failure_rate, recorded errors)",
    "diverged": "1 at the round label a method arm went non-finite (runtime.on_divergence = 'mark')",
}
COLUMNS: dict[str, str] = {
    "cell": "sweep cell index (study.json)", "seed": "scenario seed", "arm": "original, retrain or a method",
    "round": "round label: r after round r's training, t - 0.5 right after the unlearning step of an event at t",
    "client": "partition id (empty for global metrics)", "metric": "metric name (see metrics)", "value": "its value",
}


@dataclass
class Results:
    """Tidy tables of a run, a multi-seed directory or a sweep study."""

    root: Path
    kind: str  # "run" | "seeds" | "study"
    metrics: pd.DataFrame
    events: pd.DataFrame
    scenarios: pd.DataFrame
    scores: pd.DataFrame | None = None
    swept: list[str] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        """Columns identifying a run: cell and swept keys, then seed."""
        return (["cell", *self.swept] if self.kind == "study" else []) + ["seed"]

    def costs(self) -> pd.DataFrame:
        """One row per run, method arm and event round: the step's cost record and speed-ups."""
        keep = self.metrics.metric.str.startswith(("cost_", "speedup_"))
        df = self.metrics[keep]
        return df.pivot_table(index=[*self.ids, "arm", "round"], columns="metric", values="value").reset_index()

    def curve(self, client: int, metric: str = "mia_auc") -> pd.DataFrame:
        """A client's metric by round (rows) and arm (columns), mean across runs."""
        df = self.metrics[(self.metrics.client == client) & (self.metrics.metric == metric)]
        return df.pivot_table(index="round", columns="arm", values="value", aggfunc="mean")

    def gap_to_retrain(self, metric: str = "mia_auc", at: str = "final") -> pd.DataFrame:
        """Each arm's ``metric`` minus retrain's on the same run and client, at the
        last round (``at="final"``) or right after the unlearning step
        (``"event"``), with its across-seed mean and 95% interval."""
        df = self._per_client(metric, at)
        # Events: one row per event label (t - 0.5) of a client; the last round: one per run.
        pair = [*self.ids, "client", *(["round"] if at == "event" else [])]
        ref = df[df.arm == "retrain"].set_index(pair).value
        df = df[df.arm != "retrain"].copy()
        df["gap"] = df.value.to_numpy() - ref.reindex(pd.MultiIndex.from_frame(df[pair])).to_numpy()
        keys = [*(["cell", *self.swept] if self.kind == "study" else []), "arm", "client",
                *(["round"] if at == "event" else [])]
        return across(df, "gap", keys)

    def across_seeds(self, metric: str, at: str = "final") -> pd.DataFrame:
        """A per-client metric's across-seed mean and 95% t-interval per arm (and cell)."""
        keys = [*(["cell", *self.swept] if self.kind == "study" else []), "arm", "client"]
        return across(self._per_client(metric, at), "value", keys)

    def verdicts(self, at: str = "event") -> pd.DataFrame:
        """Each method's paired verdicts against retrain, per withdrawn client.

        Per run (seed) the difference method − retrain of every metric in
        :data:`~fedforget.analysis.verdicts.VERDICT_MARGINS` (``test_accuracy``
        from the global rows), right after the unlearning step of the client's
        event (``at="event"``: round label t − 0.5) or at the run's last round
        (``"final"``); then over the seeds the mean difference, its 95%
        t-interval and the verdict (see :mod:`fedforget.analysis.verdicts`).
        FR differences of a seed whose oracle did not see the client at
        calibration (original's AUC below ``SIGNAL_AUC``) are left out; with
        none left the verdict reads "no signal".

        Returns
        -------
        DataFrame
            Columns (``cell`` and the swept keys in a study), ``arm``,
            ``client``, ``metric``, ``at``, ``n_seeds``, ``mean``, ``lo``,
            ``hi``, ``margin``, ``verdict``, ``seeds_to_decide`` (NaN unless
            undecided; inf: never at this spread).
        """
        if at not in ("event", "final"):
            raise ValueError(f"at must be 'final' or 'event', got {at!r}")
        keys = [*self._cell_keys, "arm", "client"]
        points = self._judged_at(at)
        if points.empty:  # nothing withdrew: nothing to judge
            return pd.DataFrame(columns=[*keys, *VERDICT_COLUMNS])
        gaps = self._paired_gaps(points)
        table = _mark_no_signal(verdict_table(gaps, keys, at), gaps, [*keys, "metric"])
        order = {m: i for i, m in enumerate(VERDICT_METRICS)}
        return table.sort_values([*keys, "metric"], key=lambda c: c.map(order) if c.name == "metric" else c,
                                 kind="stable").reset_index(drop=True)

    def relapse(self) -> pd.DataFrame:
        """``relapse_auc`` and ``relapse_z`` (per run already the change of a
        method's gap to retrain from right after its step to the last round)
        over the seeds, with their verdicts: the columns of :meth:`verdicts`,
        ``at`` = ``final``."""
        m = self.metrics[self.metrics.metric.isin(list(RELAPSE_OF))]
        gaps = m.assign(client=m.client.astype("int64")).rename(columns={"value": "gap"})
        return verdict_table(gaps, [*self._cell_keys, "arm", "client"], "final")

    @property
    def _cell_keys(self) -> list[str]:
        return ["cell", *self.swept] if self.kind == "study" else []

    def withdrawals(self) -> pd.DataFrame:
        """One row per run and client with data to forget: the run's ids,
        ``client`` and ``event_round`` (its first withdraw or delete event)."""
        ev = self.events
        ev = ev[ev.event.isin(["withdraw", "delete"])] if "event" in ev else ev.iloc[:0]
        rows = [{**{k: r[k] for k in self.ids}, "client": int(c), "event_round": float(r["round"])}
                for _, r in ev.iterrows() for c in _event_clients(r)]
        df = pd.DataFrame(rows, columns=[*self.ids, "client", "event_round"])
        return df.drop_duplicates([*self.ids, "client"]).reset_index(drop=True)

    def _judged_at(self, at: str) -> pd.DataFrame:
        """Per run and withdrawn client the round label judged (``round``) and
        whether the oracle saw the client at calibration (``signal``)."""
        points = self.withdrawals()
        if points.empty:
            return points
        if at == "event":
            points["round"] = points.event_round - 0.5
        else:
            last = self.metrics.groupby(self.ids, as_index=False)["round"].max()
            points = points.merge(last, on=self.ids)
        cal = self._client_rows(ORIGINAL, "mia_auc").rename(columns={"round": "cal_round", "value": "cal_auc"})
        points = points.assign(cal_round=points.event_round - 1).merge(cal, on=[*self.ids, "client", "cal_round"],
                                                                       how="left")
        return points.assign(signal=~(points.cal_auc < SIGNAL_AUC))[[*self.ids, "client", "round", "signal"]]

    def _client_rows(self, arm: str, metric: str) -> pd.DataFrame:
        m = self.metrics
        m = m[(m.arm == arm) & (m.metric == metric) & m.client.notna()]
        return m.assign(client=m.client.astype("int64"))[[*self.ids, "client", "round", "value"]]

    def _paired_gaps(self, points: pd.DataFrame) -> pd.DataFrame:
        """Per run, method arm, withdrawn client and verdict metric: ``gap`` =
        the arm's value − retrain's at the judged round (NaN for an FR without
        signal, marked ``no_signal``)."""
        m = self.metrics[self.metrics.metric.isin(VERDICT_METRICS)]
        on = [*self.ids, "round"]
        per_client = m[m.client.notna() & ~m.metric.isin(GLOBAL_METRICS)]
        per_client = per_client.assign(client=per_client.client.astype("int64")).merge(points, on=[*on, "client"])
        glob = m[m.client.isna() & m.metric.isin(GLOBAL_METRICS)].drop(columns="client").merge(points, on=on)
        values = pd.concat([per_client, glob], ignore_index=True)
        pair = [*self.ids, "client", "metric"]
        ref = values[values.arm == RETRAIN][[*pair, "value"]].rename(columns={"value": "ref"})
        gaps = values[~values.arm.isin([ORIGINAL, RETRAIN])].merge(ref, on=pair, how="left")
        no_signal = gaps.metric.isin(FR_METRICS) & ~gaps.signal.astype(bool)
        return gaps.assign(gap=(gaps.value - gaps.ref).mask(no_signal), no_signal=no_signal)

    def _per_client(self, metric: str, at: str) -> pd.DataFrame:
        m = self.metrics[(self.metrics.metric == metric) & self.metrics.client.notna()]
        if at == "final":
            last = m.groupby(self.ids)["round"].transform("max")
            return m[m["round"] == last]
        if at == "event":
            return m[m["round"] % 1 == 0.5]
        raise ValueError(f"at must be 'final' or 'event', got {at!r}")

    def _repr_html_(self) -> str:
        arms = ", ".join(sorted(self.metrics.arm.unique()))
        head = (f"<b>fedforget {self.kind}</b> {self.root}<br>{self.scenarios.shape[0]} run(s); arms: {arms}"
                + (f"; swept: {', '.join(self.swept)}" if self.swept else ""))
        try:
            table = self.gap_to_retrain().round(3).to_html(index=False)
        except (KeyError, ValueError):
            table = ""
        return head + ("<br>Final MIA AUC gap to retrain (mean, 95% interval across seeds):" + table if table else "")

    def __repr__(self) -> str:
        # A terminal gets a summary, not whole DataFrames (the tables are attributes).
        arms = ", ".join(sorted(self.metrics.arm.unique()))
        swept = f"; swept: {', '.join(self.swept)}" if self.swept else ""
        return (f"<fedforget {self.kind} {self.root}: {self.scenarios.shape[0]} run(s), "
                f"{len(self.metrics):,} metric rows; arms: {arms}{swept}>")

    def plot(self, client: int, metric: str = "mia_auc", ax=None):
        """The client's forgetting curves (one line per arm, mean across runs).

        Returns the matplotlib Figure (``.savefig`` works); pass ``ax`` to draw
        into an Axes of your own."""
        import matplotlib.pyplot as plt

        ax = ax or plt.subplots(figsize=(7, 4))[1]
        curve = self.curve(client, metric)
        for arm in curve.columns:
            style = {"color": "black", "linestyle": "--"} if arm == "retrain" else {}
            ax.plot(curve.index, curve[arm], marker="o", markersize=3, label=arm, **style)
        ax.set_xlabel("round label")
        ax.set_ylabel(metric)
        ax.set_title(f"client {client}")
        ax.legend(fontsize="small")
        return ax.figure


def _mark_no_signal(table: pd.DataFrame, gaps: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Verdicts whose every seed lacks signal read "no signal" rather than "n/a"."""
    seen = pd.MultiIndex.from_frame(gaps.loc[~gaps.no_signal, keys])
    silent = ~pd.MultiIndex.from_frame(table[keys]).isin(seen) & (table.n_seeds == 0)
    return table.assign(verdict=table.verdict.mask(silent, NO_SIGNAL))


def _event_clients(event: pd.Series) -> list[int]:
    """The clients of one events-table row (``clients`` is stored as JSON text)."""
    clients = event.get("clients")
    if isinstance(clients, str):
        return [int(c) for c in json.loads(clients)]
    single = event.get("client")
    return [] if single is None or pd.isna(single) else [int(single)]


def _run_dirs(root: Path) -> tuple[str, list[tuple[dict, Path]]]:
    """The kind of directory and its finished runs with their identifiers."""
    if (root / STUDY_FILE).is_file():
        spec = json.loads((root / STUDY_FILE).read_text())
        return "study", [({"cell": c["cell"], **typed_values(c["values"]), "seed": int(d.name.split("-", 1)[1])}, d)
                         for c in spec["cells"] for d in sorted((root / c["dir"]).glob("seed-*"))
                         if (d / "events.jsonl").is_file()]
    if (root / "events.jsonl").is_file():
        return "run", [({"seed": _scenario(root).get("seed", 0)}, root)]
    seeds = [d for d in sorted(root.glob("seed-*")) if (d / "events.jsonl").is_file()]
    if seeds:
        return "seeds", [({"seed": int(d.name.split("-", 1)[1])}, d) for d in seeds]
    raise FileNotFoundError(f"{root}: neither a finished run, a multi-seed directory nor a sweep study")


def _scenario(run_dir: Path) -> dict:
    return tomllib.loads((run_dir / "resolved.toml").read_text())


def load(path: str | Path, scores: bool = False) -> Results:
    """Tidy tables of a run directory, a multi-seed directory or a sweep study."""
    root = Path(path)
    kind, runs = _run_dirs(root)
    if not runs:
        raise FileNotFoundError(f"{root}: no finished run yet")
    metrics, events, scenarios, score_frames = [], [], [], []
    for ids, d in runs:
        metrics.append(read_metrics(d).assign(**ids))
        events.append(pd.DataFrame([{**ids, **{k: (json.dumps(v) if isinstance(v, (list, dict)) else v)
                                               for k, v in e.items()}} for e in read_events(d)]))
        scenarios.append({**ids, "run_dir": str(d), **flatten(_scenario(d))})
        if scores and (d / "scores.parquet").is_file():
            score_frames.append(pd.read_parquet(d / "scores.parquet").assign(**ids))
    swept = list(json.loads((root / STUDY_FILE).read_text())["axes"]) if kind == "study" else []
    first = [c for c in runs[0][0]]
    order = lambda df: df[first + [c for c in df.columns if c not in first]]  # noqa: E731
    return Results(
        root, kind, order(pd.concat(metrics, ignore_index=True)), order(pd.concat(events, ignore_index=True)),
        order(pd.DataFrame(scenarios)), order(pd.concat(score_frames, ignore_index=True)) if score_frames else None,
        swept,
    )


def data_dictionary(metrics: pd.DataFrame) -> pd.DataFrame:
    """Every identifier column and every metric present, with its meaning."""
    rows = [{"name": k, "kind": "column", "meaning": v} for k, v in COLUMNS.items()]
    rows += [{"name": m, "kind": "metric", "meaning": METRICS.get(m, "(undocumented)")}
             for m in sorted(metrics.metric.unique())]
    return pd.DataFrame(rows)


def export(path: str | Path, fmt: str = "csv", out: str | Path | None = None) -> list[Path]:
    """Write the tidy tables (metrics, events, scenarios, costs, scores, the
    paired verdicts, a sweep's study table, and a data dictionary) as CSV or
    JSON (records) into ``out`` (default: ``path``)."""
    if fmt not in ("csv", "json"):
        raise ValueError(f"format must be csv or json, got {fmt!r}")
    res = load(path, scores=True)
    out = Path(out) if out is not None else Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tables = {"metrics": res.metrics, "events": res.events, "scenarios": res.scenarios, "costs": res.costs(),
              "data_dictionary": data_dictionary(res.metrics)}
    if res.scores is not None:
        tables["scores"] = res.scores
    if res.kind == "study" and (Path(path) / "study.parquet").is_file():
        tables["study"] = pd.read_parquet(Path(path) / "study.parquet")  # one row per (cell, seed, arm, client)
    tables["verdicts"] = pd.concat([res.verdicts(at="event"), res.verdicts(at="final")], ignore_index=True)
    written = []
    for name, df in tables.items():
        target = out / f"{name}.{fmt}"
        if fmt == "csv":
            df.to_csv(target, index=False)
        else:  # records; missing values null, infinite speed-ups as JSON's Infinity (pandas reads both back)
            records = df.astype(object).where(df.notna(), None).to_dict(orient="records")
            target.write_text(json.dumps(records, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
        written.append(target)
    return written


#: Per-(arm, client) metrics the study table takes at the event and at the last round.
CLIENT_METRICS = ("mia_auc", "fr", "fr_fixed_fpr", "forget_accuracy", "retain_accuracy", "client_mia_pvalue",
                  "witness_accuracy")
#: Per-arm metrics of the unlearning step (cost record, speed-ups), at the event round.
STEP_METRICS = ("cost_wall_s", "cost_client_steps", "cost_bytes_up", "cost_bytes_down", "cost_rounds",
                "speedup_steps", "speedup_bytes", "speedup_wall")


def _value(m: pd.DataFrame, arm: str, rnd: float, client, metric: str) -> float:
    sel = m[(m.arm == arm) & (m["round"] == rnd) & (m.metric == metric)]
    sel = sel[sel.client.isna()] if client is None else sel[sel.client == client]
    return float(sel.value.iloc[0]) if len(sel) else float("nan")


def typed_values(values: dict[str, str]) -> dict[str, Any]:
    """Swept values as the scenario reads them (``"0.1"`` → 0.1, ``"true"`` →
    True); a list or table stays its text, one hashable value per cell."""
    from fedforget.config import parse_value

    out = {}
    for key, raw in values.items():
        value = parse_value(str(raw))
        out[key] = value if isinstance(value, (bool, int, float, str)) else str(raw)
    return out


def study_table(out: str | Path) -> pd.DataFrame:
    """One row per (cell, seed, arm, forgetting client) of a study directory's
    finished runs: the swept values, metrics right after the unlearning step
    (``event_*``) and at the last round (``final_*``), the step's cost record
    and speed-ups."""
    out = Path(out)
    spec = json.loads((out / STUDY_FILE).read_text())
    rows = []
    for cell in spec["cells"]:
        for run_dir in sorted((out / cell["dir"]).glob("seed-*")):
            if not (run_dir / "events.jsonl").is_file():
                continue
            m = read_metrics(run_dir)
            seed = int(run_dir.name.split("-", 1)[1])
            last = float(m["round"].max())
            events = [e for e in read_events(run_dir) if e["event"] in ("withdraw", "delete")]
            for ev in events:
                t = int(ev["round"])
                for client in ev["clients"]:
                    for arm in sorted(set(m.arm)):
                        row = {"cell": cell["cell"], **typed_values(cell["values"]), "seed": seed, "arm": arm,
                               "client": client,
                               "event_round": t}
                        for k in CLIENT_METRICS:
                            row[f"event_{k}"] = _value(m, arm, t - 0.5, client, k)
                            row[f"final_{k}"] = _value(m, arm, last, client, k)
                        row["final_test_accuracy"] = _value(m, arm, last, None, "test_accuracy")
                        for k in STEP_METRICS:
                            row[k] = _value(m, arm, t, None, k)
                        rows.append(row)
    df = pd.DataFrame(rows)
    return df.dropna(axis=1, how="all") if not df.empty else df


#: Study-table columns compared with retrain (gap = method minus retrain), with their titles.
GAPS = [
    ("final_mia_auc", "MIA AUC gap to retrain (last round)"),
    ("event_mia_auc", "MIA AUC gap to retrain (after the step)"),
    ("final_fr", "FR gap to retrain (last round)"),
    ("final_forget_accuracy", "forget accuracy gap to retrain"),
    ("final_test_accuracy", "test accuracy gap to retrain"),
]


def gaps(table: pd.DataFrame) -> pd.DataFrame:
    """Each method row's metrics minus retrain's on the same cell, seed and client."""
    keys = ["cell", "seed", "client"]
    ref = table[table.arm == "retrain"].set_index(keys)
    methods = table[~table.arm.isin(["retrain", "original"])].copy()
    idx = pd.MultiIndex.from_frame(methods[keys])
    for col, _ in GAPS:
        if col in table:
            methods[f"gap_{col}"] = methods[col].to_numpy() - ref[col].reindex(idx).to_numpy()
    return methods
