"""Run one scenario on CUDA and on the CPU and compare what they measure.

    python simulations/gpu_check.py [CONFIG] [--devices cuda cpu] [--rounds N] [--out DIR]

Each device gets its own run (inline engine, same seed); the script prints,
side by side, final test accuracy per arm, original's calibration MIA AUC and
each arm's AUC right after its step, and wall time, then the largest absolute
difference. GPU kernels are not bit-for-bit the CPU's (reduction order, TF32),
so metrics are compared within a tolerance (``--tolerance``, default 0.02 in
accuracy and AUC), not for equality; exit status 1 when a difference exceeds it.

What follows ``runtime.device`` today: the clients' local training and their
unlearning operations (ClientApp). The server side (aggregation, the oracle's
forward passes, methods' server-side steps, the reference federations'
aggregation, Forsaken's learned generator) runs on the CPU. Without a CUDA
device the script says so and exits with status 2; ``--devices cpu cpu`` checks
the comparison itself (two CPU runs agree exactly).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

import fedforget
from fedforget.config import load_scenario, with_overrides

ROOT = Path(__file__).resolve().parent.parent


def measure(config: str, device: str, rounds: int | None, out: Path) -> dict:
    sc = load_scenario(config, [f"runtime.device={device}", "runtime.engine=inline"])
    if rounds is not None:
        sc = with_overrides(sc, [f"train.rounds={rounds}"])
    t0 = time.perf_counter()
    res = fedforget.run(sc, out=out)
    wall = time.perf_counter() - t0
    df = res.metrics
    last = df["round"].max()
    acc = df[(df.metric == "test_accuracy") & (df["round"] == last) & df.client.isna()].set_index("arm").value
    auc = df[df.metric == "mia_auc"]
    step = auc[auc["round"] % 1 == 0.5].groupby("arm").value.first()
    return {"wall_s": wall, "test_accuracy": acc.to_dict(), "auc_after_step": step.to_dict()}


def compare(a: dict, b: dict) -> float:
    """Largest absolute difference over the metrics both runs have."""
    diffs = [abs(a[k][arm] - b[k][arm]) for k in ("test_accuracy", "auc_after_step") for arm in a[k] if arm in b[k]]
    return max(diffs, default=0.0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", nargs="?", default=str(ROOT / "configs" / "image_signal.toml"))
    ap.add_argument("--devices", nargs=2, default=["cuda", "cpu"])
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--tolerance", type=float, default=0.02)
    ap.add_argument("--out", default="runs/gpu-check")
    args = ap.parse_args()
    if "cuda" in args.devices and not torch.cuda.is_available():
        print("no CUDA device here: the GPU path is unverified on this machine", file=sys.stderr)
        return 2
    out = Path(args.out) / time.strftime("%Y%m%d-%H%M%S")
    runs = {f"{d}#{i}": measure(args.config, d, args.rounds, out / f"{d}-{i}") for i, d in enumerate(args.devices)}
    (a_name, a), (b_name, b) = runs.items()
    for name, r in runs.items():
        print(f"{name}: {r['wall_s']:.1f} s; test accuracy {r['test_accuracy']}; AUC after step {r['auc_after_step']}")
    worst = compare(a, b)
    print(f"largest difference {worst:.4f} (tolerance {args.tolerance}); wall {a_name} / {b_name} = "
          f"{a['wall_s'] / b['wall_s']:.2f}")
    return 0 if worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
