"""The run report's figures (matplotlib, embedded as PNG data URIs): forgetting
curves, ROC panels and the cost–forgetting frontier."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator
from sklearn.metrics import auc as area_under

from fedforget.analysis.outcomes import frontier_estimates, frontier_points, roc_points
from fedforget.analysis.runs import GLOBAL, Study
from fedforget.analysis.stats import event_point, finite, round_text
from fedforget.schedule import ORIGINAL, RETRAIN

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


def arm_styles(arms: list[str]) -> dict[str, dict[str, Any]]:
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


def png_uri(fig: Figure) -> str:
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
        ax.axvline(event_point(r), color="firebrick", lw=1.0, ls=":",
                   label="withdrawal + unlearning (t − 0.5)" if i == 0 else None, zorder=1)


def curve_figure(study: Study, client: int, metric: str, title: str, ylabel: str,
                  event_rounds: Sequence[int], hline: tuple[float, str] | None = None) -> str | None:
    """One metric vs (float) round for every arm with interval bands; None
    without data. Every point is drawn, the t - 0.5 ones included."""
    styles = arm_styles(study.arms)
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
    return png_uri(fig)


def _roc_panel(ax: Axes, study: Study, client: int, rnd: float, styles: dict[str, dict[str, Any]]) -> bool:
    """ROC curves of every arm at one round (mean over seeds by vertical
    averaging on a log FPR grid); False when no arm has scores there."""
    per_arm: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    n_neg = 1
    for arm in study.arms:
        for run in study.runs:
            g = (run.scores or {}).get((arm, float(rnd), client))
            pts = None if g is None else roc_points(g)
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


def roc_figure(study: Study, client: int, rounds: list[tuple[float, str]]) -> tuple[str | None, list[str]]:
    """ROC panels for (round, label) pairs; notes for rounds without scores."""
    styles = arm_styles(study.arms)
    fig = Figure(figsize=(5.2 * len(rounds), 4.0))
    notes = []
    drawn = 0
    for i, (rnd, label) in enumerate(rounds):
        ax = fig.add_subplot(1, len(rounds), i + 1)
        if _roc_panel(ax, study, client, rnd, styles):
            drawn += 1
            ax.set_title(f"client {client}, {label} (round {round_text(rnd)})", fontsize=10)
        else:
            notes.append(f"no scores for client {client} at round {round_text(rnd)} ({label})")
            ax.set_axis_off()
    return (png_uri(fig) if drawn else None), notes


def accuracy_figure(study: Study) -> str | None:
    return curve_figure(
        study, GLOBAL, "test_accuracy", "test accuracy per arm", "test accuracy", list(study.withdrawn.values())
    )


FRONTIER_AXES = (("speedup_steps", "speed-up over retraining, client steps (×, log)"),
                 ("speedup_wall", "speed-up over retraining, wall time (×, log)"))
FRONTIER_CAPTION = ("Cost–forgetting frontier: gap to retrain's MIA AUC right after the unlearning step against "
                    "speed-up over retraining to the event (client steps, wall time). Lower and further right is "
                    "better.")


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
    est = frontier_estimates(study, points, key)
    if not est:
        ax.set_axis_off()
        ax.text(0.5, 0.5, f"no {key} values", ha="center", va="center", transform=ax.transAxes, color="0.4")
        return False
    finite_xs = [1.0] + [v for _, x, _ in est for v in (x.mean, x.hi) if finite(v) and v > 0]
    inf_x = 2.0 * max(finite_xs)
    left = min([1.0] + [x.mean for _, x, _ in est if finite(x.mean) and x.mean > 0]
               + [x.lo for _, x, _ in est if finite(x.lo) and x.lo > 0]) / 1.8
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
        if not inf and finite(x.lo) and finite(x.hi):
            xerr = [[xm - max(x.lo, left)], [x.hi - xm]]
        if finite(y.lo) and finite(y.hi):
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
    top = max([0.01] + [v for _, _, y in est for v in (y.mean, y.hi) if finite(v)])
    ax.set_ylim(-0.06 * top, 1.18 * top)  # room for the labels above the highest point
    ax.set(xlabel=xlabel, ylabel="|MIA AUC − retrain's| at t − 0.5")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper left", fontsize=7, frameon=False)
    return True


def frontier_figure(study: Study, client: int, event_round: int, runs: Sequence[int] | None = None) -> str | None:
    """The cost–forgetting frontier of one withdrawn client (two panels: speed-up
    in client steps, in wall time); None when no method has a point. ``runs``:
    the indices of the runs to use (default all)."""
    points = frontier_points(study, client, event_round)
    if runs is not None:
        points = points[points["run"].isin(list(runs))]
    styles = arm_styles(study.arms)
    fig = Figure(figsize=(11.0, 3.8))
    drawn = 0
    for i, (key, xlabel) in enumerate(FRONTIER_AXES):
        ax = fig.add_subplot(1, len(FRONTIER_AXES), i + 1)
        if _frontier_panel(ax, study, points, key, xlabel, styles):
            drawn += 1
            ax.set_title(f"client {client}, event at round {event_round}: "
                         + ("client steps" if key == "speedup_steps" else "wall time"), fontsize=10)
    return png_uri(fig) if drawn else None
