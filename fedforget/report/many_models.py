"""ε, U-LiRA and the run's own attack side by side, as a table (HTML for the
reports, aligned text for ``fedforget epsilon``).

The three answer different questions: the run's attack (loss or LiRA) asks
whether the client's data is still there on average; ε asks whether any single
forget example is still exposed, from many models of each kind; U-LiRA asks
whether an attacker who knows the method, and can train and unlearn models of
their own, tells its models from retrained ones example by example.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from fedforget.analysis.many_models import ManyModels, ManyModelsError, many_models
from fedforget.analysis.runs import Run
from fedforget.analysis.stats import NO_SIGNAL, round_text
from fedforget.report.html import esc, note_html, table_html

__all__ = ["MANY_MODELS_CAPTION", "many_models_section", "many_models_text", "try_many_models"]

HEADERS = ("arm", "at", "models", "ε median", "ε p90", "share at ceiling (ceiling)", "forgetting quality", "U-LiRA AUC",
           "U-LiRA TPR@1%FPR", "attack AUC")

MANY_MODELS_CAPTION = (
    "Per-example privacy from many models: each seed is one model per arm, all on the same data (data.seed). "
    "ε: per forget example, how well the method's models are told from retrained ones (the NeurIPS 2023 "
    "unlearning challenge's estimator, adapted: both directions of every threshold, false positive and negative "
    "rates at their Clopper-Pearson upper bounds, so perfect separation gives a finite ceiling; δ = 1e-5); 'at ceiling': share of examples at the largest ε these models can show at all; forgetting "
    "quality: mean of 2^-k over examples, k = the example's ε bucket of width 0.5 (1 = nothing exposed). "
    "U-LiRA: each model in turn is the target, the others its per-example references (the method's "
    "models against retrained ones), AUC with a bootstrap interval over examples; 0.5 = an attacker who knows "
    "the method cannot tell. Attack AUC: the run's own oracle (members against non-members), mean ± 95% "
    "interval over seeds. Retrain's row is the null (half its models against the other half, so it rests on "
    "half as many models and has a lower ceiling); original kept the client. 'Not told apart' with few models is not 'forgot': read the ceiling.")


def try_many_models(path: str | Path, runs: list[Run] | None = None) -> ManyModels | str:
    """The estimates (from ``runs`` when the caller has loaded them), or the
    one-line reason there are none."""
    try:
        return many_models(path, runs=runs)
    except (ManyModelsError, FileNotFoundError) as err:
        return str(err)


def _num(x: float, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _interval(mean: float, lo: float, hi: float) -> str:
    if math.isnan(lo) or math.isnan(hi):
        return _num(mean)
    return f"{_num(mean)} [{_num(lo)}, {_num(hi)}]"


def _with_signal(text: str, signal: object) -> str:
    if signal is None or (isinstance(signal, float) and math.isnan(signal)):
        return f"{text} (signal unknown: original not scored)"
    return text if bool(signal) else f"{text} ({NO_SIGNAL})"


def _rows(summary: pd.DataFrame, client: int) -> list[list[str]]:
    rows = []
    for r in summary[summary.client == client].itertuples(index=False):
        d = r._asdict()
        ceiling = f"{_num(d['eps_share_at_ceiling'], 2)} (ε {_num(d['eps_ceiling'], 2)})"
        ulira = _interval(d["ulira_auc"], d["ulira_auc_lo"], d["ulira_auc_hi"])
        rows.append([d["arm"], f"{d['point']} ({round_text(d['round'])})", f"{d['n_models']} vs {d['n_retrained']}",
                     _num(d["eps_median"]), _num(d["eps_p90"]), ceiling, _num(d["forgetting_quality"]),
                     _with_signal(ulira, d["signal"]),
                     _num(d["ulira_tpr_at_1pct_fpr"]), f"{d['attack']} {_interval(d['attack_auc'], d['attack_auc_lo'], d['attack_auc_hi'])}"])
    return rows


def many_models_section(result: ManyModels | str, client: int) -> str:
    """The HTML section of one withdrawn client (a note with the reason when there is no estimate)."""
    head = f"<h3>Per-example privacy from many models, client {client}</h3>"
    if isinstance(result, str):
        return head + note_html(f"No ε or U-LiRA: {result}.")
    rows = _rows(result.summary, client)
    if not rows:
        return head + note_html(f"No ε or U-LiRA for client {client}: retrain was not scored in every seed.")
    return head + table_html(HEADERS, rows) + f'<p class="small">{esc(MANY_MODELS_CAPTION)}</p>'


def many_models_text(result: ManyModels) -> str:
    """Aligned text of every client's rows, with what the estimates rest on."""
    s = result.summary
    lines = [f"Per-example privacy from {result.n_seeds} seeds on the same data (each seed: one model per arm)."]
    for client in sorted(s.client.unique()):
        rows = [list(HEADERS), *_rows(s, int(client))]
        widths = [max(len(str(r[i])) for r in rows) for i in range(len(HEADERS))]
        lines.append(f"\nclient {client}:")
        lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.append("\n" + MANY_MODELS_CAPTION)
    return "\n".join(lines)
