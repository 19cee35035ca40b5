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

Per withdrawn client and method, a table of paired verdicts against retrain
(:mod:`fedforget.analysis.verdicts`: per seed the difference method − retrain,
its mean and t-interval over seeds, equivalent / worse / better / undecided
against margins declared once) right after the step and at the last round, and,
where the run has them, the methods' relapse (``relapse_auc``, ``relapse_z``)
with one sentence per method flagged by ``relapse_flag``.

Where the run has the client-level membership test (``client_mia_pvalue``), the
method table adds its p-value at ``t - 0.5`` and at the last round and the
controls table at the last round ("<0.001" below 0.001; across seeds the
median), each read as "detected" or "not detected" (never "forgotten"), and a
not-detected p comes with the test's power (``client_mia_mde``). Witness AUC
and FR cells read "no signal" when original's witness AUC interval at
calibration includes 0.5. A client whose event plants a ``backdoor`` witness gets its
``witness_accuracy`` labelled as backdoor success on triggered test samples and
a backdoor-success curve.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedforget.analysis.many_models import ManyModels
from fedforget.analysis.outcomes import TPR_MIN_NEGATIVES, has_speedups, row_values
from fedforget.analysis.runs import (
    ACROSS_SEEDS_LABEL,
    ORACLE_SAMPLING_LABEL,
    Study,
    load_study,
)
from fedforget.analysis.stats import (
    NAN,
    NO_SIGNAL,
    SIGNAL_AUC,
    Estimate,
    bounds,
    estimate_of,
    event_point,
    finite,
    round_text,
    t_interval,
)
from fedforget.analysis.verdicts import DETECTION_LEVEL, VERDICT_LABELS, VERDICT_MARGINS
from fedforget.report.figures import (
    FRONTIER_CAPTION,
    accuracy_figure,
    curve_figure,
    frontier_figure,
    roc_figure,
)
from fedforget.report.html import CSS, SCRIPT, esc, figure_html, note_html, table_html
from fedforget.report.many_models import many_models_section, try_many_models
from fedforget.report.text import headline_lines
from fedforget.report.verdicts import (
    p_cell,
    power_lines,
    relapse_section,
    verdict_section,
)
from fedforget.results import atomic_write
from fedforget.schedule import ORIGINAL, RETRAIN


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
        parts.append(round_text(rs[i]) if i == j else f"{round_text(rs[i])}–{round_text(rs[j])}")
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
    return text + (f" ({study.interval_label})" if finite(est.lo) and finite(est.hi) else "")


def _header(study: Study, headline: str = "") -> str:
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
        ("rounds", str(sc.get("train", {}).get("rounds", round_text(study.last_round)))),
        ("events", _events_text(sc, study)),
        ("data", f"{data.get('dataset', '?')}, {data.get('num_clients', '?')} clients, {data.get('partitioner', '?')}"),
        ("run directory", str(study.root.resolve())),
    ]
    if study.withdrawn:  # what only a run with events has
        rows[4:4] = [("methods", ", ".join(unl.get("methods", [])) or "none"),
                     ("recovery rounds", str(unl.get("recovery_rounds", "n/a"))),
                     ("membership attack", str(sc.get("oracle", {}).get("attack", "n/a")))]
    table = "<table class=\"meta\"><tbody>" + "".join(
        f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows
    ) + "</tbody></table>"
    interval = note_html(_interval_text(study)) if study.withdrawn or study.across_seeds else ""
    return f"<h1>fedforget report: {esc(str(sc.get('name', '?')))}</h1>{headline}{table}{interval}"


def _warnings(study: Study) -> str:
    seen: dict[str, list[Any]] = {}
    for run in study.runs:
        for ev in run.events:
            if ev.get("event") in ("warning", "error"):
                seen.setdefault(str(ev.get("message", ev)), []).append(run.seed)
    items = [f"{p.name}: no finished run there; left out of this report" for p in study.skipped]
    for msg, seeds in seen.items():
        where = f" (seeds {', '.join(str(s) for s in seeds)})" if study.multi_seed else ""
        items.append(f"{msg}{where}")
    if not items:
        return ""
    # One collapsed list: the verdict, not the caveats, opens the report.
    lis = "".join(f"<li>{esc(i)}</li>" for i in items)
    return (f'<details class="warn"><summary>{len(items)} warning{"s" if len(items) > 1 else ""} '
            f"(click to read)</summary><ul class=\"small\">{lis}</ul></details>")


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
    return note_html(
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
                notes.append(note_html(f"Arm {ev['arm']} diverged{seed} in {ev['what']}; it is frozen from round "
                                   f"{round_text(float(ev['round']))} on and its curves stop there.", "warn"))
    return "".join(notes)


def _signal_check(study: Study, client: int, event_round: int) -> str:
    """Did the oracle see the client before it left? Does retrain look like chance?"""
    T = study.last_round
    cal = study.calibration_round(client)
    before = study.value(ORIGINAL, cal, client, "mia_auc")
    where = f"original, round {round_text(cal)}, the calibration model"
    parts = []
    if not finite(before.mean):
        parts.append(note_html(
            f"Signal check: no oracle value for original at round {round_text(cal)} (the calibration "
            f"model), so it is unknown whether the oracle could see client {client} at all.", "warn"))
    elif before.mean >= SIGNAL_AUC:
        parts.append(note_html(
            f"Signal check: before the withdrawal ({where}) the oracle's MIA AUC on client {client} is "
            f"{_labelled(study, before)}, at least {SIGNAL_AUC}: the oracle did see this client, so FR is "
            "meaningful.", "ok"))
    else:
        parts.append(note_html(
            f"Signal check: before the withdrawal ({where}) the oracle's MIA AUC on client {client} is only "
            f"{_labelled(study, before)}, below {SIGNAL_AUC}: {NO_SIGNAL}. The oracle could barely tell this "
            "client's samples from non-members even before it left, so there was little to forget; its FR "
            f"cells (every arm) read \"{NO_SIGNAL}\" rather than a forgetting rate. A more memorisation-prone "
            "setup (fewer samples per client, more local epochs or rounds) or a stronger membership oracle "
            "would give FR a signal."
            + (" (An AUC below 0.5 means its samples looked less like members than the non-members did, "
               "e.g. when planted witness labels make them look unlike training data.)"
               if before.mean < 0.5 else ""), "warn"))
    if study.across_seeds and finite(before.mean):
        low = sum(s is False for s in study.signal(client))
        if low:
            parts.append(note_html(
                f"In {low} of {len(study.runs)} seeds that AUC is below {SIGNAL_AUC}: {NO_SIGNAL} there, so "
                "those seeds are left out of this client's FR values.", "warn"))
    parts.append(_witness_signal_check(study, client))
    ref = study.value(RETRAIN, T, client, "mia_auc")
    if finite(ref.mean):
        text = (f"Retrain at the last round (round {round_text(T)}): MIA AUC {_labelled(study, ref)} on client "
                f"{client}; near 0.5 is expected, since that model never saw the client.")
        if finite(ref.lo) and not ref.lo <= 0.5 <= ref.hi:
            text += (" Its interval excludes 0.5: members and non-members differ in more than membership, "
                     "so read the other arms' AUC relative to retrain's, not to 0.5.")
        parts.append(note_html(text))
    return "".join(parts)


def _witness_signal_check(study: Study, client: int) -> str:
    """Did the oracle tell the planted witnesses from witness non-members at
    calibration? Its witness columns read "no signal" where original's witness
    AUC interval there includes 0.5."""
    signal = study.witness_signal(client)
    if all(s is None for s in signal):
        return ""
    cal = study.calibration_round(client)
    auc = _labelled(study, study.value(ORIGINAL, cal, client, "witness_mia_auc"))
    where = f"original's witness AUC at calibration (round {round_text(cal)}) is {auc}"
    silent = sum(s is False for s in signal)
    per_seed = " in every seed, its bootstrap interval" if study.across_seeds else " its interval"
    if not silent:
        return note_html(f"Witness signal check: {where};{per_seed} excludes 0.5, so the oracle sees the "
                         "planted witnesses and the witness AUC and FR are meaningful.", "ok")
    if silent < len(signal):
        return note_html(f"Witness signal check: {where}. In {silent} of {len(signal)} seeds its bootstrap "
                         f"interval includes 0.5: {NO_SIGNAL} there, so those seeds are left out of the witness "
                         "AUC and FR cells.", "warn")
    return note_html(f"Witness signal check: {where};{per_seed} includes 0.5: {NO_SIGNAL}. The oracle could "
                     "not tell the planted witnesses from witness non-members even before the client left, so "
                     f"the witness AUC and FR cells read \"{NO_SIGNAL}\".", "warn")


@dataclass(frozen=True)
class Column:
    header: str
    key: str
    digits: int = 3
    interval: bool = True  # False: mean only (costs)
    title: str = ""
    kind: str = "outcome"  # "outcome", "cost", "speedup", "witness", "client_p"
    signal: str = ""  # "fr" / "witness_mia_auc": "no signal" where the oracle did not see the client / its witnesses
    retrain_key: str = ""  # cost columns: what the retrain (yardstick) row shows; "" = "—"


COLUMNS = (
    Column("FR at the event", "fr@event", signal="fr", title="forgetting rate right after the unlearning step "
           "(round t − 0.5, before round t): the unlearning step alone"),
    Column("MIA AUC at the event", "mia_auc@event", title="membership-inference ROC AUC right after the "
           "unlearning step (round t − 0.5)"),
    Column("client p at the event", "client_mia_pvalue@event", kind="client_p", title="client-level membership "
           "test right after the unlearning step (round t − 0.5): one-sided p-value of the client's mean score "
           "against never-trained data of its label histogram (below 0.05: detected, the client's data is still "
           "in the model; above: not detected)"),
    Column("client p at the last round", "client_mia_pvalue", kind="client_p", title="client-level membership "
           "test at the last round: one-sided p-value (below 0.05: detected, the client's data is still in the "
           "model; above: not detected, which is not proof of forgetting; a model that never saw the client "
           "gives a roughly uniform p)"),
    Column("final FR", "fr", signal="fr", title="forgetting rate at the last round: net share of the samples "
           "flagged as members at calibration that the oracle no longer flags (1 = all forgotten)"),
    Column("FR (fixed FPR)", "fr_fixed_fpr", signal="fr", title="FR at the last round with the threshold "
           "re-chosen so the non-members' false-positive rate equals its calibration value; about 0 for a "
           "model whose member and non-member scores merely drift together"),
    Column("final MIA AUC", "mia_auc", title="membership-inference ROC AUC on the client's samples vs "
           "non-members at the last round (0.5 = chance)"),
    Column("TPR @ 1% FPR", "tpr_at_1pct_fpr", title="true positive rate at 1% false positive rate "
           "(n/a with fewer than 1,000 non-members)"),
    Column("TPR @ 0.1% FPR", "tpr_at_0.1pct_fpr", title="true positive rate at 0.1% false positive rate "
           "(n/a with fewer than 10,000 non-members)"),
    Column("test acc", "test_accuracy", title="global test accuracy at the last round"),
    Column("forget acc", "forget_accuracy", title="accuracy on the withdrawn client's train samples"),
    Column("retain acc", "retain_accuracy", title="accuracy on the remaining clients' train samples"),
    Column("witness acc", "witness_accuracy", kind="witness", title="share of witness samples predicted "
           "with their planted label"),
    Column("witness AUC", "witness_mia_auc", kind="witness", signal="witness_mia_auc", title="membership AUC "
           "of the planted witness members against witnesses planted on audit samples, with its interval; "
           "\"no signal\" when original's witness AUC interval at calibration includes 0.5"),
    Column("witness FR", "witness_fr", kind="witness", signal="witness_mia_auc"),
    Column("witness FR (fixed FPR)", "witness_fr_fixed_fpr", kind="witness", signal="witness_mia_auc"),
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


def _cell(study: Study, values: list[dict[str, float]], col: Column, usable: list[bool] | None = None,
          key: str | None = None) -> Estimate:
    """A table cell from per-run values, leaving out the runs not ``usable``
    (FR or witness values without signal)."""
    key = key or col.key
    lo, hi = bounds(key)
    return estimate_of([v[key] for v in values], [v.get(lo, NAN) for v in values],
                        [v.get(hi, NAN) for v in values], study.across_seeds, usable)


BACKDOOR_HEADER = "backdoor success (triggered test)"
BACKDOOR_TITLE = ("attack success of the client's backdoor: share of triggered test samples classified as the "
                  "backdoor's target label, at the last round (retrain, which never saw the trigger, is the target)")
P_MEDIAN_TITLE = (" With several seeds: the median p over the seeds (p-values are skewed, so no mean ± interval); "
                  "one seed: its p.")


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
    t = round_text(event_round)
    at = round_text(event_point(event_round))
    per_arm = {a: [row_values(r, a, client, T, event_round) for r in study.runs] for a in study.arms}
    has_witness = any(finite(v[k]) for vs in per_arm.values() for v in vs
                      for k in ("witness_accuracy", "witness_mia_auc", "witness_fr", "witness_fr_fixed_fpr"))
    has_client_p = {k: any(finite(v[k]) for vs in per_arm.values() for v in vs)
                    for k in ("client_mia_pvalue@event", "client_mia_pvalue")}
    outcome_cols = [c for c in COLUMNS if (c.kind == "outcome" and _any_value(per_arm, c.key))
                    or (c.kind == "witness" and has_witness) or (c.kind == "client_p" and has_client_p[c.key])]
    usable = {c.key: study.usable(client, c.signal) if c.signal else None for c in outcome_cols}
    order = [a for a in (*study.methods, RETRAIN, ORIGINAL) if a in per_arm]
    rows, classes = [], []
    for arm in order:
        ref = arm in (ORIGINAL, RETRAIN)
        row = [arm + (" (reference)" if ref else "")]
        for col in outcome_cols:
            if col.kind == "client_p":
                row.append(p_cell(study, [v[col.key] for v in per_arm[arm]]))
                continue
            row.append(_cell(study, per_arm[arm], col, usable[col.key]).text(col.digits))
        row.append("" if ref else _flag_text(study, per_arm[arm]))
        rows.append(row)
        classes.append("ref" if ref else "")
    caption = (f"\"At the event\": round {at}, right after the unlearning step (before round {t}); the other "
               f"columns at the last round (round {round_text(T)}). {_interval_caption(study)}")
    signal = study.usable(client, "fr")
    if signal is not None and not any(signal):
        caption += f" FR cells read \"{NO_SIGNAL}\": the oracle did not see this client at calibration."
    if any(c.kind == "client_p" for c in outcome_cols):
        caption += (" Client p: the client-level membership test's p-value (\"<0.001\" below 0.001)"
                    + (", median over the seeds" if study.across_seeds else "")
                    + f"; below {DETECTION_LEVEL}: detected, otherwise not detected (no proof of forgetting: see "
                    "the test's power below).")
    views = [_column_view(study, c, client) for c in outcome_cols]
    headers = ["arm", *(h for h, _ in views), "flags"]
    titles = ["", *(t for _, t in views), "over-unlearning at the last round"]
    out = [
        *_split_table(headers, rows, titles, classes, [c.key in ACCURACY_KEYS for c in outcome_cols], trailing=1),
        f'<p class="small">{esc(caption)}</p>',
        *_over_unlearning_lines(study, client, T),
        power_lines(study, client, event_round),
    ]
    if study.methods:
        out += [verdict_section(study, client, event_round), relapse_section(study, client, event_round)]
        out += _cost_table(study, client, event_round, per_arm)
    return "".join(out)


#: Outcome columns shown in the second table (accuracies and witnesses), so that
#: each table fits a 1,400-px window.
ACCURACY_KEYS = {"test_accuracy", "forget_accuracy", "retain_accuracy", "witness_accuracy", "witness_mia_auc",
                 "witness_fr", "witness_fr_fixed_fpr"}


def _any_value(per_arm: dict[str, list[dict[str, float]]], key: str) -> bool:
    """A column with no value in any arm and seed (e.g. a TPR the non-member
    count cannot support) is left out rather than shown as n/a everywhere."""
    return any(finite(v.get(key, NAN)) for vs in per_arm.values() for v in vs)


def _split_table(headers: list[str], rows: list[list[str]], titles: list[str], classes: list[str],
                 second: list[bool], trailing: int = 0) -> list[str]:
    """One arm table as two, so that each fits the window: the columns not in
    ``second`` (and the ``trailing`` last ones, e.g. flags), then those in
    ``second``; the first column (the arm) heads both."""
    n = len(second)
    first_idx = [0, *(i + 1 for i, s in enumerate(second) if not s), *range(n + 1, n + 1 + trailing)]
    second_idx = [0, *(i + 1 for i, s in enumerate(second) if s)]
    return [table_html([headers[i] for i in idx], [[r[i] for i in idx] for r in rows],
                       titles=[titles[i] for i in idx], row_classes=classes)
            for idx in (first_idx, second_idx) if len(idx) > 1]


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
        if any(finite(x) for x in to_end.values()):
            caption.append(
                f"Retraining to the end of the run (round {round_text(study.last_round)}){mean_of}: "
                f"{Estimate(to_end['retrain_steps_to_end']).text(0)} client steps, "
                f"{Estimate(to_end['retrain_bytes_to_end']).text(2)} MB, "
                f"{Estimate(to_end['retrain_wall_s_to_end']).text(2)} wall s.")
    if study.across_seeds:
        caption.append(f"Speed-ups: mean ± half-width, {ACROSS_SEEDS_LABEL}.")
    tables = _split_table(["method", *(c.header for c in cost_cols)], rows, ["", *(c.title for c in cost_cols)],
                          classes, [c.kind == "speedup" for c in cost_cols])
    return [f"<h3>Cost of unlearning, client {client}</h3>", *tables,
            *(f'<p class="small">{esc(line)}</p>' for line in caption)]


def _frontier_section(study: Study, client: int, event_round: int) -> str:
    """The cost–forgetting frontier of one withdrawn client: the figure, or a
    note when the oracle did not see the client (then the gap to retrain says
    nothing about forgetting) or no method has a point. Seeds without signal
    are left out, as in the FR cells."""
    at = round_text(event_point(event_round))
    head = f"<h3>Cost–forgetting frontier, client {client}</h3>"
    signal = study.signal(client)
    if all(s is False for s in signal):
        return head + note_html(
            f"Cost–forgetting frontier: not drawn, {NO_SIGNAL} (the oracle did not see this client at "
            "calibration), so the gap to retrain's MIA AUC says nothing about forgetting.", "warn")
    runs = [i for i, s in enumerate(signal) if s is not False]
    uri = frontier_figure(study, client, event_round, runs)
    if uri is None:
        return head + note_html(f"Cost–forgetting frontier: no method has both a speed-up and an MIA AUC gap to "
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
    return head + figure_html(uri, f"cost–forgetting frontier, client {client}", " ".join(caption))


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
            detail += "" if at_end else f"; not at the last round ({round_text(T)})"
        lines.append(f'<p class="flag">{esc(f"over-unlearning: {m} on client {client}")}'
                     f' <span class="small">({esc(detail)})</span></p>')
    if lines:
        lines.append(note_html(
            "Over-unlearning: the method's MIA AUC fell below retrain's interval, or its forget accuracy fell "
            "below retrain's by more than the 95% interval of the difference of the two accuracies (a noise "
            "model on the client's forget samples, not a fixed number of points): it removed more than a model "
            "that never saw the client, which itself leaks that the client was there."))
    return lines


def _has_scores(study: Study, rnd: float) -> bool:
    return any(k[1] == float(rnd) for r in study.runs for k in (r.scores or {}))


def _client_section(study: Study, client: int, event_round: int, many: ManyModels | str | None = None) -> str:
    T = study.last_round
    at = event_point(event_round)
    kind = study.event_kind.get(client, "withdraw")
    heading = (
        f"Withdrawn client {client} (withdraws at round {event_round})"
        if kind == "withdraw"
        else f"Client {client} ({kind} at round {event_round}: audited on its deleted samples)"
    )
    out = [f"<h2>{heading}</h2>",
           _signal_check(study, client, event_round)]
    band = f" Shaded: {study.interval_label}."
    event_line = (f"dotted red line at round {round_text(at)}: the withdrawal and unlearning step; the points on "
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
            out.append(note_html(f"{title}: not drawn, {NO_SIGNAL} (the oracle did not see this client at "
                             "calibration), so its FR is not a forgetting rate.", "warn"))
            continue
        uri = curve_figure(study, client, metric, title, ylabel, [event_round], hline)
        out.append(figure_html(uri, title, caption) if uri else note_html(f"No {ylabel} values for client {client}."))
    if study.witness(client) == "backdoor":
        title = f"client {client}: backdoor success vs round"
        uri = curve_figure(study, client, "witness_accuracy", title, "backdoor success", [event_round])
        out.append(figure_html(uri, title, "Backdoor attack success by round: share of triggered test samples "
                           "classified as the backdoor's target label; retrain (black, dashed), which never saw "
                           f"the trigger, is the reference; {event_line}{band}")
                   if uri else note_html(f"No backdoor success values for client {client}."))
    out.append(f"<h3>ROC curves, client {client}</h3>")
    if all(r.scores is None for r in study.runs):
        out.append(note_html("No scores.parquet in this run directory (oracle.scores = false?): ROC curves skipped."))
    else:
        first = (at, "right after unlearning") if _has_scores(study, at) else (float(event_round), "event round")
        uri, notes = roc_figure(study, client, [first, (T, "last round")])
        if uri:
            caption = "ROC of the membership oracle per arm (log FPR axis)" + (
                "; mean TPR over seeds at each FPR" if study.across_seeds else "") + "."
            out.append(figure_html(uri, f"ROC curves, client {client}", caption))
        out += [note_html(n) for n in notes]
    out.append(f"<h3>Methods, client {client}</h3>")
    out.append(_method_table(study, client, event_round))
    if study.methods and has_speedups(study, event_round):
        out.append(_frontier_section(study, client, event_round))
    if many is not None:
        out.append(many_models_section(many, client))
    return "".join(out)


def _controls_section(study: Study) -> str:
    controls = study.controls
    if not controls:
        return ""
    T = study.last_round
    metrics = (("FR", "fr"), ("FR (fixed FPR)", "fr_fixed_fpr"), ("MIA AUC", "mia_auc"))
    with_p = {c for c in controls
              if any(finite(r.value(a, T, c, "client_mia_pvalue")) for r in study.runs for a in study.arms)}
    # One table per control client: side by side they overflow a 1,400-px window.
    tables = []
    for c in controls:
        headers = ["arm", *(f"client {c} {h}" for h, _ in metrics)] + (
            [f"client {c} client p at the last round"] if c in with_p else [])
        rows = [[arm, *(study.value(arm, T, c, m).text() for _, m in metrics)]
                + ([p_cell(study, [r.value(arm, T, c, "client_mia_pvalue") for r in study.runs])] if c in with_p
                   else [])
                for arm in study.arms]
        tables.append(table_html(headers, rows))
    silent = [c for c in controls if all(s is False for s in study.signal(c))]
    notes = [f"At the last round (round {round_text(T)}). {_interval_caption(study)}"]
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
        + note_html("Clients that never withdraw, audited by the same kind of oracle. Their FR should stay near 0: "
                "a large FR here means the model drifted rather than forgot; FR (fixed FPR) discounts that drift.")
        + "".join(tables)
        + "".join(f'<p class="small">{esc(n)}</p>' for n in notes)
    )


def _global_section(study: Study) -> str:
    uri = accuracy_figure(study)
    caption = "Global test accuracy by round."
    if study.withdrawn:
        caption += (" Dotted red line at t − 0.5: the withdrawal and unlearning step (the points on it are every "
                    "arm right after that step).")
    fig = figure_html(uri, "test accuracy per arm", caption) if uri else note_html("No test accuracy values.")
    return "<h2>Test accuracy</h2>" + fig


def _margins_text() -> str:
    return ", ".join(f"{VERDICT_LABELS[m]} ± {x:g}" for m, x in VERDICT_MARGINS.items())


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
        "<b>Paired verdicts against retrain</b>: one seed gives a method and retrain the same data, "
        "initialisation and client sampling, so they are compared seed by seed: the per-seed difference "
        "method − retrain, then its mean and 95% t-interval over the seeds. Against a margin declared once "
        f"({_margins_text()}): <i>equivalent</i> when the interval lies inside ± the margin, <i>worse</i> or "
        "<i>better</i> when it does not and excludes 0 on that side (the method differs from retrain by more "
        "than the margin lets us ignore), <i>undecided</i> when it holds 0 and reaches past the margin, with "
        "the number of seeds that would decide it at the observed spread. Worse = higher MIA AUC, client-level z or forget accuracy, lower FR or test accuracy. One "
        "seed has no interval and no verdict.",
        f"<b>Client-level test</b> (<code>client_mia_z</code>, <code>client_mia_pvalue</code>, "
        "<code>client_mia_mde</code>): is this client's data still in the model? The statistic is the shift "
        "of the client's mean per-sample score (−loss) over never-trained data of the same label histogram "
        "(every client's audit part and the test set), class by class; p is its one-sided p-value under a null "
        "that accounts for both samples, the client's and the pool's, and z the shift in null standard "
        "deviations. The null is fixed once per event and reused for every arm and round. p below "
        f"{DETECTION_LEVEL}: <i>detected</i>, the client's data is still in the model. Above: <i>not "
        "detected</i>, which is not proof of forgetting: the report then gives the test's power, the smallest "
        "shift of the mean score it detects 80% of the time at that client's size and pool "
        "(<code>client_mia_mde</code>); a smaller trace could still hide. A model that never saw the client "
        "(retrain) gives a roughly uniform p. With several seeds the tables show the median p.",
        "<b>Relapse</b> (<code>relapse_auc</code>, <code>relapse_z</code>): a method's gap to retrain at the "
        "last round minus its gap right after its step. Recovery rounds train only on the remaining clients, "
        "yet they can bring the withdrawn client's trace back. A method not detected right after its step and "
        "detected later is flagged with one sentence. It matters because the model the federation keeps is the "
        "one after those rounds: a model the federation re-teaches was not unlearned, however clean it looked "
        "right after the step.",
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
    return "<h2 id=\"how-to-read\">How to read this report</h2><ul class=\"small\">" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


def headline_html(run_dir: Path) -> str:
    """The verdict first: one line per withdrawn client, and where to read more."""
    items = "".join(f"<li>{esc(line)}</li>" for line in headline_lines(run_dir))
    return (f'<div class="headline"><b>Verdict</b><ul>{items}</ul><span class="small">Margins and how these are '
            'judged: <a href="#how-to-read">how to read this report</a>.</span></div>')


def render_report(run_dir: str | Path) -> str:
    """The report of a run (or multi-seed) directory as one HTML string."""
    study = load_study(run_dir)
    return _render(study, _many_models_of(study))


def _many_models_of(study: Study) -> ManyModels | str | None:
    """ε and U-LiRA of a seeds directory (or why there are none), from the
    runs the study has loaded; None for one run."""
    return try_many_models(study.root, runs=study.runs) if study.multi_seed and study.withdrawn else None


def _render(study: Study, many: ManyModels | str | None) -> str:
    parts = [_header(study, headline_html(study.root) if study.withdrawn else ""), _warnings(study),
             _failures(study), _diverged(study)]
    if not study.withdrawn:
        parts.append(note_html("No withdrawal events in this run: nothing to unlearn, so only test accuracy is shown."))
        parts.append(_global_section(study))
    else:
        parts.append(_global_section(study))
        for client, rnd in study.withdrawn.items():
            parts.append(_client_section(study, client, rnd, many))
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
    """Write ``run_dir/report.html`` (atomically) and return its path; for a
    seeds directory on fixed data, ``many_models.csv`` and
    ``epsilon_examples.parquet`` beside it.

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
        from fedforget.report.study import write_study_report

        return write_study_report(root)
    study = load_study(root)
    many = _many_models_of(study)
    text = _render(study, many)
    if isinstance(many, ManyModels):  # computed once: the tables beside the report
        many.write(root)
    out = root / "report.html"
    atomic_write(out, lambda tmp: tmp.write_text(text, encoding="utf-8"), f".report.html.{os.getpid()}.tmp")
    return out
