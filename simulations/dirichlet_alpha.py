"""Final test accuracy of FedAvg across Dirichlet alpha (label skew), several seeds.

A ``fedforget sweep`` over ``data.alpha`` (every run in one runtime), read back
with ``fedforget.load``:

    python simulations/dirichlet_alpha.py [--engine ray|inline] [--seeds 2] [--rounds 20]

Prints a table and writes ``simulations/results/dirichlet_alpha.csv``; the
study directory is ``runs/dirichlet-alpha-<timestamp>``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import fedforget

ALPHAS = [0.05, 0.1, 0.5, 1.0, 10.0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", default="ray", choices=["ray", "actors", "inline"])
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()

    here = Path(__file__).resolve().parent
    out = Path("runs") / f"dirichlet-alpha-{time.strftime('%Y%m%d-%H%M%S')}"
    t0 = time.perf_counter()
    fedforget.sweep(here.parent / "configs" / "quickstart.toml", {"data.alpha": ALPHAS}, seeds=args.seeds, out=out,
                    overrides=["data.partitioner=dirichlet", f"train.rounds={args.rounds}"], engine=args.engine,
                    progress=True)
    wall = time.perf_counter() - t0
    m = fedforget.load(out).metrics
    final = m[(m.arm == "original") & (m.metric == "test_accuracy") & m.client.isna()]
    final = final[final["round"] == final["round"].max()]
    df = final.assign(alpha=final["data.alpha"].astype(float))[["alpha", "seed", "value"]]
    df = df.rename(columns={"value": "final_test_accuracy"}).sort_values(["alpha", "seed"])
    summary = df.groupby("alpha").final_test_accuracy.agg(["mean", "std", "count"])
    print(summary.to_string(float_format=lambda v: f"{v:.4f}"))
    print(f"{len(df)} runs in one {args.engine} runtime: {wall:.1f} s")
    (here / "results").mkdir(exist_ok=True)
    df.to_csv(here / "results" / "dirichlet_alpha.csv", index=False)


if __name__ == "__main__":
    main()
