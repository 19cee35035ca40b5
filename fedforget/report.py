"""The HTML report of a run directory, or of a multi-seed directory of them.

``write_report(run_dir)`` reads a finished run directory (see
:mod:`fedforget.results`) and writes ``run_dir/report.html``: one self-contained
file (figures are PNGs embedded as base64 data URIs, CSS and a tiny script are
inline; nothing is fetched from a network).

A directory whose ``seed-*/`` subdirectories are finished run directories (the
layout of :func:`fedforget.runner.run_seeds`) gets one report over all seeds:
curves and table cells are means with across-seed 95% t-intervals. A single run
shows the oracle's own bootstrap intervals (``<metric>_lo``/``<metric>_hi``)
instead, labelled "oracle-sampling interval (model fixed)": they hold the trained
model fixed and understate run-to-run spread.

Rounds are floats. Whole round ``r`` is the models after round ``r``'s training;
at every event round ``t`` the label ``t - 0.5`` is every arm audited right after
the unlearning step, before round ``t`` (original and retrain: their models after
round ``t - 1``). The oracle is calibrated on original at ``t - 1``.

Per withdrawn client the report shows FR and MIA AUC vs round for every arm
(retrain is the reference: black, thick, dashed), ROC curves right after the
unlearning step and at the last round, a signal check (did the oracle see the
client before it left? FR cells of a client it did not see read "no signal"), a
table of outcomes per arm (FR and MIA AUC at ``t - 0.5``; FR, ``fr_fixed_fpr``,
MIA AUC, accuracies at the last round), the methods' costs with speed-ups over
retraining, over-unlearning flags, and a cost–forgetting frontier (each method's
|MIA AUC − retrain's| at ``t - 0.5`` against its speed-up in client steps and
wall time). Control clients (never withdrawn) get a small table of final FR and
AUC.

Where the run has the client-level membership test (``client_mia_pvalue``), the
method table adds its p-value at ``t - 0.5`` and at the last round and the
controls table at the last round ("<0.001" below 0.001; across seeds the
median). A client whose event plants a ``backdoor`` witness gets its
``witness_accuracy`` labelled as backdoor success on triggered test samples and
a backdoor-success curve.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator
from scipy import stats
from sklearn.metrics import auc as area_under
from sklearn.metrics import roc_curve

from fedforget.schedule import ORIGINAL, RETRAIN

__all__ = ["Run", "Study", "load_run", "load_study", "render_report", "write_report"]

GLOBAL = -1  # client id standing for the global (client = NA) rows
SIGNAL_AUC = 0.65  # below this (at calibration) the oracle barely sees the client: FR has no signal
CONFIDENCE = 0.95
REQUIRED_COLUMNS = ("arm", "round", "client", "metric", "value")
FR_METRICS = ("fr", "fr_fixed_fpr", "fr_transition")  # meaningless for a client without signal
TPR_FPR = {"tpr_at_1pct_fpr": 0.01, "tpr_at_0.1pct_fpr": 0.001}  # metric -> its false-positive rate
TPR_MIN_NEGATIVES = 10  # TPR at FPR f needs at least 10 / f non-members
ACROSS_SEEDS_LABEL = "across-seed 95% interval"
ORACLE_SAMPLING_LABEL = "oracle-sampling interval (model fixed)"
NO_SIGNAL = "no signal"
METHOD_COLORS = (
    "tab:blue",
    "tab:orange",
    "tab:green",
    "tab:red",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "tab:olive",
    "tab:cyan",
)
NAN = float("nan")


# --------------------------------------------------------------------------- data


@dataclass
class Run:
    """One finished run directory.

    Attributes
    ----------
    path : Path
        The run directory.
    scenario : dict
        ``resolved.toml`` as a dict.
    events : list of dict
        ``events.jsonl``, one dict per line.
    curves : dict
        ``(arm, client, metric) -> Series`` of values indexed by (float) round;
        global rows use client ``GLOBAL`` (-1).
    scores : dict or None
        ``(arm, round, client) -> DataFrame`` of per-sample oracle scores (round
        a float), or None when the run has no ``scores.parquet``.
    """

    path: Path
    scenario: dict[str, Any]
    events: list[dict[str, Any]]
    curves: dict[tuple[str, int, str], pd.Series]
    scores: dict[tuple[str, float, int], pd.DataFrame] | None

    @property
    def seed(self) -> Any:
        return self.scenario.get("seed")

    def curve(self, arm: str, client: int, metric: str) -> pd.Series:
        """Values of one metric by round (empty when absent)."""
        return self.curves.get((arm, client, metric), _EMPTY)

    def value(self, arm: str, rnd: float, client: int, metric: str) -> float:
        """One value, NaN when absent."""
        return float(self.curve(arm, client, metric).get(float(rnd), NAN))

    def n_nonmembers(self, arm: str, rnd: float, client: int) -> float:
        """Non-members the oracle scored there: the ``n_nonmembers`` metric, else
        counted in ``scores.parquet``; NaN when unknown."""
        n = self.value(arm, rnd, client, "n_nonmembers")
        if not _finite(n) and self.scores is not None:
            g = self.scores.get((arm, float(rnd), client))
            if g is not None:
                n = float((~g["member"]).sum())
        return n

    def has_signal(self, client: int, calibration_round: float) -> bool | None:
        """Did the oracle see the client at calibration (original's MIA AUC at
        least ``SIGNAL_AUC``)? None when that AUC is missing."""
        auc = self.value(ORIGINAL, calibration_round, client, "mia_auc")
        return None if not _finite(auc) else auc >= SIGNAL_AUC


_EMPTY = pd.Series(dtype=float)


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        partial = path.parent / "events.jsonl.partial"
        hint = " (events.jsonl.partial is there: the run did not finish or failed)" if partial.exists() else ""
        raise FileNotFoundError(f"{path.parent}: not a finished run directory, no {what}{hint}")


def _read_events(path: Path) -> list[dict[str, Any]]:
    events = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}, line {i}: not JSON ({err})") from err
    return events


def _tidy_metrics(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Typed columns, global rows on client GLOBAL, one value per key.

    Several events in one round each write a cost record, so duplicated cost
    rows are summed; any other duplicate keeps its last value.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {', '.join(missing)}")
    df = pd.DataFrame(
        {
            "arm": df["arm"].astype(str),
            "round": pd.to_numeric(df["round"]).astype(np.float64),  # t - 0.5: right after unlearning
            "client": pd.to_numeric(df["client"]).fillna(GLOBAL).astype(np.int64),
            "metric": df["metric"].astype(str),
            "value": pd.to_numeric(df["value"], errors="coerce").astype(float),
        }
    )
    keys = ["arm", "round", "client", "metric"]
    is_cost = df["metric"].str.startswith("cost_")
    summed = df[is_cost].groupby(keys, as_index=False, sort=False)["value"].sum(min_count=1)
    last = df[~is_cost].groupby(keys, as_index=False, sort=False)["value"].last()
    return pd.concat([summed, last], ignore_index=True)


def _curves_of(df: pd.DataFrame) -> dict[tuple[str, int, str], pd.Series]:
    return {
        (arm, int(client), metric): g.set_index("round")["value"].sort_index()
        for (arm, client, metric), g in df.groupby(["arm", "client", "metric"], sort=False)
    }


def _scores_of(path: Path) -> dict[tuple[str, float, int], pd.DataFrame] | None:
    if not path.is_file():
        return None
    df = pd.read_parquet(path)
    missing = [c for c in ("arm", "round", "client", "member", "score") if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {', '.join(missing)}")
    df = df.assign(
        round=pd.to_numeric(df["round"]).astype(np.float64),
        client=pd.to_numeric(df["client"]).astype(np.int64),
        member=df["member"].astype(bool),
        score=pd.to_numeric(df["score"], errors="coerce").astype(float),
    )
    return {(str(a), float(r), int(c)): g for (a, r, c), g in df.groupby(["arm", "round", "client"], sort=False)}


def load_run(run_dir: str | Path) -> Run:
    """Read one finished run directory.

    Raises
    ------
    FileNotFoundError
        The directory, or one of ``resolved.toml``, ``events.jsonl`` and
        ``metrics.parquet``, is missing (the run did not finish).
    ValueError
        A file is there but malformed.
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such run directory")
    for name in ("metrics.parquet", "events.jsonl", "resolved.toml"):
        _require_file(path / name, name)
    try:
        scenario = tomllib.loads((path / "resolved.toml").read_text())
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path / 'resolved.toml'}: not valid TOML ({err})") from err
    metrics = _tidy_metrics(pd.read_parquet(path / "metrics.parquet"), path / "metrics.parquet")
    return Run(
        path=path,
        scenario=scenario,
        events=_read_events(path / "events.jsonl"),
        curves=_curves_of(metrics),
        scores=_scores_of(path / "scores.parquet"),
    )


def _seed_dirs(root: Path) -> list[Path]:
    """``seed-*`` subdirectories, in seed order when the suffix is a number."""

    def key(p: Path) -> tuple[int, str]:
        m = re.fullmatch(r"seed-(\d+)", p.name)
        return (int(m.group(1)) if m else math.inf, p.name)  # type: ignore[return-value]

    return sorted((p for p in root.glob("seed-*") if p.is_dir()), key=key)


# ------------------------------------------------------------------ estimates


@dataclass(frozen=True)
class Estimate:
    """A value with an optional interval.

    ``across_seeds``: the interval is a t-interval of the mean over ``n``
    seeds (shown as mean ± half-width); otherwise it is the oracle's bootstrap
    interval of one run, model fixed (shown as value [lo, hi]). A mean of +inf
    (a speed-up over a method that costs nothing) shows as "∞".
    """

    mean: float
    lo: float = NAN
    hi: float = NAN
    n: int = 1
    across_seeds: bool = False
    no_signal: bool = False  # an FR of a client the oracle did not see: not a forgetting rate
    note: str = ""  # appended to the text, e.g. "2 of 3 seeds"

    def text(self, digits: int = 3, interval: bool = True) -> str:
        if self.no_signal:
            return NO_SIGNAL
        if self.mean == math.inf:
            return "∞" + self._note()
        if not _finite(self.mean):
            return "n/a"
        m = _num(self.mean, digits)
        if not interval or not (_finite(self.lo) and _finite(self.hi)):
            return m + self._note()
        if self.across_seeds:
            return f"{m} ± {_num((self.hi - self.lo) / 2, digits)}" + self._note()
        return f"{m} [{_num(self.lo, digits)}, {_num(self.hi, digits)}]" + self._note()

    def _note(self) -> str:
        return f" ({self.note})" if self.note else ""


def _finite(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _num(x: float, digits: int) -> str:
    return f"{x:,.{digits}f}" if digits == 0 else f"{x:.{digits}f}"


def _bounds(metric: str) -> tuple[str, str]:
    """The bootstrap bounds a single run may carry for a metric."""
    return f"{metric}_lo", f"{metric}_hi"


def _round_text(r: float) -> str:
    """4.0 -> "4", 3.5 -> "3.5"."""
    r = float(r)
    return str(int(r)) if r.is_integer() else f"{r:g}"


def _event_point(t: float) -> float:
    """The round label right after the unlearning step of the event at round t."""
    return float(t) - 0.5


def t_interval(values: Sequence[float]) -> Estimate:
    """Mean and 95% t-interval of the finite values (no interval for n < 2)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return Estimate(NAN, n=0, across_seeds=True)
    mean = float(x.mean())
    if x.size < 2:
        return Estimate(mean, n=1, across_seeds=True)
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return Estimate(mean, mean - half, mean + half, int(x.size), True)


def _estimate_of(values: Sequence[float], lo: Sequence[float], hi: Sequence[float], across_seeds: bool,
                 usable: Sequence[bool] | None = None) -> Estimate:
    """One cell from per-run values: across seeds a t-interval of the usable runs'
    values, for one run its value with its bootstrap bounds.

    ``usable`` False marks a run whose value has no signal (an FR of a client
    the oracle did not see): left out; none usable gives "no signal". A value of
    +inf (a speed-up over a method that costs nothing) in every seed gives "∞";
    in some seeds only, the interval of the finite ones notes how many were ∞.
    """
    keep = [i for i in range(len(values)) if usable is None or usable[i]]
    if not keep:
        return Estimate(NAN, no_signal=True, across_seeds=across_seeds)
    dropped = len(values) - len(keep)
    if not across_seeds:
        i = keep[0]
        return Estimate(values[i], lo[i], hi[i])
    x = np.asarray([values[i] for i in keep], dtype=float)
    n_inf = int(np.sum(x == math.inf))
    notes = []
    if dropped:
        notes.append(f"{len(keep)} of {len(values)} seeds; {dropped} {NO_SIGNAL}")
    if n_inf and n_inf == int(np.sum(~np.isnan(x))):
        return Estimate(math.inf, n=n_inf, across_seeds=True, note="; ".join(notes))
    if n_inf:
        notes.append(f"∞ in {n_inf} of {x.size} seeds")
    est = t_interval(x)
    return Estimate(est.mean, est.lo, est.hi, est.n, True, note="; ".join(notes))


def _band_across(curves: list[pd.Series]) -> pd.DataFrame:
    """Per-round mean and t-interval across seeds' curves."""
    frame = pd.concat(curves, axis=1, ignore_index=True)
    n = frame.notna().sum(axis=1)
    mean = frame.mean(axis=1)
    tq = pd.Series(stats.t.ppf(0.5 + CONFIDENCE / 2, np.maximum(n - 1, 1)), index=frame.index).where(n >= 2)
    half = tq * frame.std(axis=1, ddof=1) / np.sqrt(n)
    return pd.DataFrame({"mean": mean, "lo": mean - half, "hi": mean + half})


# ---------------------------------------------------------------------- study


@dataclass
class Study:
    """The runs one report covers: one run, or the seeds of a multi-seed directory."""

    root: Path
    runs: list[Run]
    multi_seed: bool = False
    skipped: list[Path] = field(default_factory=list)

    @property
    def across_seeds(self) -> bool:
        return len(self.runs) > 1

    @property
    def scenario(self) -> dict[str, Any]:
        return self.runs[0].scenario

    @property
    def interval_label(self) -> str:
        """What the intervals shown are: across seeds, or the oracle's bootstrap of one run."""
        return ACROSS_SEEDS_LABEL if self.across_seeds else ORACLE_SAMPLING_LABEL

    @property
    def arms(self) -> list[str]:
        """The arms in the metrics: original, retrain, the methods in the
        scenario's order, then any other arm."""
        present = {a for r in self.runs for (a, _, _) in r.curves}
        order = [ORIGINAL, RETRAIN, *self.scenario.get("unlearning", {}).get("methods", [])]
        return [a for a in order if a in present] + sorted(present - set(order))

    @property
    def methods(self) -> list[str]:
        return [a for a in self.arms if a not in (ORIGINAL, RETRAIN)]

    def _client_events(self) -> dict[int, dict]:
        """Client with data to forget -> its first withdraw/delete event log line."""
        out: dict[int, dict] = {}
        for run in self.runs:
            for ev in run.events:
                if ev.get("event") in ("withdraw", "delete"):
                    for c in ev.get("clients") or [ev.get("client")]:
                        if c is not None:
                            out.setdefault(int(c), ev)
        return out

    @property
    def withdrawn(self) -> dict[int, int]:
        """Client with data to forget -> its event round, from the withdraw and
        delete events (a deleting client is audited on its deleted samples)."""
        return {c: int(ev["round"]) for c, ev in sorted(self._client_events().items())}

    @property
    def event_kind(self) -> dict[int, str]:
        """Client -> the kind of its event (``withdraw``, ``delete_fraction``, ...)."""
        return {c: str(ev.get("kind", "withdraw")) for c, ev in self._client_events().items()}

    def witness(self, client: int) -> str | None:
        """The witness planted for a client's event (``backdoor``, ``canary``),
        from the resolved scenario's events, else from its event log line."""
        for run in self.runs:
            for ev in run.scenario.get("events") or []:
                ids = ev.get("clients") or ([ev["client"]] if ev.get("client") is not None else [])
                if client in [int(c) for c in ids] and ev.get("witness"):
                    return str(ev["witness"])
        w = self._client_events().get(client, {}).get("witness")
        return str(w) if w else None

    @property
    def controls(self) -> list[int]:
        """Audited clients that never withdraw."""
        audited = {c for r in self.runs for (_, c, m) in r.curves if m == "mia_auc" and c != GLOBAL}
        return sorted(audited - set(self.withdrawn))

    @property
    def last_round(self) -> float:
        rounds = [float(s.index.max()) for r in self.runs for s in r.curves.values() if len(s)]
        return max(rounds, default=0.0)

    def calibration_round(self, client: int) -> float:
        """Where the oracle auditing a client was calibrated: original's model
        after round t - 1 (t: the client's event; controls: the first event)."""
        t = self.withdrawn.get(client, min(self.withdrawn.values(), default=1))
        return float(t - 1)

    def signal(self, client: int) -> list[bool | None]:
        """Per run: did the oracle see the client at calibration? (None: unknown)."""
        cal = self.calibration_round(client)
        return [r.has_signal(client, cal) for r in self.runs]

    def usable(self, client: int, metric: str) -> list[bool] | None:
        """Per run, whether a value of the metric is meaningful: FR metrics of a
        client without signal are not (None: every run's value is)."""
        if metric not in FR_METRICS or client == GLOBAL:
            return None
        return [s is not False for s in self.signal(client)]

    def estimate(self, fn: Callable[[Run], float], lo: Callable[[Run], float] | None = None,
                 hi: Callable[[Run], float] | None = None) -> Estimate:
        """``fn`` per run; across seeds a t-interval, for one run the given bounds."""
        if self.across_seeds:
            return t_interval([fn(r) for r in self.runs])
        run = self.runs[0]
        return Estimate(fn(run), lo(run) if lo else NAN, hi(run) if hi else NAN)

    def value(self, arm: str, rnd: float, client: int, metric: str) -> Estimate:
        """One metric at one round, with its interval ("no signal" for an FR of
        a client the oracle did not see)."""
        lo, hi = _bounds(metric)
        return _estimate_of(
            [r.value(arm, rnd, client, metric) for r in self.runs],
            [r.value(arm, rnd, client, lo) for r in self.runs],
            [r.value(arm, rnd, client, hi) for r in self.runs],
            self.across_seeds,
            self.usable(client, metric),
        )

    def band(self, arm: str, client: int, metric: str) -> pd.DataFrame:
        """Curve of one metric: columns mean, lo, hi indexed by (float) round.
        Runs whose values have no signal are left out."""
        usable = self.usable(client, metric) or [True] * len(self.runs)
        runs = [r for r, ok in zip(self.runs, usable, strict=True) if ok]
        empty = pd.DataFrame(columns=["mean", "lo", "hi"], dtype=float)
        if self.across_seeds:
            curves = [c for r in runs if len(c := r.curve(arm, client, metric))]
            return _band_across(curves) if curves else empty
        if not runs:
            return empty
        run = runs[0]
        s = run.curve(arm, client, metric)
        lo, hi = _bounds(metric)
        return pd.DataFrame({"mean": s, "lo": run.curve(arm, client, lo).reindex(s.index),
                             "hi": run.curve(arm, client, hi).reindex(s.index)})


def load_study(run_dir: str | Path) -> Study:
    """A single run directory, or a directory of ``seed-*`` run directories.

    Raises
    ------
    FileNotFoundError
        Neither a finished run nor a directory with a finished ``seed-*`` run.
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such run directory")
    if (root / "metrics.parquet").is_file():
        return Study(root, [load_run(root)])
    seeds = _seed_dirs(root)
    done = [p for p in seeds if (p / "metrics.parquet").is_file()]
    if not seeds:
        load_run(root)  # raises, naming the missing file
    if not done:
        raise FileNotFoundError(
            f"{root}: not a finished run directory (none of its {len(seeds)} seed-* directories has metrics.parquet)"
        )
    return Study(root, [load_run(p) for p in done], multi_seed=True, skipped=[p for p in seeds if p not in done])


# -------------------------------------------------------------------- figures


def _arm_styles(arms: list[str]) -> dict[str, dict[str, Any]]:
    """Consistent styles across figures; retrain is the reference (black, thick, dashed)."""
    styles: dict[str, dict[str, Any]] = {}
    colors = iter(METHOD_COLORS * 4)
    for arm in arms:
        if arm == RETRAIN:
            styles[arm] = {"color": "black", "lw": 2.8, "ls": "--", "zorder": 6}
        elif arm == ORIGINAL:
            styles[arm] = {"color": "tab:gray", "lw": 2.0, "ls": "-", "zorder": 4}
        else:
            styles[arm] = {"color": next(colors), "lw": 1.6, "ls": "-", "zorder": 5, "marker": "o", "ms": 3}
    return styles


def _png_uri(fig: Figure) -> str:
    """The figure as a base64 PNG data URI (Agg canvas, no global pyplot state)."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    # No Software tag: keeps matplotlib's URL out of the file.
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _legend(ax: Axes) -> None:
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)


def _mark_events(ax: Axes, rounds: Sequence[int]) -> None:
    """A dotted line at t - 0.5 for each event round t: the withdrawal and unlearning step."""
    for i, r in enumerate(sorted(set(rounds))):
        ax.axvline(_event_point(r), color="firebrick", lw=1.0, ls=":",
                   label="withdrawal + unlearning (t − 0.5)" if i == 0 else None, zorder=1)


def _curve_figure(study: Study, client: int, metric: str, title: str, ylabel: str,
                  event_rounds: Sequence[int], hline: tuple[float, str] | None = None) -> str | None:
    """One metric vs (float) round for every arm with interval bands; None
    without data. Every point is drawn, the t - 0.5 ones included."""
    styles = _arm_styles(study.arms)
    fig = Figure(figsize=(7.6, 3.4))
    ax = fig.add_subplot()
    drawn = False
    for arm in study.arms:
        band = study.band(arm, client, metric).dropna(subset=["mean"])
        if band.empty:
            continue
        drawn = True
        st = styles[arm]
        ax.plot(band.index.to_numpy(dtype=float), band["mean"].to_numpy(dtype=float), label=arm, **st)
        ok = band["lo"].notna() & band["hi"].notna()
        if ok.any():
            ax.fill_between(band.index[ok].to_numpy(dtype=float), band["lo"][ok].to_numpy(dtype=float),
                            band["hi"][ok].to_numpy(dtype=float), color=st["color"], alpha=0.13, lw=0)
    if not drawn:
        return None
    if hline is not None:
        ax.axhline(hline[0], color="0.45", lw=0.9, ls="-.", label=hline[1], zorder=1)
    _mark_events(ax, event_rounds)
    ax.set(title=title, xlabel="round", ylabel=ylabel)
    # Whole rounds get the ticks; the t - 0.5 points sit between them, on the event line.
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    _legend(ax)
    return _png_uri(fig)


def _roc_points(g: pd.DataFrame) -> tuple[np.ndarray, np.ndarray] | None:
    g = g[np.isfinite(g["score"])]
    if g["member"].nunique() < 2:
        return None
    fpr, tpr, _ = roc_curve(g["member"].to_numpy(), g["score"].to_numpy())
    return fpr, tpr


def _roc_panel(ax: Axes, study: Study, client: int, rnd: float, styles: dict[str, dict[str, Any]]) -> bool:
    """ROC curves of every arm at one round (mean over seeds by vertical
    averaging on a log FPR grid); False when no arm has scores there."""
    per_arm: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    n_neg = 1
    for arm in study.arms:
        for run in study.runs:
            g = (run.scores or {}).get((arm, float(rnd), client))
            pts = None if g is None else _roc_points(g)
            if pts is not None:
                per_arm.setdefault(arm, []).append(pts)
                n_neg = max(n_neg, int((~g["member"]).sum()))
    if not per_arm:
        return False
    floor = min(1e-2, 0.5 / n_neg)  # where FPR = 0 sits on the log axis
    grid = np.unique(np.r_[np.logspace(np.log10(floor), 0, 300), 1.0])
    for arm, curves in per_arm.items():
        aucs = [area_under(f, t) for f, t in curves]
        if len(curves) == 1:
            fpr, tpr = np.maximum(curves[0][0], floor), curves[0][1]
        else:
            fpr, tpr = grid, np.mean([np.interp(grid, f, t) for f, t in curves], axis=0)
        st = {k: v for k, v in styles[arm].items() if k not in ("marker", "ms")}
        ax.plot(fpr, tpr, label=f"{arm} (AUC {np.mean(aucs):.3f})", **st)
    ax.plot(grid, grid, color="0.55", lw=0.9, ls="-.", label="chance", zorder=1)
    ax.set_xscale("log")
    ax.set(xlim=(floor, 1.0), ylim=(0.0, 1.01), xlabel="false positive rate (log)", ylabel="true positive rate")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper left", fontsize=7, frameon=False)
    return True


def _roc_figure(study: Study, client: int, rounds: list[tuple[float, str]]) -> tuple[str | None, list[str]]:
    """ROC panels for (round, label) pairs; notes for rounds without scores."""
    styles = _arm_styles(study.arms)
    fig = Figure(figsize=(5.2 * len(rounds), 4.0))
    notes = []
    drawn = 0
    for i, (rnd, label) in enumerate(rounds):
        ax = fig.add_subplot(1, len(rounds), i + 1)
        if _roc_panel(ax, study, client, rnd, styles):
            drawn += 1
            ax.set_title(f"client {client}, {label} (round {_round_text(rnd)})", fontsize=10)
        else:
            notes.append(f"no scores for client {client} at round {_round_text(rnd)} ({label})")
            ax.set_axis_off()
    return (_png_uri(fig) if drawn else None), notes


def _accuracy_figure(study: Study) -> str | None:
    return _curve_figure(
        study, GLOBAL, "test_accuracy", "test accuracy per arm", "test accuracy", list(study.withdrawn.values())
    )


FRONTIER_AXES = (("speedup_steps", "speed-up over retraining, client steps (×, log)"),
                 ("speedup_wall", "speed-up over retraining, wall time (×, log)"))
FRONTIER_CAPTION = ("Cost–forgetting frontier: gap to retrain's MIA AUC right after the unlearning step against "
                    "speed-up over retraining to the event (client steps, wall time). Lower and further right is "
                    "better.")


def _frontier_points(study: Study, client: int, event_round: int) -> pd.DataFrame:
    """Per run and method arm, the frontier's coordinates at the event of round t.

    Columns: ``run`` (index into ``study.runs``), ``arm``, ``speedup_steps`` and
    ``speedup_wall`` (the global speed-ups at round t; +inf for a method that
    cost nothing, NaN when absent) and ``auc_gap`` = |the arm's MIA AUC −
    retrain's| on the client at t − 0.5, right after the unlearning step (NaN
    when either is missing). Rows in run order, then the methods' order;
    retrain (the reference, at speed-up 1 and gap 0) is not a row.
    """
    at = _event_point(event_round)
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


def _has_speedups(study: Study, event_round: int) -> bool:
    """Does any method arm carry a speed-up at the event round?"""
    return any(not math.isnan(run.value(arm, event_round, GLOBAL, key))
               for run in study.runs for arm in study.methods for key, _ in FRONTIER_AXES)


def _frontier_estimates(study: Study, points: pd.DataFrame, key: str) -> list[tuple[str, Estimate, Estimate]]:
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
        x = _estimate_of(g[key].tolist(), nan, nan, study.across_seeds)
        y = t_interval(g["auc_gap"].tolist()) if study.across_seeds else Estimate(float(g["auc_gap"].iloc[0]))
        if x.mean == math.inf or _finite(x.mean):
            out.append((arm, x, y))
    return out


def _speedup_tick(v: float, _pos: Any = None) -> str:
    """Log-axis tick labels as plain numbers; minor ticks only at 2× and 5× a power of ten."""
    if v <= 0:
        return ""
    lead = round(v / 10 ** math.floor(math.log10(v) + 1e-9), 6)
    return f"{v:g}" if lead in (1.0, 2.0, 5.0) else ""


def _frontier_panel(ax: Axes, study: Study, points: pd.DataFrame, key: str, xlabel: str,
                    styles: dict[str, dict[str, Any]]) -> bool:
    """One panel: each method's gap to retrain vs its speed-up; False when no
    method has both values. An infinite speed-up sits at 2× the largest finite
    value (speed-ups, their upper bounds and 1), marked "∞"."""
    est = _frontier_estimates(study, points, key)
    if not est:
        ax.set_axis_off()
        ax.text(0.5, 0.5, f"no {key} values", ha="center", va="center", transform=ax.transAxes, color="0.4")
        return False
    finite = [1.0] + [v for _, x, _ in est for v in (x.mean, x.hi) if _finite(v) and v > 0]
    inf_x = 2.0 * max(finite)
    left = min([1.0] + [x.mean for _, x, _ in est if _finite(x.mean) and x.mean > 0]
               + [x.lo for _, x, _ in est if _finite(x.lo) and x.lo > 0]) / 1.8
    ax.axvline(1.0, color="0.35", lw=1.0, ls="--", label="retraining's cost (1×)", zorder=1)
    if any(x.mean == math.inf for _, x, _ in est):
        ax.axvline(inf_x, color="0.6", lw=0.8, ls=":", zorder=1)
        ax.annotate("∞", (inf_x, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -3),
                    textcoords="offset points", ha="left", va="top", fontsize=12, color="0.3")
    ax.plot([1.0], [0.0], marker="*", ms=14, color="black", ls="none", zorder=7, label=f"{RETRAIN} (reference)")
    for arm, x, y in est:
        inf = x.mean == math.inf
        xm = inf_x if inf else x.mean
        xerr = yerr = None
        if not inf and _finite(x.lo) and _finite(x.hi):
            xerr = [[xm - max(x.lo, left)], [x.hi - xm]]
        if _finite(y.lo) and _finite(y.hi):
            yerr = [[y.mean - y.lo], [y.hi - y.mean]]
        ax.errorbar([xm], [y.mean], xerr=xerr, yerr=yerr, fmt=">" if inf else "o", ms=7,
                    color=styles[arm]["color"], ecolor=styles[arm]["color"], elinewidth=1.2, capsize=3, zorder=5)
        label = arm + (" (∞)" if inf else "") + (f" ({x.note})" if x.note else "")
        # labels of points in the right third of the (log) axis go to their left, inside the panel
        right = math.log(xm / left) > 0.6 * math.log(inf_x * 1.8 / left)
        ax.annotate(label, (xm, y.mean), xytext=(-6, 5) if right else (6, 5), textcoords="offset points",
                    ha="right" if right else "left", fontsize=8, color=styles[arm]["color"])
    ax.set_xscale("log")
    ax.set_xlim(left, inf_x * 1.8)
    ax.xaxis.set_major_formatter(FuncFormatter(_speedup_tick))
    ax.xaxis.set_minor_formatter(FuncFormatter(_speedup_tick))
    top = max([0.01] + [v for _, _, y in est for v in (y.mean, y.hi) if _finite(v)])
    ax.set_ylim(-0.06 * top, 1.18 * top)  # room for the labels above the highest point
    ax.set(xlabel=xlabel, ylabel="|MIA AUC − retrain's| at t − 0.5")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper left", fontsize=7, frameon=False)
    return True


def _frontier_figure(study: Study, client: int, event_round: int, runs: Sequence[int] | None = None) -> str | None:
    """The cost–forgetting frontier of one withdrawn client (two panels: speed-up
    in client steps, in wall time); None when no method has a point. ``runs``:
    the indices of the runs to use (default all)."""
    points = _frontier_points(study, client, event_round)
    if runs is not None:
        points = points[points["run"].isin(list(runs))]
    styles = _arm_styles(study.arms)
    fig = Figure(figsize=(11.0, 3.8))
    drawn = 0
    for i, (key, xlabel) in enumerate(FRONTIER_AXES):
        ax = fig.add_subplot(1, len(FRONTIER_AXES), i + 1)
        if _frontier_panel(ax, study, points, key, xlabel, styles):
            drawn += 1
            ax.set_title(f"client {client}, event at round {event_round}: "
                         + ("client steps" if key == "speedup_steps" else "wall time"), fontsize=10)
    return _png_uri(fig) if drawn else None


# ----------------------------------------------------------------------- html

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:1400px;
 padding:0 1rem;color:#1d1d1f;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.3rem}h2{font-size:1.25rem;margin-top:2.2rem;border-bottom:1px solid #ddd}
h3{font-size:1.05rem;margin-top:1.4rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.84rem}
th,td{border:1px solid #d6d6d6;padding:.25rem .5rem;text-align:right;white-space:nowrap}
th{background:#f3f3f5;text-align:center;white-space:normal;min-width:3.5rem}
.scroll{overflow-x:auto;max-width:100%}td:first-child,th:first-child{text-align:left}
table.meta td,table.meta th{text-align:left;white-space:normal}
tr.ref td{background:#fafafa;font-style:italic}
figure{margin:.8rem 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.82rem;color:#555}
.note{background:#f6f8fa;border-left:4px solid #8aa;padding:.4rem .7rem;margin:.6rem 0}
.warn{background:#fff6e5;border-left:4px solid #e0a000;padding:.4rem .7rem;margin:.6rem 0}
.ok{background:#eef8ee;border-left:4px solid #4a4;padding:.4rem .7rem;margin:.6rem 0}
.flag{color:#b00020;font-weight:600;margin:.2rem 0}
.small{font-size:.82rem;color:#555}
"""

# Counts the figures the browser could decode (a headless test reads these).
SCRIPT = """
window.addEventListener("load", function () {
  var imgs = document.getElementsByTagName("img"), ok = 0;
  for (var i = 0; i < imgs.length; i++) { if (imgs[i].naturalWidth > 0) { ok++; } }
  document.body.dataset.figuresRendered = String(ok);
  document.body.dataset.figuresTotal = String(imgs.length);
});
"""

esc = html.escape


def _figure(uri: str, alt: str, caption: str) -> str:
    return f'<figure><img src="{uri}" alt="{esc(alt)}"><figcaption>{esc(caption)}</figcaption></figure>'


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "",
           titles: Sequence[str] | None = None, row_classes: Sequence[str] | None = None) -> str:
    """An HTML table; cells are plain text (escaped here)."""
    ths = "".join(
        f'<th title="{esc(titles[i])}">{esc(h)}</th>' if titles and titles[i] else f"<th>{esc(h)}</th>"
        for i, h in enumerate(headers)
    )
    body = []
    for i, row in enumerate(rows):
        rc = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        body.append(f"<tr{rc}>" + "".join(f"<td>{esc(str(c))}</td>" for c in row) + "</tr>")
    c = f' class="{cls}"' if cls else ""
    # Wide tables scroll on their own instead of widening the page.
    return f'<div class="scroll"><table{c}><thead><tr>{ths}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _note(text: str, kind: str = "note") -> str:
    return f'<div class="{kind}">{esc(text)}</div>'


def _rounds_text(rounds: Sequence[float]) -> str:
    """Compress rounds into ranges: [3, 3.5, 4, 5, 8] -> "3, 3.5, 4–5, 8" (a
    t - 0.5 label stands on its own)."""
    rs = sorted(set(float(r) for r in rounds))
    parts: list[str] = []
    i = 0
    while i < len(rs):
        j = i
        while rs[i].is_integer() and j + 1 < len(rs) and rs[j + 1] == rs[j] + 1:
            j += 1
        parts.append(_round_text(rs[i]) if i == j else f"{_round_text(rs[i])}–{_round_text(rs[j])}")
        i = j + 1
    return ", ".join(parts)


def _events_text(scenario: dict[str, Any], study: Study) -> str:
    evs = scenario.get("events") or []
    if not evs:
        if not study.withdrawn:
            return "none"
        return "; ".join(f"round {r}: withdraw client {c}" for c, r in study.withdrawn.items())
    out = []
    for ev in evs:
        ids = ev.get("clients") or ([ev["client"]] if ev.get("client") is not None else [])
        who = "client" + ("s " if len(ids) > 1 else " ") + ", ".join(str(c) for c in ids)
        extra = f" (witness: {ev['witness']})" if ev.get("witness") else ""
        out.append(f"round {ev.get('round')}: {ev.get('kind', 'withdraw')} {who}{extra}")
    return "; ".join(out)


def _interval_text(study: Study) -> str:
    """What the intervals in the figures and tables are."""
    if study.across_seeds:
        return (f"Values are means over {len(study.runs)} seeds. Intervals: {ACROSS_SEEDS_LABEL}s (95% t-interval "
                "of the mean over the seeds; shaded bands in the figures, mean ± half-width in the tables).")
    return (f"Intervals: {ORACLE_SAMPLING_LABEL}, the oracle's 95% bootstrap over its audit samples (shaded "
            "bands in the figures, [lo, hi] in the tables). They hold the trained model fixed, so they "
            "understate the run-to-run spread (another seed trains another model); run with --seeds N for "
            "across-seed intervals.")


def _labelled(study: Study, est: Estimate, digits: int = 3) -> str:
    """An estimate's text, naming its interval when it has one."""
    text = est.text(digits)
    return text + (f" ({study.interval_label})" if _finite(est.lo) and _finite(est.hi) else "")


def _header(study: Study) -> str:
    sc = study.scenario
    seeds = [r.seed for r in study.runs]
    if study.multi_seed:
        seed_text = f"{len(seeds)} seeds ({', '.join(str(s) for s in seeds)})"
    else:
        seed_text = f"seed {seeds[0]}"
    data = sc.get("data", {})
    unl = sc.get("unlearning", {})
    rows = [
        ("scenario", str(sc.get("name", "?"))),
        ("seeds" if study.multi_seed else "seed", seed_text),
        ("rounds", str(sc.get("train", {}).get("rounds", _round_text(study.last_round)))),
        ("events", _events_text(sc, study)),
        ("methods", ", ".join(unl.get("methods", [])) or "none"),
        ("recovery rounds", str(unl.get("recovery_rounds", "n/a"))),
        ("membership attack", str(sc.get("oracle", {}).get("attack", "n/a"))),
        ("data", f"{data.get('dataset', '?')}, {data.get('num_clients', '?')} clients, {data.get('partitioner', '?')}"),
        ("run directory", str(study.root.resolve())),
    ]
    table = "<table class=\"meta\"><tbody>" + "".join(
        f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows
    ) + "</tbody></table>"
    return f"<h1>fedforget report: {esc(str(sc.get('name', '?')))}</h1>{table}{_note(_interval_text(study))}"


def _warnings(study: Study) -> str:
    seen: dict[str, list[Any]] = {}
    for run in study.runs:
        for ev in run.events:
            if ev.get("event") in ("warning", "error"):
                seen.setdefault(str(ev.get("message", ev)), []).append(run.seed)
    parts = [_note(f"{p.name}: no finished run there; left out of this report", "warn") for p in study.skipped]
    for msg, seeds in seen.items():
        where = f" (seeds {', '.join(str(s) for s in seeds)})" if study.multi_seed else ""
        parts.append(_note(f"warning: {msg}{where}", "warn"))
    return "".join(parts)


def _failures(study: Study) -> str:
    """Recorded client failures (runtime.client_failure_rate, or ClientApp errors
    under on_client_error = 'record'): how many, and per arm."""
    by_arm: dict[str, int] = {}
    rounds: set[tuple[int, Any]] = set()
    for run in study.runs:
        for ev in run.events:
            if ev.get("event") == "client_failures":
                by_arm[str(ev["arm"])] = by_arm.get(str(ev["arm"]), 0) + len(ev["clients"])
                rounds.add((run.seed, ev["round"]))
    if not by_arm:
        return ""
    rt = study.scenario.get("runtime", {})
    per_arm = ", ".join(f"{a} {n}" for a, n in sorted(by_arm.items()))
    return _note(
        f"Client failures: {sum(by_arm.values())} failed train replies in {len(rounds)} round(s)"
        f"{' across seeds' if study.multi_seed else ''} (runtime.client_failure_rate = "
        f"{rt.get('client_failure_rate', 0)}, on_client_error = {rt.get('on_client_error', '?')}); "
        f"each arm aggregated the replies that arrived (failed_clients metric per arm and round). "
        f"By arm: {per_arm}.", "warn")


def _diverged(study: Study) -> str:
    """Method arms marked diverged (runtime.on_divergence = 'mark'): their curves stop there."""
    notes = []
    for run in study.runs:
        for ev in run.events:
            if ev.get("event") == "diverged":
                seed = f" (seed {run.seed})" if study.multi_seed else ""
                notes.append(_note(f"Arm {ev['arm']} diverged{seed} in {ev['what']}; it is frozen from round "
                                   f"{_round_text(float(ev['round']))} on and its curves stop there.", "warn"))
    return "".join(notes)


# --- per withdrawn client


def _signal_check(study: Study, client: int, event_round: int) -> str:
    """Did the oracle see the client before it left? Does retrain look like chance?"""
    T = study.last_round
    cal = study.calibration_round(client)
    before = study.value(ORIGINAL, cal, client, "mia_auc")
    where = f"original, round {_round_text(cal)}, the calibration model"
    parts = []
    if not _finite(before.mean):
        parts.append(_note(
            f"Signal check: no oracle value for original at round {_round_text(cal)} (the calibration "
            f"model), so it is unknown whether the oracle could see client {client} at all.", "warn"))
    elif before.mean >= SIGNAL_AUC:
        parts.append(_note(
            f"Signal check: before the withdrawal ({where}) the oracle's MIA AUC on client {client} is "
            f"{_labelled(study, before)}, at least {SIGNAL_AUC}: the oracle did see this client, so FR is "
            "meaningful.", "ok"))
    else:
        parts.append(_note(
            f"Signal check: before the withdrawal ({where}) the oracle's MIA AUC on client {client} is only "
            f"{_labelled(study, before)}, below {SIGNAL_AUC}: {NO_SIGNAL}. The oracle could barely tell this "
            "client's samples from non-members even before it left, so there was little to forget; its FR "
            f"cells (every arm) read \"{NO_SIGNAL}\" rather than a forgetting rate. A more memorisation-prone "
            "setup (fewer samples per client, more local epochs or rounds) or a stronger membership oracle "
            "would give FR a signal."
            + (" (An AUC below 0.5 means its samples looked less like members than the non-members did, "
               "e.g. when planted witness labels make them look unlike training data.)"
               if before.mean < 0.5 else ""), "warn"))
    if study.across_seeds and _finite(before.mean):
        low = sum(s is False for s in study.signal(client))
        if low:
            parts.append(_note(
                f"In {low} of {len(study.runs)} seeds that AUC is below {SIGNAL_AUC}: {NO_SIGNAL} there, so "
                "those seeds are left out of this client's FR values.", "warn"))
    ref = study.value(RETRAIN, T, client, "mia_auc")
    if _finite(ref.mean):
        text = (f"Retrain at the last round (round {_round_text(T)}): MIA AUC {_labelled(study, ref)} on client "
                f"{client}; near 0.5 is expected, since that model never saw the client.")
        if _finite(ref.lo) and not ref.lo <= 0.5 <= ref.hi:
            text += (" Its interval excludes 0.5: members and non-members differ in more than membership, "
                     "so read the other arms' AUC relative to retrain's, not to 0.5.")
        parts.append(_note(text))
    return "".join(parts)


def _tpr_if_enough(run: Run, arm: str, rnd: float, client: int, metric: str) -> float:
    """TPR at FPR f, or NaN unless the oracle scored at least 10 / f non-members
    (with fewer, that FPR is a handful of samples or none)."""
    need = math.ceil(TPR_MIN_NEGATIVES / TPR_FPR[metric] - 1e-9)
    n = run.n_nonmembers(arm, rnd, client)
    return run.value(arm, rnd, client, metric) if _finite(n) and n >= need else NAN


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


def _row_values(run: Run, arm: str, client: int, T: float, event_round: int) -> dict[str, float]:
    """One run's table values for one arm and withdrawn client (NaN where absent).

    Keys: ``<metric>@event`` at t - 0.5, ``<metric>`` at the last round (each
    with ``_lo``/``_hi``), deltas to retrain, TPRs, and the cost record at t
    (bytes in MB; ``cost_bytes_total`` = up + down)."""
    v: dict[str, float] = {}
    at = _event_point(event_round)
    for m in EVENT_METRICS:
        for key, src in zip((f"{m}@event", *_bounds(f"{m}@event")), (m, *_bounds(m)), strict=True):
            v[key] = run.value(arm, at, client, src)
    for m in FINAL_METRICS:
        for key in (m, *_bounds(m)):
            v[key] = run.value(arm, T, client, key)
    for m in TPR_FPR:
        v[m] = _tpr_if_enough(run, arm, T, client, m)
    v["test_accuracy"] = run.value(arm, T, GLOBAL, "test_accuracy")
    v["d_test_accuracy"] = v["test_accuracy"] - run.value(RETRAIN, T, GLOBAL, "test_accuracy")
    v["d_mia_auc"] = v["mia_auc"] - run.value(RETRAIN, T, client, "mia_auc")
    for key in (*COST_METRICS, *RETRAIN_YARDSTICK):
        x = run.value(arm, event_round, GLOBAL, key)
        v[key] = x / 1e6 if "bytes" in key and not key.startswith("speedup") else x  # bytes shown as MB
    up, down = v["cost_bytes_up"], v["cost_bytes_down"]
    v["cost_bytes_total"] = float(np.nansum([up, down])) if _finite(up) or _finite(down) else NAN
    return v


@dataclass(frozen=True)
class Column:
    header: str
    key: str
    digits: int = 3
    interval: bool = True  # False: mean only (costs)
    title: str = ""
    kind: str = "outcome"  # "outcome", "delta" (n/a-free for retrain), "cost", "speedup", "witness", "client_p"
    fr: bool = False  # an FR: "no signal" for a client the oracle did not see
    retrain_key: str = ""  # cost columns: what the retrain (yardstick) row shows; "" = "—"


COLUMNS = (
    Column("FR at the event", "fr@event", fr=True, title="forgetting rate right after the unlearning step "
           "(round t − 0.5, before round t): the unlearning step alone"),
    Column("MIA AUC at the event", "mia_auc@event", title="membership-inference ROC AUC right after the "
           "unlearning step (round t − 0.5)"),
    Column("client p at the event", "client_mia_pvalue@event", kind="client_p", title="client-level membership "
           "test right after the unlearning step (round t − 0.5): one-sided p-value of the client's mean score "
           "against pseudo-clients from never-trained data (small = the client's data is still in the model)"),
    Column("client p at the last round", "client_mia_pvalue", kind="client_p", title="client-level membership "
           "test at the last round: one-sided p-value (small = the client's data is still in the model; a model "
           "that never saw the client gives a roughly uniform p)"),
    Column("final FR", "fr", fr=True, title="forgetting rate at the last round: net share of the samples "
           "flagged as members at calibration that the oracle no longer flags (1 = all forgotten)"),
    Column("FR (fixed FPR)", "fr_fixed_fpr", fr=True, title="FR at the last round with the threshold "
           "re-chosen so the non-members' false-positive rate equals its calibration value; about 0 for a "
           "model whose member and non-member scores merely drift together"),
    Column("final MIA AUC", "mia_auc", title="membership-inference ROC AUC on the client's samples vs "
           "non-members at the last round (0.5 = chance)"),
    Column("TPR @ 1% FPR", "tpr_at_1pct_fpr", title="true positive rate at 1% false positive rate "
           "(n/a with fewer than 1,000 non-members)"),
    Column("TPR @ 0.1% FPR", "tpr_at_0.1pct_fpr", title="true positive rate at 0.1% false positive rate "
           "(n/a with fewer than 10,000 non-members)"),
    Column("test acc", "test_accuracy", title="global test accuracy at the last round"),
    Column("Δ test acc vs retrain", "d_test_accuracy", kind="delta"),
    Column("Δ AUC vs retrain", "d_mia_auc", kind="delta", title="MIA AUC minus retrain's (0 = as forgotten as "
           "retrain; negative = below retrain, a sign of over-unlearning)"),
    Column("forget acc", "forget_accuracy", title="accuracy on the withdrawn client's train samples"),
    Column("retain acc", "retain_accuracy", title="accuracy on the remaining clients' train samples"),
    Column("witness acc", "witness_accuracy", kind="witness", title="share of witness samples predicted "
           "with their planted label"),
    Column("witness AUC", "witness_mia_auc", kind="witness"),
    Column("witness FR", "witness_fr", kind="witness"),
    Column("witness FR (fixed FPR)", "witness_fr_fixed_fpr", kind="witness"),
    Column("wall s", "cost_wall_s", 2, False, "wall-clock seconds of the unlearning step (retrain: of rounds "
           "1..t−1)", "cost", retrain_key="retrain_wall_s_to_event"),
    Column("client steps", "cost_client_steps", 0, False, "local optimisation steps run on clients (retrain: "
           "in rounds 1..t−1)", "cost", retrain_key="retrain_steps_to_event"),
    Column("MB up", "cost_bytes_up", 2, False, "bytes sent by clients, MB (10^6 bytes)", "cost"),
    Column("MB down", "cost_bytes_down", 2, False, "bytes sent to clients, MB", "cost"),
    Column("MB total", "cost_bytes_total", 2, False, "bytes sent both ways, MB (retrain: in rounds 1..t−1)",
           "cost", retrain_key="retrain_bytes_to_event"),
    Column("storage MB", "cost_server_storage_bytes", 2, False, "server storage the method needs, MB", "cost"),
    Column("cost rounds", "cost_rounds", 0, False, "federated rounds inside the unlearning step", "cost"),
    Column("speed-up, steps (×)", "speedup_steps", 1, True, "retraining's client steps to the event ÷ the "
           "method's (∞: the method runs none)", "speedup"),
    Column("speed-up, bytes (×)", "speedup_bytes", 1, True, "retraining's bytes to the event ÷ the method's",
           "speedup"),
    Column("speed-up, wall (×)", "speedup_wall", 1, True, "retraining's wall seconds to the event ÷ the "
           "method's", "speedup"),
)


def _cell(study: Study, values: list[dict[str, float]], col: Column, signal: list[bool] | None = None,
          key: str | None = None) -> Estimate:
    """A table cell from per-run values; FR columns leave out runs without signal."""
    key = key or col.key
    lo, hi = _bounds(key)
    return _estimate_of([v[key] for v in values], [v.get(lo, NAN) for v in values],
                        [v.get(hi, NAN) for v in values], study.across_seeds, signal if col.fr else None)


BACKDOOR_HEADER = "backdoor success (triggered test)"
BACKDOOR_TITLE = ("attack success of the client's backdoor: share of triggered test samples classified as the "
                  "backdoor's target label, at the last round (retrain, which never saw the trigger, is the target)")
P_MEDIAN_TITLE = (" With several seeds: the median p over the seeds (p-values are skewed, so no mean ± interval); "
                  "one seed: its p.")


def _p_text(p: float) -> str:
    """A p-value: "<0.001" below 0.001, else 3 decimals; "n/a" when missing."""
    if not _finite(p):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _p_cell(study: Study, values: Sequence[float]) -> str:
    """A p-value cell from per-run values: the one run's p, or the median over
    the seeds that have one (noting how many when some have none)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return "n/a"
    text = _p_text(float(np.median(x)))
    if study.across_seeds:
        text += f" (median{'' if x.size == len(values) else f', {x.size} of {len(values)} seeds'})"
    return text


def _column_view(study: Study, col: Column, client: int) -> tuple[str, str]:
    """A column's header and title for one client: the witness accuracy of a
    backdoor witness is its attack success on triggered test samples."""
    if col.key == "witness_accuracy" and study.witness(client) == "backdoor":
        return BACKDOOR_HEADER, BACKDOOR_TITLE
    if col.kind == "client_p":
        return col.header, col.title + "." + P_MEDIAN_TITLE
    return col.header, col.title


def _interval_caption(study: Study) -> str:
    if study.across_seeds:
        return f"Mean ± half-width: {ACROSS_SEEDS_LABEL} over {len(study.runs)} seeds."
    return (f"[lo, hi]: {ORACLE_SAMPLING_LABEL}, which holds the trained model fixed and understates "
            "run-to-run spread; --seeds N gives across-seed intervals.")


def _method_table(study: Study, client: int, event_round: int) -> str:
    """Outcomes per arm (methods, then retrain and original for reference), the
    over-unlearning lines, and the methods' costs and speed-ups over retraining
    (with retraining's own cost as the yardstick row), for one withdrawn client.

    Two tables rather than one keep the page narrow enough to read."""
    T = study.last_round
    t = _round_text(event_round)
    at = _round_text(_event_point(event_round))
    signal = study.usable(client, "fr")
    per_arm = {a: [_row_values(r, a, client, T, event_round) for r in study.runs] for a in study.arms}
    has_witness = any(_finite(v[k]) for vs in per_arm.values() for v in vs
                      for k in ("witness_accuracy", "witness_mia_auc", "witness_fr", "witness_fr_fixed_fpr"))
    has_client_p = {k: any(_finite(v[k]) for vs in per_arm.values() for v in vs)
                    for k in ("client_mia_pvalue@event", "client_mia_pvalue")}
    outcome_cols = [c for c in COLUMNS if c.kind in ("outcome", "delta") or (c.kind == "witness" and has_witness)
                    or (c.kind == "client_p" and has_client_p[c.key])]
    order = [a for a in (*study.methods, RETRAIN, ORIGINAL) if a in per_arm]
    rows, classes = [], []
    for arm in order:
        ref = arm in (ORIGINAL, RETRAIN)
        row = [arm + (" (reference)" if ref else "")]
        for col in outcome_cols:
            # retrain's gap to itself is 0 by definition
            same = arm == RETRAIN and col.kind == "delta"
            if col.kind == "client_p":
                row.append(_p_cell(study, [v[col.key] for v in per_arm[arm]]))
                continue
            row.append("—" if same else _cell(study, per_arm[arm], col, signal).text(col.digits))
        row.append("" if ref else _flag_text(study, per_arm[arm]))
        rows.append(row)
        classes.append("ref" if ref else "")
    caption = (f"\"At the event\": round {at}, right after the unlearning step (before round {t}); the other "
               f"columns at the last round (round {_round_text(T)}). {_interval_caption(study)}")
    if signal is not None and not any(signal):
        caption += f" FR cells read \"{NO_SIGNAL}\": the oracle did not see this client at calibration."
    if any(c.kind == "client_p" for c in outcome_cols):
        caption += (" Client p: the client-level membership test's p-value (\"<0.001\" below 0.001)"
                    + (", median over the seeds." if study.across_seeds else "."))
    views = [_column_view(study, c, client) for c in outcome_cols]
    out = [
        _table(["arm", *(h for h, _ in views), "flags"], rows,
               titles=["", *(t for _, t in views), "over-unlearning at the last round"], row_classes=classes),
        f'<p class="small">{esc(caption)}</p>',
        *_over_unlearning_lines(study, client, T),
    ]
    if study.methods:
        out += _cost_table(study, client, event_round, per_arm)
    return "".join(out)


def _cost_table(study: Study, client: int, event_round: int, per_arm: dict[str, list[dict[str, float]]]) -> list[str]:
    """The methods' cost records at round t and speed-ups over retraining; the
    retrain row holds retraining's cost to the event (the speed-ups' numerator)."""
    cost_cols = [c for c in COLUMNS if c.kind in ("cost", "speedup")]
    t = event_round
    rows, classes = [], []
    for m in study.methods:
        rows.append([m, *(_cell(study, per_arm[m], c).text(c.digits, c.interval and c.kind == "speedup")
                          for c in cost_cols)])
        classes.append("")
    if RETRAIN in per_arm:
        rv = per_arm[RETRAIN]
        rows.append([f"{RETRAIN} (to the event)", *(
            _cell(study, rv, c, key=c.retrain_key).text(c.digits, False) if c.retrain_key else "—"
            for c in cost_cols)])
        classes.append("ref")
    mean_of = " (means over seeds)" if study.across_seeds else ""
    caption = [
        f"Cost record of each method's unlearning step at the event (round {t}){mean_of}: all the work it does "
        "inside its step, recovery rounds included; the regular rounds are the same for every arm and not "
        f"counted. Speed-up = retraining's cost to the event (rounds 1..{t - 1}) ÷ the method's cost; ∞ = the "
        "method costs nothing."
    ]
    if RETRAIN in per_arm:
        to_end = {k: t_interval([v[k] for v in per_arm[RETRAIN]]).mean
                  for k in ("retrain_steps_to_end", "retrain_bytes_to_end", "retrain_wall_s_to_end")}
        if any(_finite(x) for x in to_end.values()):
            caption.append(
                f"Retraining to the end of the run (round {_round_text(study.last_round)}){mean_of}: "
                f"{Estimate(to_end['retrain_steps_to_end']).text(0)} client steps, "
                f"{Estimate(to_end['retrain_bytes_to_end']).text(2)} MB, "
                f"{Estimate(to_end['retrain_wall_s_to_end']).text(2)} wall s.")
    if study.across_seeds:
        caption.append(f"Speed-ups: mean ± half-width, {ACROSS_SEEDS_LABEL}.")
    return [f"<h3>Cost of unlearning, client {client}</h3>",
            _table(["method", *(c.header for c in cost_cols)], rows,
                   titles=["", *(c.title for c in cost_cols)], row_classes=classes),
            *(f'<p class="small">{esc(line)}</p>' for line in caption)]


def _frontier_section(study: Study, client: int, event_round: int) -> str:
    """The cost–forgetting frontier of one withdrawn client: the figure, or a
    note when the oracle did not see the client (then the gap to retrain says
    nothing about forgetting) or no method has a point. Seeds without signal
    are left out, as in the FR cells."""
    at = _round_text(_event_point(event_round))
    head = f"<h3>Cost–forgetting frontier, client {client}</h3>"
    signal = study.signal(client)
    if all(s is False for s in signal):
        return head + _note(
            f"Cost–forgetting frontier: not drawn, {NO_SIGNAL} (the oracle did not see this client at "
            "calibration), so the gap to retrain's MIA AUC says nothing about forgetting.", "warn")
    runs = [i for i, s in enumerate(signal) if s is not False]
    uri = _frontier_figure(study, client, event_round, runs)
    if uri is None:
        return head + _note(f"Cost–forgetting frontier: no method has both a speed-up and an MIA AUC gap to "
                            f"retrain at round {at} on client {client}; not drawn.")
    caption = [FRONTIER_CAPTION,
               f"Black star: {RETRAIN}, the reference (speed-up 1, gap 0); dashed line: retraining's cost. "
               "∞: a method that costs nothing, drawn at the right edge (2× the largest finite speed-up)."]
    if study.across_seeds:
        caption.append(f"Points: means over {len(runs)} seeds; bars: {ACROSS_SEEDS_LABEL}s.")
        if len(runs) < len(study.runs):
            caption.append(f"{len(study.runs) - len(runs)} of {len(study.runs)} seeds left out: {NO_SIGNAL}.")
    else:
        caption.append("One run: no intervals (--seeds N gives across-seed intervals).")
    return head + _figure(uri, f"cost–forgetting frontier, client {client}", " ".join(caption))


def _flag_text(study: Study, values: list[dict[str, float]]) -> str:
    hits = sum(v["over_unlearning"] == 1 for v in values)
    if not hits:
        return ""
    return "over-unlearning" + (f" ({hits}/{len(values)} seeds)" if study.across_seeds else "")


def _over_unlearning_lines(study: Study, client: int, T: float) -> list[str]:
    lines = []
    for m in study.methods:
        flagged = [[float(r) for r, x in run.curve(m, client, "over_unlearning").items() if x == 1]
                   for run in study.runs]
        if not any(flagged):
            continue
        at_end = sum(T in f for f in flagged)
        if study.across_seeds:
            detail = (f"in {at_end} of {len(study.runs)} seeds at the last round" if at_end
                      else f"in {sum(map(bool, flagged))} of {len(study.runs)} seeds at some round, none at the last")
        else:
            word = "round" if len(flagged[0]) == 1 else "rounds"
            detail = f"flagged at {word} {_rounds_text(flagged[0])}"
            detail += "" if at_end else f"; not at the last round ({_round_text(T)})"
        lines.append(f'<p class="flag">{esc(f"over-unlearning: {m} on client {client}")}'
                     f' <span class="small">({esc(detail)})</span></p>')
    if lines:
        lines.append(_note(
            "Over-unlearning: the method's MIA AUC fell below retrain's interval, or its forget accuracy is "
            "more than 2 points below retrain's: it removed more than a model that never saw the client, "
            "which itself leaks that the client was there."))
    return lines


def _has_scores(study: Study, rnd: float) -> bool:
    return any(k[1] == float(rnd) for r in study.runs for k in (r.scores or {}))


def _client_section(study: Study, client: int, event_round: int) -> str:
    T = study.last_round
    at = _event_point(event_round)
    kind = study.event_kind.get(client, "withdraw")
    heading = (
        f"Withdrawn client {client} (withdraws at round {event_round})"
        if kind == "withdraw"
        else f"Client {client} ({kind} at round {event_round}: audited on its deleted samples)"
    )
    out = [f"<h2>{heading}</h2>",
           _signal_check(study, client, event_round)]
    band = f" Shaded: {study.interval_label}."
    event_line = (f"dotted red line at round {_round_text(at)}: the withdrawal and unlearning step; the points on "
                  "it are every arm right after that step (original and retrain: unchanged since round "
                  f"{event_round - 1}).")
    spec = [
        ("fr", f"client {client}: forgetting rate (FR) vs round", "FR", (0.0, "FR = 0 (nothing forgotten)"),
         f"FR by round for every arm; retrain (black, dashed) is the reference; {event_line}{band}"),
        ("mia_auc", f"client {client}: MIA AUC vs round", "MIA AUC", (0.5, "AUC 0.5 (chance)"),
         f"MIA AUC by round; the point at round {event_round - 1} is the calibration model (original, before); "
         f"{event_line}{band}"),
    ]
    no_signal = all(s is False for s in study.signal(client))
    for metric, title, ylabel, hline, caption in spec:
        if metric == "fr" and no_signal:
            out.append(_note(f"{title}: not drawn, {NO_SIGNAL} (the oracle did not see this client at "
                             "calibration), so its FR is not a forgetting rate.", "warn"))
            continue
        uri = _curve_figure(study, client, metric, title, ylabel, [event_round], hline)
        out.append(_figure(uri, title, caption) if uri else _note(f"No {ylabel} values for client {client}."))
    if study.witness(client) == "backdoor":
        title = f"client {client}: backdoor success vs round"
        uri = _curve_figure(study, client, "witness_accuracy", title, "backdoor success", [event_round])
        out.append(_figure(uri, title, "Backdoor attack success by round: share of triggered test samples "
                           "classified as the backdoor's target label; retrain (black, dashed), which never saw "
                           f"the trigger, is the reference; {event_line}{band}")
                   if uri else _note(f"No backdoor success values for client {client}."))
    out.append(f"<h3>ROC curves, client {client}</h3>")
    if all(r.scores is None for r in study.runs):
        out.append(_note("No scores.parquet in this run directory (oracle.scores = false?): ROC curves skipped."))
    else:
        first = (at, "right after unlearning") if _has_scores(study, at) else (float(event_round), "event round")
        uri, notes = _roc_figure(study, client, [first, (T, "last round")])
        if uri:
            caption = "ROC of the membership oracle per arm (log FPR axis)" + (
                "; mean TPR over seeds at each FPR" if study.across_seeds else "") + "."
            out.append(_figure(uri, f"ROC curves, client {client}", caption))
        out += [_note(n) for n in notes]
    out.append(f"<h3>Methods, client {client}</h3>")
    out.append(_method_table(study, client, event_round))
    if study.methods and _has_speedups(study, event_round):
        out.append(_frontier_section(study, client, event_round))
    return "".join(out)


def _controls_section(study: Study) -> str:
    controls = study.controls
    if not controls:
        return ""
    T = study.last_round
    metrics = (("FR", "fr"), ("FR (fixed FPR)", "fr_fixed_fpr"), ("MIA AUC", "mia_auc"))
    headers = ["arm"] + [f"client {c} {h}" for c in controls for h, _ in metrics]
    with_p = {c for c in controls
              if any(_finite(r.value(a, T, c, "client_mia_pvalue")) for r in study.runs for a in study.arms)}
    headers += [f"client {c} client p at the last round" for c in controls if c in with_p]
    rows = [[arm] + [study.value(arm, T, c, m).text() for c in controls for _, m in metrics]
            + [_p_cell(study, [r.value(arm, T, c, "client_mia_pvalue") for r in study.runs])
               for c in controls if c in with_p]
            for arm in study.arms]
    silent = [c for c in controls if all(s is False for s in study.signal(c))]
    notes = [f"At the last round (round {_round_text(T)}). {_interval_caption(study)}"]
    if with_p:
        notes.append("Client p: the client-level membership test's p-value (\"<0.001\" below 0.001"
                     + ("; median over the seeds" if study.across_seeds else "") + "); roughly uniform for a "
                     "model that never saw the client, small when the client's data is in the model, as it "
                     "should be for a control.")
    if silent:
        notes.append(f"\"{NO_SIGNAL}\": the oracle did not see client{'s' if len(silent) > 1 else ''} "
                     f"{', '.join(map(str, silent))} at calibration (original's MIA AUC below {SIGNAL_AUC}).")
    return (
        "<h2>Control clients</h2>"
        + _note("Clients that never withdraw, audited by the same kind of oracle. Their FR should stay near 0: "
                "a large FR here means the model drifted rather than forgot; FR (fixed FPR) discounts that drift.")
        + _table(headers, rows)
        + "".join(f'<p class="small">{esc(n)}</p>' for n in notes)
    )


def _global_section(study: Study) -> str:
    uri = _accuracy_figure(study)
    caption = ("Global test accuracy by round; dotted red line at t − 0.5: the withdrawal and unlearning step "
               "(the points on it are every arm right after that step).")
    fig = _figure(uri, "test accuracy per arm", caption) if uri else _note("No test accuracy values.")
    return "<h2>Test accuracy</h2>" + fig


def _reading_notes() -> str:
    items = [
        "<b>FR</b> (forgetting rate) = (A<sub>F</sub> − B<sub>F</sub>) / B<sub>T</sub>: B<sub>T</sub> of the "
        "withdrawn client's samples were flagged as members at calibration; A<sub>F</sub> and B<sub>F</sub> count "
        "those not flagged now and at calibration. The oracle (its threshold included) is fixed at calibration, "
        "on original's model after round t − 1, and reused for every arm and round. 1 = everything forgotten, "
        "0 = nothing.",
        "<b>FR (fixed FPR)</b> (<code>fr_fixed_fpr</code>): the same count with the threshold re-chosen for each "
        "(arm, round) so the non-members' false-positive rate equals its calibration value. A model whose member "
        "and non-member scores move together (drift) scores about 0, so this separates forgetting from drift.",
        "<b>Round t − 0.5</b>: every arm right after the unlearning step of the event at round t, before round "
        "t's training (original and retrain: their models after round t − 1, unchanged). At every round label "
        "every arm has had the same number of regular rounds; work a method does inside its step is its cost. "
        "\"At the event\" columns are read there: the unlearning step alone.",
        "<b>Costs and speed-ups</b>: a method's cost is everything it does inside its unlearning step. Speed-up "
        "= retraining's cost to the event (its client steps, bytes and wall seconds for rounds 1..t − 1) ÷ the "
        "method's cost; ∞ when the method costs nothing. The retrain row of the cost table is that yardstick.",
        "<b>Cost–forgetting frontier</b>: per withdrawn client, each method's |MIA AUC − retrain's| right "
        "after its unlearning step (t − 0.5) against its speed-up over retraining to the event (client steps, "
        "wall time; log axes). Retrain is the black star at (1, 0); a method that costs nothing sits at the "
        "right edge, marked ∞. Lower and further right is better: as forgotten as retrain, for less.",
        f"<b>TPR at FPR f</b> is reported only when the oracle scored at least {TPR_MIN_NEGATIVES}/f "
        "non-members (1,000 for 1%, 10,000 for 0.1%); otherwise n/a.",
        f"<b>No signal</b>: when original's MIA AUC at calibration is below {SIGNAL_AUC} (near 0.5) the oracle "
        f"did not see the client, so its FR is not a forgetting rate: those cells read \"{NO_SIGNAL}\".",
        "<b>MIA AUC</b>: how well the oracle's score separates the client's samples from matched non-members; "
        "0.5 = it cannot tell them apart. Retrain, which never saw the client, is the target.",
        "<b>Gap to retrain</b>: a method's value minus retrain's at the last round.",
        "<b>Client-level test</b> (<code>client_mia_z</code>, <code>client_mia_pvalue</code>): is this client's "
        "data still in the model? The statistic is the client's mean per-sample score (−loss); z is how many "
        "standard deviations it lies above the same statistic on pseudo-clients (same size and label "
        "histogram) drawn from never-trained data, and p is the one-sided p-value of that z. The "
        "pseudo-clients are drawn once per event, from every client's audit part and the test set, and reused "
        "for every arm and round. Small p (e.g. &lt;0.001) = the client's data is still detectably in the "
        "model; a model that never saw the client (retrain) gives a roughly uniform p. With several seeds the "
        "tables show the median p.",
        "<b>Backdoor success</b>: for a client whose witness is a backdoor, the share of triggered test "
        "samples the model classifies as the backdoor's target label (the <code>witness_accuracy</code> "
        "metric of that client). High = the backdoor, and so the client's influence, is still there; "
        "retrain, which never saw the trigger, shows the level to reach. Canary witnesses keep the witness "
        "columns' meaning: the share of planted samples predicted with their planted label.",
        f"<b>Intervals</b>: with several seeds, the {ACROSS_SEEDS_LABEL} (mean ± half-width). With one seed, the "
        f"{ORACLE_SAMPLING_LABEL} ([lo, hi]): the oracle's bootstrap over its audit samples, which holds the "
        "trained model fixed and understates run-to-run spread; --seeds N gives across-seed intervals. n/a: no "
        "value.",
    ]
    return "<h2>How to read this report</h2><ul class=\"small\">" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


def render_report(run_dir: str | Path) -> str:
    """The report of a run (or multi-seed) directory as one HTML string."""
    study = load_study(run_dir)
    parts = [_header(study), _warnings(study), _failures(study), _diverged(study)]
    if not study.withdrawn:
        parts.append(_note("No withdrawal events in this run: nothing to unlearn, so only test accuracy is shown."))
        parts.append(_global_section(study))
    else:
        parts.append(_global_section(study))
        for client, rnd in study.withdrawn.items():
            parts.append(_client_section(study, client, rnd))
        parts.append(_controls_section(study))
        parts.append(_reading_notes())
    title = esc(f"fedforget report: {study.scenario.get('name', '?')}")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{title}</title>"
        f"<style>{CSS}</style><script>{SCRIPT}</script></head><body>"
        + "".join(parts)
        + "</body></html>\n"
    )


def write_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report.html`` (atomically) and return its path.

    Parameters
    ----------
    run_dir : str or Path
        A finished run directory, or a directory of ``seed-*`` run directories.

    Returns
    -------
    Path
        The written ``report.html``.

    Raises
    ------
    FileNotFoundError, ValueError
        ``run_dir`` is not a finished run (the message names the path).
    """
    root = Path(run_dir)
    if (root / "study.json").is_file():  # a sweep study has its own report
        from fedforget.study_report import write_study_report

        return write_study_report(root)
    text = render_report(root)
    out = root / "report.html"
    tmp = root / f".report.html.{os.getpid()}.tmp"
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
