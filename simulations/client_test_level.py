"""The client-level membership test's true level on the shipped scenarios' data.

For every withdrawn client of every scenario in ``configs/``, the client's
forget set and the never-trained pool have the class counts of a real run; the
scores are drawn from one skewed distribution per class (the null: the client
was never trained on, so its samples and the pool's are exchangeable within a
class). A 5% test should reject 5% of the replicates. Side by side:

- ``pseudo-client``: the test before issue 17 (pseudo-clients drawn with
  replacement from the pool; its spread ignores the pool mean's variance);
- ``permutation``: the exact stratified permutation test fedforget uses now.

    python simulations/client_test_level.py [--replicates 1000]

Prints one row per (scenario, client) and writes
``simulations/results/client_test_level.csv``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import kstest, norm

from fedforget.config import load_scenario
from fedforget.data.federated import federated_data_for
from fedforget.oracle.audit import MembershipAudit
from fedforget.oracle.client_level import N_PERMUTATIONS, ClientMembershipTest


def pseudo_client_pvalue(member_y, pool_y, member_s, pool_s, rng, n_pseudo=200) -> float:
    """The pre-fix statistic: the client's mean against pseudo-clients drawn
    with replacement from the pool, normal null from their spread."""
    cols = []
    for c, k in zip(*np.unique(member_y, return_counts=True), strict=True):
        cols.append(rng.choice(np.flatnonzero(pool_y == c), size=(n_pseudo, k), replace=True))
    null = pool_s[np.concatenate(cols, axis=1)].mean(axis=1)
    return float(norm.sf((member_s.mean() - null.mean()) / null.std(ddof=1)))


def level(member_y: np.ndarray, pool_y: np.ndarray, replicates: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    classes = np.unique(np.r_[member_y, pool_y])
    shift, scale = rng.normal(0, 1, classes.max() + 1), rng.uniform(0.5, 2.0, classes.max() + 1)
    draw = lambda y: shift[y] - rng.exponential(scale[y])  # noqa: E731  (-loss: long lower tail)
    test = ClientMembershipTest.calibrate(member_y, pool_y, N_PERMUTATIONS, rng)
    old, new = [], []
    for _ in range(replicates):
        ms, ps = draw(member_y), draw(pool_y)
        old.append(pseudo_client_pvalue(member_y, pool_y, ms, ps, rng))
        new.append(test.evaluate(ms, ps)["client_mia_pvalue"])
    old, new = np.array(old), np.array(new)
    return {"n": len(member_y), "pool": int(np.isin(pool_y, np.unique(member_y)).sum()),
            "level_pseudo_client": float(np.mean(old <= 0.05)), "level_permutation": float(np.mean(new <= 0.05)),
            "ks_p_permutation": float(kstest(new, "uniform").pvalue), "power_warning": test.power_warning() is not None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicates", type=int, default=1000)
    args = ap.parse_args()
    here = Path(__file__).resolve().parent
    rows, t0 = [], time.perf_counter()
    for path in sorted((here.parent / "configs").glob("*.toml")):
        sc = load_scenario(path)
        withdrawn = [(c, ev.round) for ev in sc.events if ev.withdraws for c in ev.client_ids]
        if not withdrawn:
            continue
        fd = federated_data_for(sc)
        audit = MembershipAudit(fd=fd, seed=sc.seed)
        for c, rnd in withdrawn:
            members = audit.add(c, rnd, True, fd.train_ids[c]).members
            rows.append({"scenario": path.name, "client": c,
                         **level(fd.y[members], fd.y[audit.pool_ids], args.replicates, seed=c)})
    df = pd.DataFrame(rows)
    print(df.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print(f"{time.perf_counter() - t0:.0f} s")
    df.to_csv(here / "results" / "client_test_level.csv", index=False)


if __name__ == "__main__":
    main()
