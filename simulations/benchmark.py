"""Speed and memory targets of the shipped scenarios (not part of the test suite).

    python simulations/benchmark.py [--engine ray|inline] [--only quickstart|withdrawal|two_withdrawals]

Each scenario runs in its own fresh runtime (Ray + Flower start-up included, as
a user sees it) in a subprocess, timed wall-clock with its peak RSS. Targets:
quickstart within 90 s with final test accuracy >= 0.90; withdrawal within 5 min.
Prints one line per scenario and PASS/FAIL; exit status 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {
    "quickstart": {"wall_s": 90.0, "min_accuracy": 0.90},
    "withdrawal": {"wall_s": 300.0},
    "two_withdrawals": {"wall_s": 300.0},
}

CHILD = """
import json, sys, fedforget
res = fedforget.run(sys.argv[1], engine=sys.argv[2], out=sys.argv[3])
print(json.dumps({"final_accuracy": res.final()}))
"""


def run_one(name: str, engine: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(ROOT / "configs" / f"{name}.toml"), engine, str(Path(tmp) / "run")],
            capture_output=True, text=True, env={**os.environ, "FLWR_TELEMETRY_ENABLED": "0"},
        )
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    # ru_maxrss of finished children, in KiB on Linux (the largest child so far).
    rss_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    return {"scenario": name, "engine": engine, "wall_s": round(wall, 1), "peak_rss_gb": round(rss_gb, 2), **out}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", default="ray", choices=["ray", "inline"])
    ap.add_argument("--only", choices=sorted(TARGETS))
    args = ap.parse_args()
    ok = True
    for name in [args.only] if args.only else list(TARGETS):
        r = run_one(name, args.engine)
        t = TARGETS[name]
        passed = r["wall_s"] <= t["wall_s"] and r["final_accuracy"] >= t.get("min_accuracy", 0.0)
        ok &= passed
        print(json.dumps({**r, "target": t, "pass": passed}))
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
