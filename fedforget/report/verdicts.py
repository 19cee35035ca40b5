"""The run report's verdict pieces, per withdrawn client: the client-level
test's "detected / not detected" with its power, the methods' paired verdicts
against retrain, and relapse (forgetting that the federation re-teaches).

A p-value above the test's level reads "not detected", never "forgotten": a
test that misses a trace has not shown there is none. The power line says how
large a trace could hide (``client_mia_mde``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from fedforget.analysis.runs import ACROSS_SEEDS_LABEL, Run, Study
from fedforget.analysis.stats import NAN, NO_SIGNAL, event_point, round_text
from fedforget.analysis.verdicts import (
    DETECTION_LEVEL,
    RELAPSE_OF,
    VERDICT_LABELS,
    VERDICT_METRICS,
    PairedVerdict,
    margin_of,
)
from fedforget.report.html import esc, note_html, table_html
from fedforget.schedule import RETRAIN


def p_text(p: float) -> str:
    """A p-value: "<0.001" below 0.001, else 3 decimals; "n/a" when missing."""
    if not np.isfinite(p):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def detection_text(p: float) -> str:
    """What a client-level p says: "detected" below the test's level, else
    "not detected" (never "forgotten")."""
    return "detected" if p < DETECTION_LEVEL else "not detected"


def median_of(values: Sequence[float]) -> tuple[float, int]:
    """Median of the finite values and how many there were (NaN, 0 for none)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    return (float(np.median(x)), int(x.size)) if x.size else (NAN, 0)


def p_cell(study: Study, values: Sequence[float]) -> str:
    """A p-value cell from per-run values: the one run's p, or the median over
    the seeds that have one (noting how many when some have none), and whether
    the test detected the client."""
    p, n = median_of(values)
    if n == 0:
        return "n/a"
    text = p_text(p)
    if study.across_seeds:
        text += f" (median{'' if n == len(values) else f', {n} of {len(values)} seeds'})"
    return f"{text}, {detection_text(p)}"


# ------------------------------------------------------------------ power


def _power_line(study: Study, arm: str, client: int, where: str, rnd: float, p: float) -> str:
    mde, n = median_of([r.value(arm, rnd, client, "client_mia_mde") for r in study.runs])
    medians = " (medians over the seeds)" if study.across_seeds else ""
    power = (f"the test detects a shift ≥ {mde:#.3g} in mean score 80% of the time at this client's size and pool"
             if n else "its power is unknown (no client_mia_mde in this run)")
    return f"{arm} {where} (round {round_text(rnd)}): p = {p_text(p)}, not detected{medians}; {power}."


def power_lines(study: Study, client: int, event_round: int) -> str:
    """One line per arm and point (right after the step, last round) where the
    client-level test did not detect the client, with the test's power there."""
    points = (("right after the step", event_point(event_round)), ("at the last round", study.last_round))
    lines = []
    for arm in study.arms:
        for where, rnd in points:
            p, n = median_of([r.value(arm, rnd, client, "client_mia_pvalue") for r in study.runs])
            if n and p >= DETECTION_LEVEL:
                lines.append(_power_line(study, arm, client, where, rnd, p))
    if not lines:
        return ""
    head = (f"Client-level test, not detected (p ≥ {DETECTION_LEVEL}): the test found no trace of client {client}; "
            "that is no proof of forgetting. Its power there:")
    return f'<p class="small">{esc(head)}</p><ul class="small">' + "".join(
        f"<li>{esc(line)}</li>" for line in lines) + "</ul>"


# --------------------------------------------------------------- verdicts


def _gap_cell(study: Study, v: PairedVerdict) -> str:
    """The paired gap, noting how many seeds paired when some could not."""
    some = 0 < v.n < len(study.runs)
    return v.gap_text() + (f" ({v.n} of {len(study.runs)} seeds)" if some else "")


def _verdict_row(study: Study, arm: str, client: int, metric: str, rounds: tuple[float, float]) -> list[str] | None:
    pair = [study.paired(arm, client, metric, r) for r in rounds]
    if all(v.n == 0 and v.verdict != NO_SIGNAL for v in pair):
        return None  # neither arm has the metric here
    label = f"{VERDICT_LABELS[metric]} (± {margin_of(metric):g})"
    return [arm, label, *(x for v in pair for x in (_gap_cell(study, v), v.verdict_text()))]


VERDICT_HEADERS = ["method", "metric (margin)", "gap at the event", "verdict at the event", "gap at the last round",
                   "verdict at the last round"]


def _verdict_caption(study: Study, event_round: int) -> str:
    at, T = round_text(event_point(event_round)), round_text(study.last_round)
    spread = (f"the mean of the per-seed differences ± the half-width of its {ACROSS_SEEDS_LABEL} over "
              f"{len(study.runs)} seeds" if study.across_seeds else
              "one seed: its difference, with no interval to judge by (--seeds N gives paired verdicts)")
    return (f"Paired by seed: per seed, the method's value minus retrain's (same data, initialisation and client "
            f"sampling), at the event (round {at}, right after the unlearning step) and at the last round (round "
            f"{T}); {spread}. Equivalent: the interval lies inside ± the margin; worse / better: it does not, and it "
            "excludes 0 on that side; undecided: it holds 0 and reaches past the margin, with the number of "
            "seeds that would decide it at the observed mean and spread. Worse = higher MIA AUC, client-level z or forget accuracy (the "
            "model remembers more of the client), lower FR or test accuracy. \"Better\" on AUC, z or forget "
            "accuracy lies below retrain: the over-unlearning side.")


def verdict_section(study: Study, client: int, event_round: int) -> str:
    """Per method and verdict metric, the paired gap to retrain with its
    interval and verdict, right after the step and at the last round."""
    if RETRAIN not in study.arms:
        return ""
    rounds = (event_point(event_round), study.last_round)
    rows = [row for arm in study.methods for metric in VERDICT_METRICS
            if (row := _verdict_row(study, arm, client, metric, rounds)) is not None]
    if not rows:
        return ""
    return (f"<h3>Paired verdicts against retrain, client {client}</h3>" + table_html(VERDICT_HEADERS, rows)
            + f'<p class="small">{esc(_verdict_caption(study, event_round))}</p>')


# ---------------------------------------------------------------- relapse


def _last(series: pd.Series) -> float:
    return float(series.iloc[-1]) if len(series) else NAN


def _relapse_sentence(study: Study, arm: str, client: int, at: float, flagged: list[Run]) -> str:
    """The first flagged run's story: p right after the step, then the first later detection."""
    run = flagged[0]
    p = run.curve(arm, client, "client_mia_pvalue")
    later = p[(p.index > at) & (p < DETECTION_LEVEL)]
    again = (f"detected again at round {round_text(later.index[0])} (p = {p_text(float(later.iloc[0]))})"
             if len(later) else "detected again later")
    seeds = f" (seed {run.seed}; flagged in {len(flagged)} of {len(study.runs)} seeds)" if study.across_seeds else ""
    return (f"{arm}{seeds}: not detected right after its step (p = {p_text(float(p.get(at, NAN)))}), {again}: "
            "the federation re-taught what it was meant to forget.")


def relapse_flags(study: Study, client: int, event_round: int) -> list[str]:
    """One sentence per method whose ``relapse_flag`` is 1 in some run."""
    at = event_point(event_round)
    out = []
    for arm in study.methods:
        flagged = [r for r in study.runs if _last(r.curve(arm, client, "relapse_flag")) == 1]
        if flagged:
            out.append(_relapse_sentence(study, arm, client, at, flagged))
    return out


RELAPSE_HEADERS = ["method", *(h for k in RELAPSE_OF for h in (VERDICT_LABELS[k], f"{VERDICT_LABELS[k]} verdict"))]


def _relapse_caption(study: Study, event_round: int) -> str:
    over = f"mean ± half-width of its {ACROSS_SEEDS_LABEL}" if study.across_seeds else "one seed, no interval"
    return (f"Relapse: per seed, the method's gap to retrain at the last round (round {round_text(study.last_round)}) "
            f"minus its gap right after its step (round {round_text(event_point(event_round))}), for the MIA AUC "
            f"(relapse_auc, margin ± {margin_of('relapse_auc'):g}) and the client-level z (relapse_z, margin "
            f"± {margin_of('relapse_z'):g}); {over}. Positive: the gap grew after the step, the federation "
            "re-taught the client (worse); about 0: what the step removed stayed removed.")


def relapse_section(study: Study, client: int, event_round: int) -> str:
    """The methods' relapse over seeds with verdicts, and a sentence per flagged method."""
    rows = []
    for arm in study.methods:
        vs = [study.relapse(arm, client, k) for k in RELAPSE_OF]
        if any(v.n for v in vs):
            rows.append([arm, *(x for v in vs for x in (_gap_cell(study, v), v.verdict_text()))])
    flags = relapse_flags(study, client, event_round)
    if not rows and not flags:
        return ""
    table = table_html(RELAPSE_HEADERS, rows) + f'<p class="small">{esc(_relapse_caption(study, event_round))}</p>'
    return (f"<h3>Relapse, client {client}</h3>" + (table if rows else "")
            + "".join(f'<p class="flag">{esc(f"relapse: {s}")}</p>' for s in flags)
            + (note_html(RELAPSE_NOTE) if flags else ""))


RELAPSE_NOTE = ("Relapse: the client-level test did not detect the client right after the method's unlearning "
                "step but did at a later round. The later rounds trained only on the remaining clients, yet the "
                "client's trace came back: a model the federation re-teaches was not unlearned.")
