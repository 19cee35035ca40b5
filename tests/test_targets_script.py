"""simulations/targets.py on hand-made run directories: the package's verdicts
become met / missed per target, p-values and speed-ups are judged seed by
seed, and a sweep gives one block per cell."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from tests.simulation_scripts import load_simulation

targets = load_simulation("targets")
#: Per seed: forsaken's AUC gap, its client-level p (after the step and at the end), its step speed-up.
SEEDS = [(0.004, 0.30, 20.0), (-0.003, 0.01, 18.0), (0.001, 0.40, 12.0)]


def _run(path: Path, seed: int, gap: float, p: float, speedup: float) -> None:
    """A finished run: client 2 withdraws at round 10, the last round is 11."""
    path.mkdir(parents=True)
    rows = [("original", 9.0, 2, "mia_auc", 0.9)]
    for rnd in (9.5, 11.0):
        for arm, auc, acc, pv in (("original", 0.9, 0.80, 0.001), ("retrain", 0.5, 0.80, 0.6),
                                  ("forsaken", 0.5 + gap, 0.80 + gap, p)):
            rows += [(arm, rnd, 2, "mia_auc", auc), (arm, rnd, None, "test_accuracy", acc),
                     (arm, rnd, 2, "client_mia_pvalue", pv), (arm, rnd, 2, "client_mia_z", 10 * gap)]
    rows += [("forsaken", 11.0, 2, "relapse_auc", gap / 2), ("forsaken", 11.0, 2, "relapse_z", gap),
             ("forsaken", 10.0, None, "cost_client_steps", 100.0), ("forsaken", 10.0, None, "speedup_steps", speedup),
             ("forsaken", 10.0, None, "speedup_wall", 3.0)]
    df = pd.DataFrame(rows, columns=["arm", "round", "client", "metric", "value"])
    df.assign(client=df.client.astype("Int64")).to_parquet(path / "metrics.parquet")
    (path / "events.jsonl").write_text(json.dumps({"event": "withdraw", "round": 10, "clients": [2]}) + "\n")
    (path / "resolved.toml").write_text(f'name = "tiny"\nseed = {seed}\n')


def _seeds(root: Path) -> Path:
    for seed, (gap, p, speedup) in enumerate(SEEDS):
        _run(root / f"seed-{seed}", seed, gap, p, speedup)
    return root


def test_targets_of_a_multi_seed_directory(tmp_path):
    res = targets.load(_seeds(tmp_path / "tiny"))
    df = targets.checks(res, "tiny").set_index("check")
    assert set(df.arm) == {"forsaken"} and set(df.client) == {2}
    assert df.loc["mia_auc@event", "verdict"] == "equivalent" and df.loc["mia_auc@event", "met"]
    assert not df.loc["client_p@event", "met"] and df.loc["client_p@event", "verdict"] == "detected in 1 of 3"
    assert not df.loc["speedup_steps", "met"] and "lowest seed 12.0×" in df.loc["speedup_steps", "miss"]
    assert df.loc["speedup_wall", "met"]
    assert len(df) == len(targets.CHECKS)


def test_a_sweep_gives_a_block_per_cell_and_main_writes_both_files(tmp_path):
    study = tmp_path / "clients"
    cells = [{"cell": i, "dir": f"cell-00{i}", "values": {"data.num_clients": str(n)}} for i, n in enumerate((5, 10))]
    for c in cells:
        _seeds(study / c["dir"])
    (study / "study.json").write_text(json.dumps({"axes": {"data.num_clients": ["5", "10"]}, "cells": cells}))
    out = tmp_path / "out" / "targets"
    text = targets.main([str(study), "--out", str(out)])
    assert "## clients, num_clients=5" in text and "## clients, num_clients=10" in text
    assert text.count("forsaken, client 2:") == 2
    assert out.with_suffix(".md").read_text() == text
    csv = pd.read_csv(out.with_suffix(".csv"))
    assert set(csv.block) == {"num_clients=5", "num_clients=10"} and len(csv) == 2 * len(targets.CHECKS)


def test_a_focus_whose_gaps_and_p_equal_none_is_flagged():
    rows = [{"arm": arm, "client": 2, "check": c, "mean": 0.1, "values": None}
            for arm in ("forsaken", "none") for c in ("mia_auc@event", "mia_auc@final", "test_accuracy@event")]
    rows += [{"arm": arm, "client": 2, "check": "client_p@event", "mean": float("nan"), "values": [0.2, 0.01]}
             for arm in ("forsaken", "none")]
    block = pd.DataFrame(rows)
    assert targets.same_as_none(block, 2)
    block.loc[(block.arm == "forsaken") & (block.check == "mia_auc@event"), "mean"] = 0.05
    assert not targets.same_as_none(block, 2)
