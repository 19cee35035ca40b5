"""Final test accuracy of FedAvg across Dirichlet alpha (label skew), several seeds.

All runs share ONE runtime (``fedforget.run_many``): Ray and Flower start once.

    python simulations/dirichlet_alpha.py [--engine ray|inline] [--seeds 2] [--rounds 20]

Prints a table and writes ``simulations/results/dirichlet_alpha.csv``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

import fedforget
from fedforget.config import load_scenario, with_overrides

ALPHAS = [0.05, 0.1, 0.5, 1.0, 10.0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", default="ray", choices=["ray", "inline"])
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()

    here = Path(__file__).resolve().parent
    base = load_scenario(here.parent / "configs" / "quickstart.toml")
    scenarios, outs = [], []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for alpha in ALPHAS:
        for seed in range(args.seeds):
            sc = with_overrides(
                base,
                [f"name=dirichlet-{alpha}", f"seed={seed}", "data.partitioner=dirichlet",
                 f"data.alpha={alpha}", f"train.rounds={args.rounds}"],
            )
            scenarios.append(sc)
            outs.append(Path("runs") / f"dirichlet-alpha-{stamp}" / f"alpha{alpha}-seed{seed}")
    t0 = time.perf_counter()
    results = fedforget.run_many(scenarios, outs, engine=args.engine, progress=True)
    wall = time.perf_counter() - t0
    rows = [
        {"alpha": float(r.scenario.data.alpha), "seed": r.scenario.seed, "final_test_accuracy": r.final()}
        for r in results
    ]
    df = pd.DataFrame(rows)
    summary = df.groupby("alpha").final_test_accuracy.agg(["mean", "std", "count"])
    print(summary.to_string(float_format=lambda v: f"{v:.4f}"))
    print(f"{len(results)} runs in one {args.engine} runtime: {wall:.1f} s")
    (here / "results").mkdir(exist_ok=True)
    df.to_csv(here / "results" / "dirichlet_alpha.csv", index=False)


if __name__ == "__main__":
    main()
