"""Speed and memory of fedforget, measured as ratios side by side in one run
(not part of the test suite; these machines are shared and noisy).

    python simulations/benchmark.py [--section NAME ...] [--rounds N]

Sections:

- ``targets``: the shipped scenarios as a user runs them (fresh runtime each):
  quickstart within 90 s with final test accuracy >= 0.90, the withdrawal
  scenarios within 5 min.
- ``scale``: per-round time and peak memory (the whole process tree, Ray's
  workers included) for 10 / 100 / 1,000 clients at 10% participation on every
  engine, beside the plain PyTorch floor.
- ``overhead``: the ``original`` arm's per-round time against a plain PyTorch
  FedAvg loop (the floor) and a minimal plain-Flower FedAvg app doing the same
  training (``simulations/baselines.py``). Targets: ray <= 1.10x plain Flower,
  inline <= 1.5x floor, actors <= 2x floor.
- ``oracle``: the membership oracle's evaluation time as a share of a round
  (target <= 10%).
- ``scenario``: configs/scale100.toml (100 clients, every method) end to end:
  wall time and the share of each part (prefix, retrain, methods, oracle, report).
- ``tracking``: configs/withdrawal.toml (inline) without trackers, with
  TensorBoard, with MLflow's file store and with both: wall time and per-round
  time beside the untracked run.

Each measurement runs in its own subprocess; per-round times are medians over
the rounds after the first two. Prints one JSON line per measurement and a
Markdown table per section; exit status 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENGINES = ("inline", "actors", "ray")

# The quickstart model and training on synthetic data large enough for 1,000 clients.
SCALE_BASE = [
    "data.dataset=synthetic", "data.synthetic.samples=40000", "train.fraction=0.1",
    "train.local_epochs=2", "train.batch_size=32", "data.holdout_fraction=0.2",
]

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1] + "/simulations")
spec = json.loads(sys.argv[2])
import numpy as np
import fedforget
from fedforget.config import load_scenario
from fedforget.results import read_events, read_metrics

sc = load_scenario(spec["config"], spec["overrides"])
out = {}
if spec["kind"] == "floor":
    from baselines import torch_floor
    rounds = torch_floor(sc)
elif spec["kind"] == "plain_flower":
    from baselines import plain_flower
    rounds = plain_flower(sc)
else:
    t0 = time.perf_counter()
    res = fedforget.run(sc, out=spec["out"], engine=spec["kind"])
    out["wall_s"] = time.perf_counter() - t0
    ev = read_events(res.run_dir)
    ends = [e for e in ev if e["event"] == "round_end"]
    rounds = list(np.diff([e["t"] for e in ends]))
    # Over the rounds the oracle watches (from the first event on).
    first = min((e["round"] for e in ev if e["event"] in ("withdraw", "delete")), default=None)
    live = [(e["oracle_s"], d) for e, d in zip(ends[1:], rounds) if first is not None and e["round"] >= first]
    out["oracle_share"] = float(np.median([o / d for o, d in live])) if live else None
    out["final_accuracy"] = res.final()
    if spec.get("parts"):
        t1 = time.perf_counter()
        from fedforget.report import write_report
        write_report(res.run_dir)
        m = read_metrics(res.run_dir)
        first = next(e["t"] for e in ev if e["event"] in ("withdraw", "delete"))
        parts = {  # disjoint; the prefix (everything before the event) is reported apart
            "startup (data, runtime)": out["wall_s"] - ev[-1]["t"],
            "retrain arm": float(m[m.metric == "retrain_wall_s_to_end"].value.max()),
            "unlearning steps": float(m[m.metric == "cost_wall_s"].value.sum()),
            "oracle": sum(e["oracle_s"] for e in ends) + sum(e.get("wall_s", 0) for e in ev if e["event"] == "oracle_calibrated"),
            "accuracy audit": sum(e["accuracy_audit_s"] for e in ends),
            "report": time.perf_counter() - t1,
        }
        parts["total"] = out["wall_s"] + parts["report"]
        out["prefix_s"] = next(e["t"] for e in ev if e["event"] in ("withdraw", "delete"))
        out["parts"] = parts
out["round_ms"] = float(np.median(rounds[2:]) * 1000)
print("RESULT " + json.dumps(out))
"""


def _tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        p = int(stat.parent.name)
        children.setdefault(int(fields[1]), []).append(p)
        rss[p] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        total += rss.get(p, 0)
        stack += children.get(p, [])
    return total


def measure(kind: str, config: str, overrides: list[str], parts: bool = False) -> dict:
    """Run one measurement in a subprocess; its peak process-tree RSS is sampled."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        spec = {"kind": kind, "config": str(ROOT / "configs" / config), "overrides": overrides,
                "out": str(Path(tmp) / "run"), "parts": parts}
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(ROOT), json.dumps(spec)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env={**os.environ, "FLWR_TELEMETRY_ENABLED": "0"})
        peak = [0]

        def sample() -> None:
            while proc.poll() is None:
                peak[0] = max(peak[0], _tree_rss(proc.pid))
                time.sleep(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        stdout, stderr = proc.communicate()
        sampler.join()
    lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{kind} {config} {overrides} failed:\n{stderr[-3000:]}")
    out = {"kind": kind, "config": config, "overrides": overrides, **json.loads(lines[-1][7:]),
           "peak_rss_gb": round(peak[0] / 2**30, 2)}
    print(json.dumps(out), flush=True)
    return out


def section_targets(args) -> bool:
    targets = {"quickstart": {"wall_s": 90.0, "min_accuracy": 0.90}, "withdrawal": {"wall_s": 300.0},
               "two_withdrawals": {"wall_s": 300.0}}
    ok = True
    print("\n| scenario | engine | wall s | peak GB | final accuracy | target |\n|---|---|---|---|---|---|")
    for name, t in targets.items():
        r = measure("ray", f"{name}.toml", [])
        passed = r["wall_s"] <= t["wall_s"] and r["final_accuracy"] >= t.get("min_accuracy", 0.0)
        ok &= passed
        print(f"| {name} | ray | {r['wall_s']:.1f} | {r['peak_rss_gb']} | {r['final_accuracy']:.3f} | "
              f"{t} {'PASS' if passed else 'FAIL'} |")
    return ok


def section_scale(args) -> bool:
    rows = []
    for n in (10, 100, 1000):
        ov = SCALE_BASE + [f"data.num_clients={n}", f"train.rounds={args.rounds}"]
        floor = measure("floor", "quickstart.toml", ov)
        rows.append((n, "floor (PyTorch)", floor, 1.0))
        for eng in ENGINES:
            r = measure(eng, "quickstart.toml", ov)
            rows.append((n, eng, r, r["round_ms"] / floor["round_ms"]))
    print("\n| clients | engine | ms per round | x floor | peak GB (process tree) |\n|---|---|---|---|---|")
    for n, name, r, ratio in rows:
        print(f"| {n:,} | {name} | {r['round_ms']:.1f} | {ratio:.2f} | {r['peak_rss_gb']} |")
    return True


def section_overhead(args) -> bool:
    setups = {"quickstart, 10 clients, all per round": [f"train.rounds={args.rounds}"],
              "synthetic, 100 clients, 10% per round": SCALE_BASE + ["data.num_clients=100", f"train.rounds={args.rounds}"]}
    ok = True
    table = []
    for label, ov in setups.items():
        r = {k: measure(k, "quickstart.toml", ov) for k in ("floor", "plain_flower", *ENGINES)}
        ratios = {
            "inline/floor": (r["inline"]["round_ms"] / r["floor"]["round_ms"], 1.5),
            "actors/floor": (r["actors"]["round_ms"] / r["floor"]["round_ms"], 2.0),
            "ray/plain Flower": (r["ray"]["round_ms"] / r["plain_flower"]["round_ms"], 1.10),
            "ray/floor": (r["ray"]["round_ms"] / r["floor"]["round_ms"], None),
        }
        ok &= all(v <= t for v, t in ratios.values() if t is not None)
        table.append((label, r, ratios))
    print("\n| setup | floor ms | plain Flower ms | inline ms | actors ms | ray ms | ratios (target) |\n|---|---|---|---|---|---|---|")
    for label, r, ratios in table:
        txt = "; ".join(f"{k} {v:.2f}" + (f" (<= {t})" if t else "") for k, (v, t) in ratios.items())
        print(f"| {label} | " + " | ".join(f"{r[k]['round_ms']:.1f}" for k in ("floor", "plain_flower", *ENGINES))
              + f" | {txt} |")
    return ok


def section_oracle(args) -> bool:
    ok = True
    print("\n| scenario | engine | ms per round | oracle share of a round | target |\n|---|---|---|---|---|")
    for config, ov in (("withdrawal.toml", []), ("scale100.toml", ["train.rounds=22"])):
        r = measure("inline", config, ov)
        ok &= r["oracle_share"] <= 0.10
        print(f"| {config} | inline | {r['round_ms']:.1f} | {r['oracle_share']:.1%} | <= 10% |")
    return ok


def section_scenario(args) -> bool:
    r = measure("inline", "scale100.toml", [], parts=True)
    p = r["parts"]
    other = p["total"] - sum(v for k, v in p.items() if k != "total")
    print(f"\nconfigs/scale100.toml, inline: {p['total']:.1f} s, peak {r['peak_rss_gb']} GB; "
          f"the prefix (rounds before the event) took {r['prefix_s']:.1f} s of it\n")
    print("| part | s | share |\n|---|---|---|")
    for k, v in [*((k, v) for k, v in p.items() if k != "total"), ("other (original and method arms' rounds, I/O)", other)]:
        print(f"| {k} | {v:.1f} | {v / p['total']:.0%} |")
    return True


def section_tracking(args) -> bool:
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = [f'tracking.mlflow_uri="{Path(tmp).as_uri()}"']
        for label, backends in (("none", "[]"), ("tensorboard", '["tensorboard"]'), ("mlflow", '["mlflow"]'),
                                ("both", '["tensorboard","mlflow"]')):
            rows.append((label, measure("inline", "withdrawal.toml", [f"tracking.backends={backends}", *store])))
    base = rows[0][1]
    print("\n| trackers | wall s | x untracked | ms per round | x untracked |\n|---|---|---|---|---|")
    for label, r in rows:
        print(f"| {label} | {r['wall_s']:.1f} | {r['wall_s'] / base['wall_s']:.2f} | {r['round_ms']:.1f} | "
              f"{r['round_ms'] / base['round_ms']:.2f} |")
    return True


SECTIONS = {"targets": section_targets, "scale": section_scale, "overhead": section_overhead,
            "oracle": section_oracle, "scenario": section_scenario, "tracking": section_tracking}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--section", nargs="+", choices=sorted(SECTIONS), default=list(SECTIONS))
    ap.add_argument("--rounds", type=int, default=12, help="rounds per per-round measurement")
    args = ap.parse_args()
    ok = True
    for name in args.section:
        print(f"\n## {name}", flush=True)
        ok &= SECTIONS[name](args)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
