"""The report of a sweep study: for each swept key, each method's gap to
retrain (MIA AUC, FR, forget and test accuracy) and speed-up against that key,
with across-seed 95% intervals, as one self-contained HTML page.

Each point pools every cell with that value of the key (the other keys' values
and the seeds) and every forgetting client: the marginal effect of the key.
The per-cell tables below the figures keep the cells apart: each method's
speed-up, and its paired verdicts against retrain per forgetting client (per
seed the difference to that seed's retrain, then its mean and t-interval over
the cell's seeds, judged against the margins of
:mod:`fedforget.analysis.verdicts`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fedforget.analysis.stats import across
from fedforget.analysis.tables import GAPS, STUDY_FILE, Results, gaps, load, study_table
from fedforget.analysis.verdicts import (
    VERDICT_LABELS,
    PairedVerdict,
    margin_of,
    paired_verdict,
)
from fedforget.report.figures import png_uri
from fedforget.report.html import CSS, SCRIPT, esc, figure_html, note_html, table_html
from fedforget.report.many_models import many_models_section, try_many_models


def _key_figure(g: pd.DataFrame, key: str, order: list[str]) -> str:
    panels = [(f"gap_{c}", t) for c, t in GAPS if f"gap_{c}" in g] + [("speedup_steps", "speed-up in client steps")]
    ncols = (len(panels) + 1) // 2
    fig = Figure(figsize=(4.4 * ncols, 7.0), layout="constrained")
    x = {v: i for i, v in enumerate(order)}
    for i, (col, title) in enumerate(panels):
        ax = fig.add_subplot(2, ncols, i + 1)
        data = g.replace([np.inf], np.nan) if col == "speedup_steps" else g
        summary = across(data, col, [key, "arm"])
        for j, (arm, s) in enumerate(summary.groupby("arm")):
            s = s.assign(pos=s[key].map(x)).sort_values("pos")
            off = (j - 0.5 * (summary.arm.nunique() - 1)) * 0.06
            err = np.vstack([s["mean"] - s.lo, s.hi - s["mean"]])
            ax.errorbar(s.pos + off, s["mean"], yerr=np.nan_to_num(err), marker="o", ms=4, capsize=3, label=arm)
        if col != "speedup_steps":
            ax.axhline(0.0, color="black", lw=0.8, ls="--")
        else:
            ax.set_yscale("log")
        ax.set_xticks(range(len(order)), [str(v)[:18] for v in order], rotation=20, fontsize=8)
        ax.set_xlabel(key)
        ax.set_title(title, fontsize=9)
    fig.axes[-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    caption = (f"Each method against {key}: mean over seeds, cells with that value and forgetting clients, "
               "with 95% t-intervals; dashed line: retrain (gap 0). Speed-ups of zero-cost steps (∞) are left out.")
    return figure_html(png_uri(fig), f"gaps to retrain against {key}", caption)


def _estimate(s: pd.DataFrame, col: str) -> str:
    r = across(s, col, ["arm"]).iloc[0]
    return f"{r['mean']:.3f} [{r.lo:.3f}, {r.hi:.3f}]" if r.n > 1 else f"{r['mean']:.3f}"


def _speedup_table(g: pd.DataFrame, axes: list[str]) -> str:
    rows = []
    for (cell, arm), s in g.groupby(["cell", "arm"]):
        free = np.isinf(s.speedup_steps).all()  # a step that cost nothing
        text = "∞" if free else _estimate(s.replace([np.inf], np.nan), "speedup_steps")
        rows.append([cell, *(s.iloc[0][k] for k in axes), arm, text, len(s)])
    return table_html(["cell", *axes, "method", "speed-up (steps)", "n"], rows)


def _verdict_of(row: Any) -> PairedVerdict:
    """A verdict-table row (a named tuple) back as a :class:`PairedVerdict`."""
    return PairedVerdict(row.metric, int(row.n_seeds), row.mean, row.lo, row.hi, row.margin, row.verdict,
                         row.seeds_to_decide)


def _verdict_rows(res: Results, axes: list[str]) -> list[list[Any]]:
    """One row per cell, method, forgetting client and metric with a pair at
    the event or at the last round."""
    keys = ["cell", *axes, "arm", "client", "metric"]
    table = pd.concat([res.verdicts("event"), res.verdicts("final")], ignore_index=True)
    rows = []
    for k, g in table.groupby(keys, sort=False):
        by_at = {r.at: _verdict_of(r) for r in g.itertuples(index=False)}
        pair = [by_at.get(at) or paired_verdict([], k[-1]) for at in ("event", "final")]
        if any(v.n for v in pair):
            rows.append([*k[:-1], f"{VERDICT_LABELS[k[-1]]} (± {margin_of(k[-1]):g})",
                         *(x for v in pair for x in (v.gap_text(), v.verdict_text())), max(v.n for v in pair)])
    return rows


VERDICT_CAPTION = (
    "Paired by seed: per seed a method's value minus that seed's retrain (same data, initialisation and client "
    "sampling), then the mean ± the half-width of its 95% t-interval over the cell's seeds. Equivalent: the "
    "interval lies inside ± the margin; worse / better: it does not, and excludes 0 on that side; undecided: it "
    "holds 0 and reaches past the margin, with the seeds that would decide it at the observed spread. Worse = higher MIA AUC, client-level z or forget "
    "accuracy, lower FR or test accuracy.")


def _verdict_table(root: Path, axes: list[str]) -> str:
    """Per cell, method and forgetting client, each metric's paired gap to
    retrain and its verdict right after the step and at the last round."""
    rows = _verdict_rows(load(root), axes)
    if not rows:
        return ""
    headers = ["cell", *axes, "method", "client", "metric (margin)", "gap at the event", "verdict at the event",
               "gap at the last round", "verdict at the last round", "seeds"]
    return ("<h3>Paired verdicts against retrain</h3>" + table_html(headers, rows)
            + f'<p class="small">{esc(VERDICT_CAPTION)}</p>')


def _many_models_part(root: Path, spec: dict[str, Any]) -> str:
    """Each cell's ε and U-LiRA (cells that are seeds runs on fixed data); one
    note with the reason when no cell has them."""
    out, reasons = [], set()
    for cell in spec["cells"]:
        result = try_many_models(root / cell["dir"])
        if isinstance(result, str):
            reasons.add(result.split(": ", 1)[-1])
            continue
        label = esc(", ".join(f"{k} = {v}" for k, v in cell["values"].items()))
        for client in sorted(result.summary.client.unique()):
            out.append(many_models_section(result, int(client)).replace("<h3>", f"<h3>cell {cell['cell']} ({label}): ", 1))
    if not out:
        return "<h3>Per-example privacy from many models</h3>" + note_html(
            "No ε or U-LiRA in this study: " + "; ".join(sorted(reasons)) + ".")
    return "<h3>Per-example privacy from many models</h3>" + "".join(out)


def render_study_report(root: str | Path) -> str:
    root = Path(root)
    spec = json.loads((root / STUDY_FILE).read_text())
    table = study_table(root)
    parts = [f"<h1>fedforget study: {esc(str(spec['config']))}</h1>",
             note_html(f"{len(spec['cells'])} cells × {spec['seeds']} seed(s); swept: "
                   + "; ".join(f"{k} ∈ {{{', '.join(v)}}}" for k, v in spec["axes"].items())
                   + (" (zipped)" if spec["zip"] else ""))]
    g = gaps(table) if not table.empty else table
    if g.empty:
        parts.append(note_html("No finished run with an unlearning method and event yet: nothing to compare.", "warn"))
    else:
        for key, values in spec["axes"].items():
            parts.append(f"<h2>{esc(key)}</h2>" + _key_figure(g, key, values))
        axes = list(spec["axes"])
        parts.append("<h2>By cell</h2>" + _speedup_table(g, axes) + _verdict_table(root, axes))
        parts.append(_many_models_part(root, spec))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>fedforget study</title>"
            f"<style>{CSS}</style><script>{SCRIPT}</script></head><body>" + "".join(parts) + "</body></html>\n")


def write_study_report(root: str | Path) -> Path:
    root = Path(root)
    out = root / "report.html"
    tmp = root / ".report.html.tmp"
    tmp.write_text(render_study_report(root), encoding="utf-8")
    tmp.replace(out)
    return out
