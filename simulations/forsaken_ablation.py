"""Forsaken's parts at matched cost: the learned generator against identity
steps of the same path length, and the client-level check against the AUC
check alone, on the reported scenarios (step-level, as simulations/tune.py).

    python simulations/forsaken_ablation.py [--seeds 3] [--scenarios NAME ...]

The learned generator's per-step gains after meta-training are about 1.45 on
these scenarios, so identity at ``step_size = 0.145`` walks the path learned
walks at 0.1; identity at 0.1 is the same step count at the shorter length.
Every arm: the paired AUC gap to retrain right after the step with its 95%
t-interval over seeds, steps taken, client steps and wall seconds (the learned
generator's meta-training included). Writes
``simulations/results/forsaken_ablation.md``.
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
import torch
from tune import RESULTS, build_benches, report_scenarios, run_settings

from fedforget.analysis.verdicts import paired_verdict

ARMS = {
    "learned 0.1 (default)": {"generator": "learned", "step_size": 0.1},
    "identity 0.145 (matched path)": {"generator": "identity", "step_size": 0.145},
    "identity 0.1": {"generator": "identity", "step_size": 0.1},
    "learned 0.1, AUC check only": {"generator": "learned", "step_size": 0.1, "client_check": False},
}


def table(df: pd.DataFrame) -> str:
    lines = ["| scenario | arm | ΔAUC to retrain | Δtest acc | exchanges (mean) | client steps (mean) | wall s (mean) |",
             "|---|---|---|---|---|---|---|"]
    for (scen, arm), g in df.groupby(["scenario", "setting"], sort=False):
        auc = paired_verdict(g["d_auc"].to_numpy(), "mia_auc")
        acc = paired_verdict(g["d_test_acc"].to_numpy(), "test_accuracy")
        lines.append(f"| {scen} | {arm} | {auc.text()} | {acc.text()} | {g['exchanges'].mean():.1f} | "
                     f"{g['client_steps'].mean():,.0f} | {g['wall_s'].mean():.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--scenarios", nargs="*", default=["withdrawal", "two_withdrawals (client 3)"])
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    benches = build_benches(report_scenarios(args.seeds, args.scenarios))
    df = run_settings(benches, {"forsaken": list(ARMS.items())})
    text = (f"# Forsaken's parts at matched cost\n\n`python simulations/forsaken_ablation.py --seeds {args.seeds}`, "
            f"{time.perf_counter() - t0:.0f} s, one thread, 2026-12-03. Step-level: right after the step.\n\n"
            + table(df) + "\n")
    out = RESULTS / "forsaken_ablation.md"
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
