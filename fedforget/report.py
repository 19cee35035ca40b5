"""The HTML report of a run directory, or of a multi-seed directory of them.

``write_report(run_dir)`` reads a finished run directory (see
:mod:`fedforget.results`) and writes ``run_dir/report.html``: one self-contained
file (figures are PNGs embedded as base64 data URIs, CSS and a tiny script are
inline; nothing is fetched from a network).

A directory whose ``seed-*/`` subdirectories are finished run directories (the
layout of :func:`fedforget.runner.run_seeds`) gets one report over all seeds:
curves and table cells are means with 95% t-intervals across seeds. A single run
shows the oracle's own bootstrap intervals (``fr_lo``/``fr_hi``,
``mia_auc_lo``/``mia_auc_hi``) instead.

Per withdrawn client the report shows FR and MIA AUC vs round for every arm
(retrain is the reference: black, thick, dashed), ROC curves at the event round
and at the last round, a signal check (did the oracle see the client before it
left?), a table of outcomes and costs per method, and over-unlearning flags.
Control clients (never withdrawn) get a small table of final FR and AUC.
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
from matplotlib.ticker import MaxNLocator
from scipy import stats
from sklearn.metrics import auc as area_under
from sklearn.metrics import roc_curve

from fedforget.schedule import ORIGINAL, RETRAIN

__all__ = ["Run", "Study", "load_run", "load_study", "render_report", "write_report"]

GLOBAL = -1  # client id standing for the global (client = NA) rows
SIGNAL_AUC = 0.65  # below this the oracle barely sees the client: FR says little
CONFIDENCE = 0.95
REQUIRED_COLUMNS = ("arm", "round", "client", "metric", "value")
INTERVALS = {"fr": ("fr_lo", "fr_hi"), "mia_auc": ("mia_auc_lo", "mia_auc_hi")}
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
        ``(arm, client, metric) -> Series`` of values indexed by round; global
        rows use client ``GLOBAL`` (-1).
    scores : dict or None
        ``(arm, round, client) -> DataFrame`` of per-sample oracle scores, or
        None when the run has no ``scores.parquet``.
    """

    path: Path
    scenario: dict[str, Any]
    events: list[dict[str, Any]]
    curves: dict[tuple[str, int, str], pd.Series]
    scores: dict[tuple[str, int, int], pd.DataFrame] | None

    @property
    def seed(self) -> Any:
        return self.scenario.get("seed")

    def curve(self, arm: str, client: int, metric: str) -> pd.Series:
        """Values of one metric by round (empty when absent)."""
        return self.curves.get((arm, client, metric), _EMPTY)

    def value(self, arm: str, rnd: int, client: int, metric: str) -> float:
        """One value, NaN when absent."""
        return float(self.curve(arm, client, metric).get(rnd, NAN))


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
            "round": pd.to_numeric(df["round"]).astype(np.int64),
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


def _scores_of(path: Path) -> dict[tuple[str, int, int], pd.DataFrame] | None:
    if not path.is_file():
        return None
    df = pd.read_parquet(path)
    missing = [c for c in ("arm", "round", "client", "member", "score") if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {', '.join(missing)}")
    df = df.assign(
        round=pd.to_numeric(df["round"]).astype(np.int64),
        client=pd.to_numeric(df["client"]).astype(np.int64),
        member=df["member"].astype(bool),
        score=pd.to_numeric(df["score"], errors="coerce").astype(float),
    )
    return {(str(a), int(r), int(c)): g for (a, r, c), g in df.groupby(["arm", "round", "client"], sort=False)}


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
    interval of one run (shown as value [lo, hi]).
    """

    mean: float
    lo: float = NAN
    hi: float = NAN
    n: int = 1
    across_seeds: bool = False

    def text(self, digits: int = 3, interval: bool = True) -> str:
        if not _finite(self.mean):
            return "n/a"
        m = _num(self.mean, digits)
        if not interval or not (_finite(self.lo) and _finite(self.hi)):
            return m
        if self.across_seeds:
            return f"{m} ± {_num((self.hi - self.lo) / 2, digits)}"
        return f"{m} [{_num(self.lo, digits)}, {_num(self.hi, digits)}]"


def _finite(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _num(x: float, digits: int) -> str:
    return f"{x:,.{digits}f}" if digits == 0 else f"{x:.{digits}f}"


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
    def arms(self) -> list[str]:
        """original, retrain, then the methods in the scenario's order."""
        present = {a for r in self.runs for (a, _, _) in r.curves if not a.startswith("shadow-")}
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

    @property
    def controls(self) -> list[int]:
        """Audited clients that never withdraw."""
        audited = {c for r in self.runs for (_, c, m) in r.curves if m == "mia_auc" and c != GLOBAL}
        return sorted(audited - set(self.withdrawn))

    @property
    def last_round(self) -> int:
        rounds = [int(s.index.max()) for r in self.runs for s in r.curves.values() if len(s)]
        return max(rounds, default=0)

    def estimate(self, fn: Callable[[Run], float], lo: Callable[[Run], float] | None = None,
                 hi: Callable[[Run], float] | None = None) -> Estimate:
        """``fn`` per run; across seeds a t-interval, for one run the given bounds."""
        if self.across_seeds:
            return t_interval([fn(r) for r in self.runs])
        run = self.runs[0]
        return Estimate(fn(run), lo(run) if lo else NAN, hi(run) if hi else NAN)

    def value(self, arm: str, rnd: int, client: int, metric: str) -> Estimate:
        """One metric at one round, with its interval."""
        bounds = INTERVALS.get(metric)
        return self.estimate(
            lambda r: r.value(arm, rnd, client, metric),
            (lambda r: r.value(arm, rnd, client, bounds[0])) if bounds else None,
            (lambda r: r.value(arm, rnd, client, bounds[1])) if bounds else None,
        )

    def band(self, arm: str, client: int, metric: str) -> pd.DataFrame:
        """Curve of one metric: columns mean, lo, hi indexed by round."""
        if self.across_seeds:
            curves = [c for r in self.runs if len(c := r.curve(arm, client, metric))]
            return _band_across(curves) if curves else pd.DataFrame(columns=["mean", "lo", "hi"])
        run = self.runs[0]
        s = run.curve(arm, client, metric)
        bounds = INTERVALS.get(metric)
        lo = run.curve(arm, client, bounds[0]).reindex(s.index) if bounds else pd.Series(NAN, index=s.index)
        hi = run.curve(arm, client, bounds[1]).reindex(s.index) if bounds else pd.Series(NAN, index=s.index)
        return pd.DataFrame({"mean": s, "lo": lo, "hi": hi})


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
    for i, r in enumerate(sorted(set(rounds))):
        ax.axvline(r, color="firebrick", lw=1.0, ls=":", label="withdrawal" if i == 0 else None, zorder=1)


def _curve_figure(study: Study, client: int, metric: str, title: str, ylabel: str,
                  event_rounds: Sequence[int], hline: tuple[float, str] | None = None) -> str | None:
    """One metric vs round for every arm with interval bands; None without data."""
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
        ax.plot(band.index, band["mean"], label=arm, **st)
        ok = band["lo"].notna() & band["hi"].notna()
        if ok.any():
            ax.fill_between(band.index[ok], band["lo"][ok], band["hi"][ok], color=st["color"], alpha=0.13, lw=0)
    if not drawn:
        return None
    if hline is not None:
        ax.axhline(hline[0], color="0.45", lw=0.9, ls="-.", label=hline[1], zorder=1)
    _mark_events(ax, event_rounds)
    ax.set(title=title, xlabel="round", ylabel=ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole numbers
    ax.grid(alpha=0.3)
    _legend(ax)
    return _png_uri(fig)


def _roc_points(g: pd.DataFrame) -> tuple[np.ndarray, np.ndarray] | None:
    g = g[np.isfinite(g["score"])]
    if g["member"].nunique() < 2:
        return None
    fpr, tpr, _ = roc_curve(g["member"].to_numpy(), g["score"].to_numpy())
    return fpr, tpr


def _roc_panel(ax: Axes, study: Study, client: int, rnd: int, styles: dict[str, dict[str, Any]]) -> bool:
    """ROC curves of every arm at one round (mean over seeds by vertical
    averaging on a log FPR grid); False when no arm has scores there."""
    per_arm: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    n_neg = 1
    for arm in study.arms:
        for run in study.runs:
            g = (run.scores or {}).get((arm, rnd, client))
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


def _roc_figure(study: Study, client: int, rounds: list[tuple[int, str]]) -> tuple[str | None, list[str]]:
    """ROC panels for (round, label) pairs; notes for rounds without scores."""
    styles = _arm_styles(study.arms)
    fig = Figure(figsize=(5.2 * len(rounds), 4.0))
    notes = []
    drawn = 0
    for i, (rnd, label) in enumerate(rounds):
        ax = fig.add_subplot(1, len(rounds), i + 1)
        if _roc_panel(ax, study, client, rnd, styles):
            drawn += 1
            ax.set_title(f"client {client}, {label} (round {rnd})", fontsize=10)
        else:
            notes.append(f"no scores for client {client} at round {rnd} ({label})")
            ax.set_axis_off()
    return (_png_uri(fig) if drawn else None), notes


def _accuracy_figure(study: Study) -> str | None:
    return _curve_figure(
        study, GLOBAL, "test_accuracy", "test accuracy per arm", "test accuracy", list(study.withdrawn.values())
    )


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


def _rounds_text(rounds: Sequence[int]) -> str:
    """Compress rounds into ranges: [3, 4, 5, 8] -> "3–5, 8"."""
    rs = sorted(set(int(r) for r in rounds))
    parts: list[str] = []
    i = 0
    while i < len(rs):
        j = i
        while j + 1 < len(rs) and rs[j + 1] == rs[j] + 1:
            j += 1
        parts.append(str(rs[i]) if i == j else f"{rs[i]}–{rs[j]}")
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
        ("rounds", str(sc.get("train", {}).get("rounds", study.last_round))),
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
    how = (
        f"Values are means over {len(study.runs)} seeds; intervals are 95% t-intervals across seeds "
        "(shaded bands in the figures, mean ± half-width in the tables)."
        if study.across_seeds
        else "Intervals are the oracle's 95% bootstrap intervals (shaded bands; [lo, hi] in the tables)."
    )
    return f"<h1>fedforget report: {esc(str(sc.get('name', '?')))}</h1>{table}{_note(how)}"


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


# --- per withdrawn client


def _signal_check(study: Study, client: int, event_round: int) -> str:
    """Did the oracle see the client before it left? Does retrain look like chance?"""
    T = study.last_round
    before = study.value(ORIGINAL, event_round - 1, client, "mia_auc")
    parts = []
    if not _finite(before.mean):
        parts.append(_note(
            f"Signal check: no oracle value for original at round {event_round - 1} (the calibration "
            f"model), so it is unknown whether the oracle could see client {client} at all.", "warn"))
    elif before.mean >= SIGNAL_AUC:
        parts.append(_note(
            f"Signal check: before the withdrawal (original, round {event_round - 1}) the oracle's MIA AUC "
            f"on client {client} is {before.text()}, at least {SIGNAL_AUC}: the oracle did see this client, "
            "so FR is meaningful.", "ok"))
    else:
        parts.append(_note(
            f"Signal check: before the withdrawal (original, round {event_round - 1}) the oracle's MIA AUC on "
            f"client {client} is only {before.text()}, below {SIGNAL_AUC}. The oracle could barely tell this "
            "client's samples from non-members even before it left, so there was little to forget and FR "
            "(for every arm) says little here. A more memorisation-prone setup (fewer samples per client, "
            "more local epochs or rounds) or a stronger attack would make FR informative."
            + (" (An AUC below 0.5 means its samples looked less like members than the non-members did, "
               "e.g. when planted witness labels raise their loss.)" if before.mean < 0.5 else ""), "warn"))
    if study.across_seeds and _finite(before.mean):
        low = sum(r.value(ORIGINAL, event_round - 1, client, "mia_auc") < SIGNAL_AUC for r in study.runs)
        if low:
            parts.append(_note(f"In {low} of {len(study.runs)} seeds that AUC is below {SIGNAL_AUC}.", "warn"))
    ref = study.value(RETRAIN, T, client, "mia_auc")
    if _finite(ref.mean):
        text = (f"Retrain at the last round (round {T}): MIA AUC {ref.text()} on client {client}; near 0.5 is "
                "expected, since that model never saw the client.")
        if _finite(ref.lo) and not ref.lo <= 0.5 <= ref.hi:
            text += (" Its interval excludes 0.5: members and non-members differ in more than membership, "
                     "so read the other arms' AUC relative to retrain's, not to 0.5.")
        parts.append(_note(text))
    return "".join(parts)


def _row_values(run: Run, arm: str, client: int, T: int, event_round: int) -> dict[str, float]:
    """One run's table values for one arm and withdrawn client (NaN where absent)."""
    v = {}
    for key in ("fr", "fr_lo", "fr_hi", "mia_auc", "mia_auc_lo", "mia_auc_hi", "tpr_at_0.1pct_fpr",
                "forget_accuracy", "retain_accuracy", "witness_accuracy", "witness_mia_auc", "witness_fr",
                "over_unlearning"):
        v[key] = run.value(arm, T, client, key)
    v["test_accuracy"] = run.value(arm, T, GLOBAL, "test_accuracy")
    v["d_test_accuracy"] = v["test_accuracy"] - run.value(RETRAIN, T, GLOBAL, "test_accuracy")
    v["d_mia_auc"] = v["mia_auc"] - run.value(RETRAIN, T, client, "mia_auc")
    for key in ("cost_wall_s", "cost_client_steps", "cost_rounds"):
        v[key] = run.value(arm, event_round, GLOBAL, key)
    for key in ("cost_bytes_up", "cost_bytes_down", "cost_server_storage_bytes"):
        v[key] = run.value(arm, event_round, GLOBAL, key) / 1e6  # shown as MB
    return v


@dataclass(frozen=True)
class Column:
    header: str
    key: str
    digits: int = 3
    interval: bool = True  # False: mean only (costs)
    title: str = ""
    kind: str = "outcome"  # "outcome", "delta" (n/a-free for retrain), "cost", "witness"


COLUMNS = (
    Column("final FR", "fr", title="forgetting rate at the last round: net share of the samples flagged as "
           "members before the withdrawal that the oracle no longer flags (1 = all forgotten)"),
    Column("final MIA AUC", "mia_auc", title="membership-inference ROC AUC on the client's samples vs "
           "non-members at the last round (0.5 = chance)"),
    Column("TPR @ 0.1% FPR", "tpr_at_0.1pct_fpr", title="true positive rate at 0.1% false positive rate"),
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
    Column("wall s", "cost_wall_s", 2, False, "wall-clock seconds of the unlearning step", "cost"),
    Column("client steps", "cost_client_steps", 0, False, "local optimisation steps run on clients", "cost"),
    Column("MB up", "cost_bytes_up", 2, False, "bytes sent by clients, MB (10^6 bytes)", "cost"),
    Column("MB down", "cost_bytes_down", 2, False, "bytes sent to clients, MB", "cost"),
    Column("storage MB", "cost_server_storage_bytes", 2, False, "server storage the method needs, MB", "cost"),
    Column("cost rounds", "cost_rounds", 0, False, "federated rounds the unlearning step used", "cost"),
)


def _cell(study: Study, values: list[dict[str, float]], col: Column) -> Estimate:
    if study.across_seeds:
        return t_interval([v[col.key] for v in values])
    v = values[0]
    bounds = INTERVALS.get(col.key)
    return Estimate(v[col.key], v[bounds[0]] if bounds else NAN, v[bounds[1]] if bounds else NAN)


def _method_table(study: Study, client: int, event_round: int) -> str:
    """Outcomes per arm (methods, then retrain and original for reference), the
    over-unlearning lines, and the methods' cost record, for one withdrawn client.

    Two tables rather than one keep the page narrow enough to read."""
    T = study.last_round
    per_arm = {a: [_row_values(r, a, client, T, event_round) for r in study.runs] for a in study.arms}
    has_witness = any(_finite(v[k]) for vs in per_arm.values() for v in vs
                      for k in ("witness_accuracy", "witness_mia_auc", "witness_fr"))
    outcome_cols = [c for c in COLUMNS if c.kind in ("outcome", "delta") or (c.kind == "witness" and has_witness)]
    order = [a for a in (*study.methods, RETRAIN, ORIGINAL) if a in per_arm]
    rows, classes = [], []
    for arm in order:
        ref = arm in (ORIGINAL, RETRAIN)
        row = [arm + (" (reference)" if ref else "")]
        for col in outcome_cols:
            # retrain's gap to itself is 0 by definition
            same = arm == RETRAIN and col.kind == "delta"
            row.append("—" if same else _cell(study, per_arm[arm], col).text(col.digits))
        row.append("" if ref else _flag_text(study, per_arm[arm]))
        rows.append(row)
        classes.append("ref" if ref else "")
    out = [
        _table(["arm", *(c.header for c in outcome_cols), "flags"], rows,
               titles=["", *(c.title for c in outcome_cols), "over-unlearning at the last round"], row_classes=classes),
        f'<p class="small">{esc(f"At the last round (round {T}).")}</p>',
        *_over_unlearning_lines(study, client, T),
    ]
    cost_cols = [c for c in COLUMNS if c.kind == "cost"]
    if study.methods:
        cost_rows = [[m, *(_cell(study, per_arm[m], c).text(c.digits, c.interval) for c in cost_cols)]
                     for m in study.methods]
        caption = f"Cost record of the unlearning step at round {event_round}" + (
            " (means over seeds)." if study.across_seeds else ".")
        out += [f"<h3>Cost of unlearning, client {client}</h3>",
                _table(["method", *(c.header for c in cost_cols)], cost_rows,
                       titles=["", *(c.title for c in cost_cols)]),
                f'<p class="small">{esc(caption)}</p>']
    return "".join(out)


def _flag_text(study: Study, values: list[dict[str, float]]) -> str:
    hits = sum(v["over_unlearning"] == 1 for v in values)
    if not hits:
        return ""
    return "over-unlearning" + (f" ({hits}/{len(values)} seeds)" if study.across_seeds else "")


def _over_unlearning_lines(study: Study, client: int, T: int) -> list[str]:
    lines = []
    for m in study.methods:
        flagged = [[int(r) for r, x in run.curve(m, client, "over_unlearning").items() if x == 1] for run in study.runs]
        if not any(flagged):
            continue
        at_end = sum(T in f for f in flagged)
        if study.across_seeds:
            detail = (f"in {at_end} of {len(study.runs)} seeds at the last round" if at_end
                      else f"in {sum(map(bool, flagged))} of {len(study.runs)} seeds at some round, none at the last")
        else:
            word = "round" if len(flagged[0]) == 1 else "rounds"
            detail = f"flagged at {word} {_rounds_text(flagged[0])}"
            detail += "" if at_end else f"; not at the last round ({T})"
        lines.append(f'<p class="flag">{esc(f"over-unlearning: {m} on client {client}")}'
                     f' <span class="small">({esc(detail)})</span></p>')
    if lines:
        lines.append(_note(
            "Over-unlearning: the method's MIA AUC fell below retrain's interval, or its forget accuracy is "
            "more than 2 points below retrain's: it removed more than a model that never saw the client, "
            "which itself leaks that the client was there."))
    return lines


def _client_section(study: Study, client: int, event_round: int) -> str:
    T = study.last_round
    kind = study.event_kind.get(client, "withdraw")
    heading = (
        f"Withdrawn client {client} (withdraws at round {event_round})"
        if kind == "withdraw"
        else f"Client {client} ({kind} at round {event_round}: audited on its deleted samples)"
    )
    out = [f"<h2>{heading}</h2>",
           _signal_check(study, client, event_round)]
    spec = [
        ("fr", f"client {client}: forgetting rate (FR) vs round", "FR", (0.0, "FR = 0 (nothing forgotten)"),
         "FR by round for every arm; retrain (black, dashed) is the reference; dotted red line: the withdrawal."),
        ("mia_auc", f"client {client}: MIA AUC vs round", "MIA AUC", (0.5, "AUC 0.5 (chance)"),
         f"MIA AUC by round; the point at round {event_round - 1} is the calibration model (original, before)."),
    ]
    for metric, title, ylabel, hline, caption in spec:
        uri = _curve_figure(study, client, metric, title, ylabel, [event_round], hline)
        out.append(_figure(uri, title, caption) if uri else _note(f"No {ylabel} values for client {client}."))
    out.append(f"<h3>ROC curves, client {client}</h3>")
    if all(r.scores is None for r in study.runs):
        out.append(_note("No scores.parquet in this run directory (oracle.scores = false?): ROC curves skipped."))
    else:
        uri, notes = _roc_figure(study, client, [(event_round, "event round"), (T, "last round")])
        if uri:
            caption = "ROC of the membership oracle per arm (log FPR axis)" + (
                "; mean TPR over seeds at each FPR" if study.across_seeds else "") + "."
            out.append(_figure(uri, f"ROC curves, client {client}", caption))
        out += [_note(n) for n in notes]
    out.append(f"<h3>Methods, client {client}</h3>")
    out.append(_method_table(study, client, event_round))
    return "".join(out)


def _controls_section(study: Study) -> str:
    controls = study.controls
    if not controls:
        return ""
    T = study.last_round
    headers = ["arm"] + [f"client {c} {k}" for c in controls for k in ("FR", "MIA AUC")]
    rows = [[arm] + [study.value(arm, T, c, m).text() for c in controls for m in ("fr", "mia_auc")]
            for arm in study.arms]
    return (
        "<h2>Control clients</h2>"
        + _note("Clients that never withdraw, audited by the same kind of oracle. Their FR should stay near 0: "
                "a large FR here means the model drifted rather than forgot.")
        + _table(headers, rows)
        + f'<p class="small">At the last round (round {T}).</p>'
    )


def _global_section(study: Study) -> str:
    uri = _accuracy_figure(study)
    fig = (_figure(uri, "test accuracy per arm", "Global test accuracy by round; dotted red line: withdrawal.")
           if uri else _note("No test accuracy values."))
    return "<h2>Test accuracy</h2>" + fig


def _reading_notes() -> str:
    return (
        "<h2>How to read this report</h2><ul class=\"small\">"
        "<li><b>FR</b> (forgetting rate): of the withdrawn client's samples the oracle flagged as members on the "
        "model just before the withdrawal, the net share it no longer flags; 1 = everything forgotten, 0 = nothing. "
        "The oracle is calibrated once on that model and reused for every arm and round.</li>"
        "<li><b>MIA AUC</b>: how well the oracle's score separates the client's samples from matched "
        "non-members; 0.5 = it cannot tell them apart. Retrain, which never saw the client, is the target.</li>"
        "<li><b>Gap to retrain</b>: a method's value minus retrain's at the last round.</li>"
        "<li><b>Costs</b> are those of the unlearning step itself (recovery rounds excluded).</li>"
        "</ul>"
    )


def render_report(run_dir: str | Path) -> str:
    """The report of a run (or multi-seed) directory as one HTML string."""
    study = load_study(run_dir)
    parts = [_header(study), _warnings(study)]
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
    text = render_report(root)
    out = root / "report.html"
    tmp = root / f".report.html.{os.getpid()}.tmp"
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
