"""Judge every unlearning method, Forsaken above all, against the project's targets.

    python simulations/targets.py DIR [DIR ...] --out simulations/results/targets

Each DIR is a finished multi-seed directory (``fedforget run ... --seeds N``) or
a sweep study (``fedforget sweep ... --seeds N``: one block per cell, labelled
by its swept value, e.g. ``num_clients=20``). Per block, method and withdrawn
client, paired by seed against retrain (the package's own verdicts:
:meth:`fedforget.analysis.tables.Results.verdicts` and ``.relapse``), the
targets are:

1. MIA AUC gap to retrain *equivalent* (± 0.02) right after the method's step
   and at the last round;
2. test-accuracy gap *equivalent* (± 0.02, i.e. 2 points) at both points;
3. the client-level membership test (``client_mia_pvalue``) does not detect
   the client (p ≥ 0.05) in any seed, at either point;
4. no relapse beyond retrain's: ``relapse_auc`` and ``relapse_z`` equivalent
   or better;
5. ≥ 15× fewer client steps than retraining to the event (``speedup_steps``)
   and ≥ 2× less wall time (``speedup_wall``), in every seed.

Gaps read method − retrain, mean ± the half-width of the 95% t-interval of the
per-seed differences; a miss says how far the interval reaches past the margin.
Prints markdown and writes ``OUT.md`` and ``OUT.csv`` (one row per block,
method, client and check). Where Forsaken's gaps and p-values equal the
``none`` arm's in every seed, its lines say so: its step changed nothing there,
so what it meets it meets by doing nothing.

The results in ``simulations/results/targets.md`` came from (2026-12-03; the
directories made by ``fedforget run configs/withdrawal.toml --seeds 3 --engine
inline``, ``fedforget sweep configs/withdrawal.toml data.num_clients=5,10,20,40
--seeds 3 --engine inline``, the same ``run`` of ``configs/two_withdrawals.toml``,
of ``configs/withdrawal.toml oracle.attack=lira``, of ``configs/noniid_cnn.toml``
and of ``configs/scale100.toml``)::

    R=runs/contest   # each command above with --out $R/<scenario>
    python simulations/targets.py $R/withdrawal $R/clients $R/two_withdrawals $R/withdrawal_lira \\
        $R/noniid_cnn $R/scale100 --out simulations/results/targets
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from fedforget.analysis.stats import estimate_of, round_text
from fedforget.analysis.tables import Results, load
from fedforget.analysis.verdicts import (
    BETTER,
    DETECTION_LEVEL,
    EQUIVALENT,
    UNDECIDED,
    PairedVerdict,
)
from fedforget.schedule import ORIGINAL, RETRAIN

FOCUS = "forsaken"
NONE = "none"  # the arm that does nothing: a focus whose rows equal it took no effective step
STEPS_TARGET = 15.0  # x fewer client steps than retraining to the event
WALL_TARGET = 2.0  # x less wall time
#: Check -> (column title, target sentence).
CHECKS: dict[str, tuple[str, str]] = {
    "mia_auc@event": ("ΔAUC after the step", "1. MIA AUC gap equivalent (± 0.02) after the step"),
    "mia_auc@final": ("ΔAUC at the end", "1. MIA AUC gap equivalent (± 0.02) at the end"),
    "test_accuracy@event": ("Δtest acc after the step", "2. test-accuracy gap equivalent (± 0.02) after the step"),
    "test_accuracy@final": ("Δtest acc at the end", "2. test-accuracy gap equivalent (± 0.02) at the end"),
    "client_p@event": ("client p after the step", "3. client-level test: not detected after the step"),
    "client_p@final": ("client p at the end", "3. client-level test: not detected at the end"),
    "relapse_auc": ("AUC relapse", "4. no AUC relapse beyond retrain's (relapse_auc)"),
    "relapse_z": ("z relapse", "4. no client-level z relapse beyond retrain's (relapse_z)"),
    "speedup_steps": ("speed-up, steps", f"5. ≥ {STEPS_TARGET:g}× fewer client steps than retraining to the event"),
    "speedup_wall": ("speed-up, wall", f"5. ≥ {WALL_TARGET:g}× less wall time than retraining to the event"),
}
SPEED_TARGETS = {"speedup_steps": STEPS_TARGET, "speedup_wall": WALL_TARGET}
ROW_KEYS = ["scenario", "block", "arm", "client"]


# ------------------------------------------------------------------ checks


def cell_keys(res: Results) -> list[str]:
    """The columns naming a sweep cell (``cell`` and the swept keys; none outside a study)."""
    return [k for k in res.ids if k != "seed"]


def block_labels(res: Results) -> pd.Series:
    """Per sweep cell, its label from the swept values (``num_clients=20``);
    one block (empty label) for a multi-seed directory or a single run.

    Parameters
    ----------
    res : Results
        Loaded run, multi-seed directory or study.

    Returns
    -------
    Series
        ``cell`` -> label (index -1 and label "" outside a study).
    """
    if res.kind != "study":
        return pd.Series({-1: ""})
    cells = res.scenarios.drop_duplicates("cell").set_index("cell")
    return cells[res.swept].apply(lambda r: ", ".join(f"{k.rsplit('.', 1)[-1]}={r[k]}" for k in res.swept), axis=1)


def _with_block(df: pd.DataFrame, res: Results, scenario: str) -> pd.DataFrame:
    """``scenario`` and ``block`` columns in place of the cell keys."""
    labels = block_labels(res)
    block = df["cell"].map(labels) if "cell" in df else pd.Series("", index=df.index)
    return df.drop(columns=[c for c in ["cell", *res.swept] if c in df]).assign(scenario=scenario, block=block)


def verdict_rows(res: Results) -> pd.DataFrame:
    """The package's paired verdicts of targets 1, 2 and 4, one row per cell
    key, method, client and check.

    Parameters
    ----------
    res : Results
        Loaded directory.

    Returns
    -------
    DataFrame
        The columns of :meth:`Results.verdicts`, ``check`` naming the target's check.
    """
    parts = [v[v.metric.isin(["mia_auc", "test_accuracy"])].assign(check=lambda d: d.metric + "@" + d["at"])
             for v in (res.verdicts(at="event"), res.verdicts(at="final"))]
    parts.append(res.relapse().assign(check=lambda d: d.metric))
    return pd.concat(parts, ignore_index=True)


def _points(res: Results) -> pd.DataFrame:
    """Per run and withdrawn client: its event round, the round label right
    after the step and the run's last round."""
    w = res.withdrawals()
    last = res.metrics.groupby(res.ids, as_index=False)["round"].max().rename(columns={"round": "last_round"})
    return w.merge(last, on=res.ids).assign(step_round=lambda d: d.event_round - 0.5)


def p_rows(res: Results) -> pd.DataFrame:
    """Target 3: per cell key, method and client, the per-seed client-level p
    right after the step and at the last round.

    Parameters
    ----------
    res : Results
        Loaded directory.

    Returns
    -------
    DataFrame
        Cell keys, ``arm``, ``client``, ``check``, ``values`` (p per seed, in
        seed order).
    """
    m = res.metrics
    m = m[(m.metric == "client_mia_pvalue") & m.client.notna() & ~m.arm.isin([ORIGINAL, RETRAIN])]
    m = m.assign(client=m.client.astype("int64"))
    rows = []
    for at, col in (("event", "step_round"), ("final", "last_round")):
        pts = _points(res).rename(columns={col: "round"})[[*res.ids, "client", "round"]]
        hit = m.merge(pts, on=[*res.ids, "client", "round"]).sort_values("seed")
        grouped = hit.groupby([*cell_keys(res), "arm", "client"], as_index=False)["value"].agg(list)
        rows.append(grouped.rename(columns={"value": "values"}).assign(check=f"client_p@{at}"))
    return pd.concat(rows, ignore_index=True)


def speed_rows(res: Results) -> pd.DataFrame:
    """Target 5: per cell key, method and client, the per-seed speed-ups of
    the step at the client's event (a check is absent when the run did not
    record that speed-up).

    Parameters
    ----------
    res : Results
        Loaded directory.

    Returns
    -------
    DataFrame
        Cell keys, ``arm``, ``client``, ``check``, ``values`` (per seed).
    """
    costs = res.costs().merge(res.withdrawals().rename(columns={"event_round": "round"}), on=[*res.ids, "round"])
    costs = costs.sort_values("seed")
    rows = [costs.groupby([*cell_keys(res), "arm", "client"], as_index=False)[k].agg(list)
            .rename(columns={k: "values"}).assign(check=k) for k in SPEED_TARGETS if k in costs]
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["arm", "client", "check", "values"])


# ----------------------------------------------------------------- judging


def reach_past(v: PairedVerdict) -> float:
    """How far the interval reaches past ± margin (0 when inside it)."""
    return max(v.hi - v.margin, -v.margin - v.lo, 0.0)


def amount(x: float) -> str:
    """A shortfall to 3 decimals; one that rounds to 0 reads ``<0.001``."""
    return f"{x:.3f}" if x >= 0.0005 else "<0.001"


def _verdict_of(row: pd.Series) -> PairedVerdict:
    return PairedVerdict(row.metric, int(row.n_seeds), row["mean"], row.lo, row.hi, row.margin, row.verdict,
                         row.seeds_to_decide)


def judge_verdict(row: pd.Series) -> dict[str, object]:
    """Targets 1, 2 (equivalent) and 4 (relapse equivalent or better): the
    cell text, whether it is met and, if not, by how much."""
    v = _verdict_of(row)
    relapse = row.check.startswith("relapse")
    met = v.verdict in ((EQUIVALENT, BETTER) if relapse else (EQUIVALENT,))
    if met or v.n < 2:
        miss = "" if met else f"no interval to judge ({v.verdict})"
    elif relapse and v.hi <= v.margin:
        miss = f"the interval reaches {amount(-v.margin - v.lo)} below −{v.margin:g} (no relapse past +{v.margin:g})"
    else:
        far = v.hi - v.margin if relapse else reach_past(v)
        miss = f"misses {'no-relapse' if relapse else 'equivalence'} by {amount(far)}"
    return {"n_seeds": v.n, "mean": v.mean, "lo": v.lo, "hi": v.hi, "target": v.margin, "verdict": v.verdict_text(),
            "met": met, "text": minus(v.text()), "short": short_text(v), "miss": miss}


def minus(text: str) -> str:
    """Typographic minus signs, as the docs print them."""
    return text.replace("-", "−")


def short_text(v: PairedVerdict) -> str:
    """A table cell as docs/results/studies.md prints it: ``+0.028 ± 0.012 worse``,
    ``−0.002 ± 0.028 undecided (5)`` (the seeds that would decide it)."""
    if v.n == 0:
        return v.verdict
    n = v.seeds_to_decide
    more = "" if v.verdict != UNDECIDED else " (never)" if math.isinf(n) else f" ({n:.0f})"
    return minus(f"{v.gap_text()} {v.verdict}{more}")


def p_list(values: Iterable[float]) -> str:
    """Per-seed p-values: ``0.412, <0.001, 0.730``."""
    return ", ".join("n/a" if not math.isfinite(p) else "<0.001" if p < 0.001 else f"{p:.3f}" for p in values)


def judge_p(row: pd.Series) -> dict[str, object]:
    """Target 3: met when the test detects the client (p < 0.05) in no seed."""
    p = np.asarray(row["values"], dtype=float)
    n, hits = int(np.isfinite(p).sum()), int((p < DETECTION_LEVEL).sum())
    met = n > 0 and hits == 0
    verdict = "n/a" if n == 0 else f"detected in {hits} of {n}" if hits else "not detected"
    miss = "" if met else "no p recorded" if n == 0 else f"detected (p < {DETECTION_LEVEL:g}) in {hits} of {n} seeds"
    return {"n_seeds": n, "mean": math.nan, "target": DETECTION_LEVEL,
            "verdict": verdict, "met": met, "text": f"{p_list(p)}; {verdict}", "short": f"{p_list(p)} ({verdict})",
            "miss": miss}


def judge_speed(row: pd.Series) -> dict[str, object]:
    """Target 5: met when every seed's speed-up reaches the target."""
    x = np.asarray(row["values"], dtype=float)
    target, n = SPEED_TARGETS[row.check], int(np.isfinite(x).sum() + np.isinf(x).sum())
    est = estimate_of(list(x), [math.nan] * len(x), [math.nan] * len(x), across_seeds=len(x) > 1)
    low = float(np.nanmin(x)) if n else math.nan
    met = n > 0 and low >= target
    low_text = "∞" if low == math.inf else f"{low:,.1f}×"
    short_by = f"lowest seed {low_text} < {target:g}× (short by {target - low:.1f}×)"
    miss = "" if met else "not recorded" if n == 0 else short_by
    return {"n_seeds": n, "mean": est.mean, "lo": est.lo, "hi": est.hi, "target": target,
            "verdict": "met" if met else "missed", "met": met, "text": f"{est.text(1)}, lowest seed {low_text}",
            "short": f"{est.text(1)} (min {low_text})", "miss": miss}


def checks(res: Results, scenario: str) -> pd.DataFrame:
    """Every target check of every method and withdrawn client in a directory.

    Parameters
    ----------
    res : Results
        Loaded directory.
    scenario : str
        Its name in the output.

    Returns
    -------
    DataFrame
        ``scenario``, ``block``, ``arm``, ``client``, ``check``, ``n_seeds``,
        ``mean``, ``lo``, ``hi``, ``target``, ``verdict``, ``met``, ``text``
        (a sentence's), ``short`` (a table's), ``miss``, ``values`` (per-seed
        values of p and speed-ups; ``mean`` is NaN for p).
    """
    parts = []
    for frame, judge in ((verdict_rows(res), judge_verdict), (p_rows(res), judge_p), (speed_rows(res), judge_speed)):
        if not frame.empty:
            judged = pd.DataFrame([judge(r) for _, r in frame.iterrows()], index=frame.index)
            keep = [c for c in [*cell_keys(res), "arm", "client", "check", "values"] if c in frame]
            parts.append(pd.concat([frame[keep], judged], axis=1))
    out = _with_block(pd.concat(parts, ignore_index=True), res, scenario)
    return out[[*ROW_KEYS, "check", *[c for c in out if c not in (*ROW_KEYS, "check")]]]


# --------------------------------------------------------------- rendering


def arm_order(arms: Iterable[str]) -> list[str]:
    """Forsaken first, then the other methods alphabetically."""
    return sorted(set(arms), key=lambda a: (a != FOCUS, a))


def table(block: pd.DataFrame) -> str:
    """One block's markdown table: a row per method and client, a column per check."""
    cols = [c for c in CHECKS if c in set(block.check)]
    lines = ["| method | client | " + " | ".join(CHECKS[c][0] for c in cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for arm in arm_order(block.arm):
        for client, g in block[block.arm == arm].groupby("client"):
            cell = g.set_index("check")["short"]
            lines.append(f"| {arm} | {client} | " + " | ".join(cell.get(c, "—") for c in cols) + " |")
    if "speedup_wall" not in cols:
        lines.append("\nWall-time speed-up: not recorded in these runs (no `speedup_wall`).")
    return "\n".join(lines)


def focus_lines(block: pd.DataFrame) -> str:
    """Per withdrawn client, one line per target check of :data:`FOCUS`: met or missed, and by how much."""
    out = []
    for client, g in block[block.arm == FOCUS].groupby("client"):
        rows = g.set_index("check")
        out.append(f"\n{FOCUS}, client {client}:\n")
        for c, (_, sentence) in CHECKS.items():
            if c not in rows.index:
                out.append(f"- {sentence}: not recorded in these runs")
                continue
            r = rows.loc[c]
            status = "met" if r.met else "missed"
            out.append(f"- {sentence}: {r.text} — **{status}**" + (f"; {r.miss}" if r.miss else ""))
        met = int(rows.met.sum())
        out.append(f"- in all: {met} of {len(rows)} checks met")
        if same_as_none(block, int(client)):
            out.append(f"- note: {FOCUS}'s gaps and p-values here are `{NONE}`'s in every seed: its step left the "
                       "model unchanged, so what it meets it meets by doing nothing")
    return "\n".join(out)


def same_as_none(block: pd.DataFrame, client: int) -> bool:
    """Whether :data:`FOCUS`'s AUC and test-accuracy gaps and client-level p
    equal the ``none`` arm's (a step that changed nothing)."""
    def of(arm: str) -> pd.DataFrame:
        return block[(block.arm == arm) & (block.client == client)].set_index("check")

    mine, ref = of(FOCUS), of(NONE)
    keys = ["mia_auc@event", "mia_auc@final", "test_accuracy@event"]
    if ref.empty or not set(keys) <= set(mine.index) & set(ref.index):
        return False
    p = [np.asarray(x.loc["client_p@event", "values"], dtype=float) if "client_p@event" in x.index else np.array([])
         for x in (mine, ref)]
    return bool(np.allclose(mine.loc[keys, "mean"].astype(float), ref.loc[keys, "mean"].astype(float), atol=1e-9)
                and p[0].shape == p[1].shape and np.allclose(p[0], p[1], equal_nan=True))


def header(res: Results, scenario: str, label: str) -> str:
    """A block's heading: scenario, cell, seeds, events and last round."""
    w = _points(res)
    if label:
        cells = res.scenarios.assign(label=res.scenarios.cell.map(block_labels(res)))
        w = w.merge(cells[["cell", "seed", "label"]], on=["cell", "seed"])
        w = w[w.label == label]
    events = ", ".join(f"client {c} at round {round_text(t)}"
                       for c, t in w.groupby("client").event_round.min().items())
    title = f"{scenario}, {label}" if label else scenario
    return (f"## {title}\n\n{w.seed.nunique()} seeds ({', '.join(map(str, sorted(w.seed.unique())))}); "
            f"withdrawn: {events}; last round {round_text(w.last_round.max())}.\n")


def markdown(res: Results, scenario: str, df: pd.DataFrame) -> str:
    """Every block of one directory: heading, table and Forsaken's lines."""
    parts = []
    for label, block in df.groupby("block", sort=False):
        parts.append(header(res, scenario, str(label)) + "\n" + table(block) + "\n" + focus_lines(block) + "\n")
    return "\n".join(parts)


LEGEND = f"""# Methods against the targets

Per scenario, method and withdrawn client, paired by seed against retrain:
gaps are method − retrain, mean ± the half-width of the 95% t-interval over
the seeds, with the package's verdict (equivalent: the interval lies inside
± the margin; worse / better: it excludes 0 on that side; undecided: it holds
0 and reaches past the margin, with the seeds that would decide it at this
spread). Margins: MIA AUC ± 0.02, test accuracy ± 0.02 (2 points), relapse
as its base metric (AUC ± 0.02, client-level z ± 0.5). Client p: the
client-level test's p per seed (seed order) right after the step (round t −
0.5) and at the last round; detected below {DETECTION_LEVEL:g}. Relapse: the gap
to retrain at the last round minus the gap right after the step (positive: the
federation re-taught the client); met when equivalent or better. Speed-ups:
retraining's client steps (wall seconds) over rounds 1..t−1 divided by the
step's, mean ± half-width over seeds and the lowest seed; met when every seed
reaches {STEPS_TARGET:g}× (steps) and {WALL_TARGET:g}× (wall). A miss of an
interval target says how far the interval reaches past the margin.
"""


def main(argv: list[str] | None = None) -> str:
    """Judge the directories, print the markdown and write ``OUT.md`` / ``OUT.csv``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dirs", nargs="+", type=Path, help="finished multi-seed or sweep directories")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "targets",
                    help="output path without suffix (writes OUT.md and OUT.csv)")
    args = ap.parse_args(argv)
    sections, frames = [LEGEND], []
    for d in args.dirs:
        res = load(d)
        df = checks(res, d.name)
        frames.append(df)
        sections.append(markdown(res, d.name, df))
    text = "\n".join(sections)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text)
    csv = pd.concat(frames, ignore_index=True)
    per_seed = csv["values"].map(lambda v: " ".join(f"{x:.4g}" for x in v) if isinstance(v, list) else "")
    csv.assign(values=per_seed).to_csv(args.out.with_suffix(".csv"), index=False)
    print(text)
    return text


if __name__ == "__main__":
    main()
