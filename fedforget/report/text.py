"""The verdict table a terminal shows at the end of a run with events.

Per withdrawn client and arm: the MIA AUC and FR right after the unlearning
step (round label t − 0.5) and at the last round, the client-level test's
reading after the step, the AUC gap to retrain at the last round with its
paired verdict (one seed: the gap alone), test accuracy and the speed-up in
client steps, then one line of reading. Every number is read back from the run
directory's ``metrics.parquet`` (through :mod:`fedforget.analysis`), so
``fedforget report RUN_DIR --text`` prints the same table again.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from fedforget.analysis.stats import SIGNAL_AUC, finite
from fedforget.analysis.tables import Results, load
from fedforget.analysis.verdicts import DETECTION_LEVEL, EQUIVALENT, ONE_SEED
from fedforget.schedule import ORIGINAL, RETRAIN

__all__ = ["headline_lines", "verdict_text"]

HEADER = ("arm", "AUC step", "FR step", "client test step", "AUC end", "FR end", "AUC gap end (vs retrain)",
          "test acc", "speed-up")


def verdict_text(path: str | Path | Results) -> str:
    """The terminal verdict table of a run or seeds directory ('' without events)."""
    res = path if isinstance(path, Results) else load(path)
    points = res.withdrawals()
    if points.empty:
        return ""
    blocks = [_client_block(res, int(c), float(t)) for c, t in
              points.groupby("client").event_round.min().items()]
    n = res.scenarios.shape[0]
    head = (f"Forgetting, {n} seeds (means over seeds; gaps to retrain paired by seed, 95% intervals):" if n > 1
            else "Forgetting, one seed (run with --seeds 3 or more for intervals and verdicts):")
    return "\n\n".join([head, *blocks])


def _client_block(res: Results, client: int, t: float) -> str:
    step, m = t - 0.5, res.metrics
    last = float(m["round"].max())
    arms = [a for a in (ORIGINAL, RETRAIN) if a in set(m.arm)] + [a for a in _methods(m)]
    verdicts = res.verdicts(at="final")
    verdicts = verdicts[(verdicts.client == client) & (verdicts.metric == "mia_auc")].set_index("arm")
    rows = [HEADER] + [_row(res, a, client, step, last, verdicts) for a in arms]
    cal = _mean(m, ORIGINAL, t - 1, client, "mia_auc")
    title = (f"client {client}, withdraws at round {t:g}: original's MIA AUC before it left {cal:.3f}"
             + ("" if cal >= SIGNAL_AUC else f" (below {SIGNAL_AUC}: no signal, FR is not a forgetting rate)"))
    return "\n".join([title, _aligned(rows), _reading(res, client, step, verdicts, cal)])


def _methods(m: pd.DataFrame) -> list[str]:
    return [a for a in dict.fromkeys(m.arm) if a not in (ORIGINAL, RETRAIN)]


def _mean(m: pd.DataFrame, arm: str, rnd: float, client: int | None, metric: str) -> float:
    sel = (m.arm == arm) & (m["round"] == rnd) & (m.metric == metric)
    sel &= m.client.isna() if client is None else (m.client == client)
    v = m.loc[sel, "value"].astype(float)
    return float(v.mean()) if len(v) else math.nan


def _detected(m: pd.DataFrame, arm: str, rnd: float, client: int) -> str:
    p = m.loc[(m.arm == arm) & (m["round"] == rnd) & (m.client == client) & (m.metric == "client_mia_pvalue"), "value"]
    if not len(p) or not np.isfinite(p.astype(float)).any():
        return "n/a"
    med = float(p.astype(float).median())
    return f"{'detected' if med < DETECTION_LEVEL else 'not detected'} (p {med:.3f})"


def _gap(arm: str, verdicts: pd.DataFrame) -> str:
    if arm in (ORIGINAL, RETRAIN) or arm not in verdicts.index:
        return "—" if arm == RETRAIN else ""
    v = verdicts.loc[arm]
    if not finite(v["mean"]):
        return str(v.verdict)
    if v.verdict == ONE_SEED:
        return f"{v['mean']:+.3f} (one seed)"
    return f"{v['mean']:+.3f} ± {(v.hi - v.lo) / 2:.3f} {v.verdict}"


def _speedup(m: pd.DataFrame, arm: str) -> str:
    v = m.loc[(m.arm == arm) & (m.metric == "speedup_steps"), "value"].astype(float)
    if not len(v):
        return "—" if arm in (ORIGINAL, RETRAIN) else "n/a"
    med = float(v.median())
    return "∞" if med == math.inf else f"{med:,.1f}×"


def _row(res: Results, arm: str, client: int, step: float, last: float, verdicts: pd.DataFrame) -> tuple:
    m = res.metrics
    num = lambda rnd, metric: _fmt(_mean(m, arm, rnd, client, metric))  # noqa: E731
    return (arm, num(step, "mia_auc"), num(step, "fr"), _detected(m, arm, step, client), num(last, "mia_auc"),
            num(last, "fr"), _gap(arm, verdicts), _fmt(_mean(m, arm, last, None, "test_accuracy")),
            _speedup(m, arm))


def _fmt(x: float) -> str:
    return f"{x:.3f}" if finite(x) else "n/a"


def _aligned(rows: list[tuple]) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def _reading(res: Results, client: int, step: float, verdicts: pd.DataFrame, cal: float) -> str:
    m = res.metrics
    methods = [a for a in _methods(m) if a in verdicts.index]
    hidden = [a for a in methods if _detected(m, a, step, client).startswith("not")]
    hid_txt = (f"not detected by the client-level test right after the step (which is not proof of forgetting): "
               f"{', '.join(hidden)}" if hidden else "every method is still detected right after its step")
    if not cal >= SIGNAL_AUC:
        seen = _detected(m, ORIGINAL, step, client).startswith("detected")
        return ("Reading: the per-sample oracle barely saw this client before it left, so AUC and FR cannot show "
                "forgetting here" + (f"; the client-level test did see it: {hid_txt}." if seen else
                                     ", and the client-level test did not see it either."))
    if any(verdicts.loc[a].verdict == ONE_SEED for a in methods):
        same_txt = "one seed gives gaps but no verdicts"
    else:
        same = [a for a in methods if verdicts.loc[a].verdict == EQUIVALENT]
        same_txt = (f"equivalent to retrain on AUC at the end: {', '.join(same)}" if same
                    else "no method is shown equivalent to retrain on AUC at the end")
    return f"Reading: {same_txt}; {hid_txt}."


def headline_lines(path: str | Path | Results) -> list[str]:
    """The report's headline, one line per withdrawn client: which methods reach
    retrain's level on AUC at the end, which are worse, which are undecided
    (and how many seeds would decide them), at what speed-up."""
    res = path if isinstance(path, Results) else load(path)
    verdicts = res.verdicts(at="final")
    lines = []
    for client, t in res.withdrawals().groupby("client").event_round.min().items():
        v = verdicts[(verdicts.client == client) & (verdicts.metric == "mia_auc")].set_index("arm")
        lines.append(_headline(res, int(client), float(t), v))
    return lines


def _headline(res: Results, client: int, t: float, v: pd.DataFrame) -> str:
    m = res.metrics
    cal = _mean(m, ORIGINAL, t - 1, client, "mia_auc")
    head = f"Client {client} (withdraws at round {t:g}): "
    if not cal >= SIGNAL_AUC:
        step = t - 0.5
        hidden = [a for a in _methods(m) if _detected(m, a, step, client).startswith("not")]
        seen = _detected(m, ORIGINAL, step, client).startswith("detected")
        tail = (f"the client-level test does see it, and does not detect {', '.join(hidden) or 'no method'} right "
                "after the step (not proof of forgetting)." if seen else "the client-level test does not see it either.")
        return head + (f"no signal — the oracle's AUC before it left is {cal:.3f}, below {SIGNAL_AUC}, so AUC and FR "
                       f"cannot show forgetting; {tail}")
    methods = [a for a in _methods(m) if a in v.index]
    if any(v.loc[a].verdict == ONE_SEED for a in methods):
        gaps = ", ".join(f"{a} {v.loc[a]['mean']:+.3f}" for a in methods)
        return head + f"one seed, so gaps to retrain's AUC at the end but no verdicts ({gaps}); run --seeds 3."
    groups = {}
    for a in methods:
        groups.setdefault(str(v.loc[a].verdict), []).append(a)
    parts = []
    if groups.get(EQUIVALENT):
        parts.append("at retrain's level on AUC at the end: "
                     + ", ".join(f"{a} ({_speedup(m, a)} fewer client steps)" for a in groups[EQUIVALENT]))
    for word in ("worse", "better"):
        if groups.get(word):
            parts.append(f"{word} than retrain: " + ", ".join(
                f"{a} ({v.loc[a]['mean']:+.3f} ± {(v.loc[a].hi - v.loc[a].lo) / 2:.3f})" for a in groups[word]))
    if groups.get("undecided"):
        parts.append("undecided: " + ", ".join(
            f"{a} ({int(v.loc[a].seeds_to_decide)} seeds would decide it)" for a in groups["undecided"]))
    n = res.scenarios.shape[0]
    return head + "; ".join(parts) + f" (paired over {n} seeds, 95% intervals, margin ± 0.02)."
