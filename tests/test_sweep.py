"""Sweeps: the Cartesian product of swept keys with seeds, a study table, and
a rerun that continues an interrupted sweep without redoing finished runs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import fedforget
from fedforget.cli import main as main_cli
from fedforget.config import ConfigError
from fedforget.sweep import cells_of, parse_axes, split_values

ROOT = Path(__file__).resolve().parent.parent


def test_values_split_at_top_level_commas_only():
    assert split_values('0.1,0.2') == ["0.1", "0.2"]
    assert split_values('["forsaken","none"],["none"]') == ['["forsaken","none"]', '["none"]']
    assert split_values('"a,b",c') == ['"a,b"', "c"]
    with pytest.raises(ConfigError, match="unbalanced"):
        split_values('["a",b')
    axes = parse_axes(["train.lr=0.1,0.2", "data.alpha=1,10,100"])
    assert len(cells_of(axes)) == 6
    with pytest.raises(ConfigError, match="--zip needs lists of one length"):
        cells_of(axes, zipped=True)
    assert cells_of(parse_axes(["a=1,2", "b=3,4"]), zipped=True) == [{"a": "1", "b": "3"}, {"a": "2", "b": "4"}]


def test_a_bad_cell_is_refused_before_anything_runs(tmp_path):
    from tests.conftest import tiny

    config = tmp_path / "s.toml"
    config.write_text(tiny().to_toml())
    with pytest.raises(ConfigError, match="sweep cell 1"):
        fedforget.sweep(config, ["train.lr=0.1,inf"], out=tmp_path / "study")
    assert not (tmp_path / "study").exists()


def _config(tmp_path) -> Path:
    from tests.conftest import tiny

    sc = tiny(train={"rounds": 4, "local_epochs": 3}, events=[{"round": 3, "client": 1}],
              unlearning={"methods": ["none", "pga"], "recovery_rounds": 0}, oracle={"n_boot": 20})
    path = tmp_path / "sweep.toml"
    path.write_text(sc.to_toml())
    return path


def test_sweep_is_interrupted_and_continues_without_redoing_finished_runs(tmp_path):
    config, out = _config(tmp_path), tmp_path / "study"
    cmd = [sys.executable, "-m", "fedforget", "sweep", str(config), "train.lr=0.1,0.3",
           'unlearning.methods=["none","pga"],["none"]', "--seeds", "2", "--engine", "inline", "--no-progress",
           "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if len(list(out.glob("cell-*/seed-*/events.jsonl"))) >= 3:  # finished runs
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the sweep ended before it was interrupted"
    done = {p: p.stat().st_mtime_ns for p in out.glob("cell-*/seed-*/events.jsonl")}
    assert 3 <= len(done) < 8
    table = fedforget.sweep(config, ["train.lr=0.1,0.3", 'unlearning.methods=["none","pga"],["none"]'], seeds=2,
                            out=out, engine="inline")
    assert {p: p.stat().st_mtime_ns for p in done} == done  # finished runs were not redone
    assert len(list(out.glob("cell-*/seed-*/events.jsonl"))) == 8
    # one row per (cell, seed, arm, withdrawn client): cells with pga have 4 arms, the others 3
    assert len(table) == 2 * 2 * 4 + 2 * 2 * 3
    assert set(table.columns) >= {"cell", "train.lr", "unlearning.methods", "seed", "arm", "client",
                                  "event_mia_auc", "final_mia_auc", "final_test_accuracy", "cost_client_steps",
                                  "speedup_steps"}
    assert sorted(table[table.arm == "pga"]["train.lr"].unique()) == [0.1, 0.3]  # typed, not strings
    spec = json.loads((out / "study.json").read_text())
    assert [c["values"]["train.lr"] for c in spec["cells"]] == ["0.1", "0.1", "0.3", "0.3"]

    # The study report: one figure per swept key, rendered in headless Chromium.
    from tests.test_report import rendered_figures

    html = (out / "report.html").read_text()
    assert html.count("<h2>") == 3 and "train.lr" in html and "By cell" in html
    rendered, total = rendered_figures(out / "report.html", tmp_path)
    assert rendered == total == 2
    assert main_cli(["report", str(out)]) == 0

    # The analysis API reads the study back with the swept keys as columns.
    res = fedforget.load(out)
    assert res.kind == "study" and res.swept == ["train.lr", "unlearning.methods"]
    assert len(res.scenarios) == 8 and set(res.scenarios["train.lr"]) == {0.1, 0.3}
    gap = res.gap_to_retrain("mia_auc")
    gap = gap[gap.client == 1]  # the withdrawn client (control clients differ by seed)
    assert set(gap.arm) == {"original", "none", "pga"} and (gap.n == 2).all()
    row = gap[(gap.arm == "pga") & (gap["train.lr"] == 0.1)].iloc[0]
    mine = table[(table.arm == "pga") & (table["train.lr"] == 0.1)].set_index("seed").final_mia_auc
    ref = table[(table.arm == "retrain") & (table["train.lr"] == 0.1)
                & (table["unlearning.methods"] == '["none","pga"]')].set_index("seed").final_mia_auc
    assert row["mean"] == pytest.approx((mine - ref).mean())
    assert row.lo < row["mean"] < row.hi
    assert "Final MIA AUC gap" in res._repr_html_()

    # Exports round-trip: CSV and JSON read back equal the Parquet tables.
    import pandas as pd

    fedforget.export(out, "csv", tmp_path / "csv")
    fedforget.export(out, "json", tmp_path / "json")
    m = res.metrics.reset_index(drop=True)
    back = pd.read_csv(tmp_path / "csv" / "metrics.csv", dtype={"train.lr": str, "unlearning.methods": str})
    pd.testing.assert_frame_equal(back[m.columns].astype(m.dtypes.astype(str).to_dict()), m.astype(m.dtypes.astype(str).to_dict()),
                                  check_exact=False, rtol=1e-12)
    back = pd.read_json(tmp_path / "json" / "metrics.json", orient="records", dtype=False, precise_float=True)
    assert len(back) == len(m) and set(back.columns) == set(m.columns)
    np.testing.assert_array_equal(back.value.to_numpy(dtype=float), m.value.to_numpy(dtype=float))
    costs = pd.read_json(tmp_path / "json" / "costs.json", orient="records", dtype=False, precise_float=True)
    assert np.isinf(costs.speedup_steps).sum() == np.isinf(res.costs().speedup_steps).sum() > 0  # 'none' costs nothing
    dictionary = pd.read_csv(tmp_path / "csv" / "data_dictionary.csv")
    assert "(undocumented)" not in set(dictionary.meaning) and set(m.metric) <= set(dictionary.name)


def test_a_run_killed_before_its_scenario_was_written_is_started_afresh(tmp_path):
    """A kill between creating a run directory and writing resolved.toml leaves
    a directory with nothing of the run; a rerun clears it and runs the cell."""
    config, out = _config(tmp_path), tmp_path / "study"
    torn = out / "cell-000" / "seed-3"
    torn.mkdir(parents=True)
    (torn / "resolved.toml.tmp").write_text("half")
    table = fedforget.sweep(config, ["train.lr=0.1"], out=out, engine="inline")
    assert (torn / "events.jsonl").is_file() and not (torn / "resolved.toml.tmp").exists()
    assert set(table.seed) == {3}


def test_a_failing_cell_does_not_stop_the_sweep_and_is_not_rerun(tmp_path):
    config, out = _config(tmp_path), tmp_path / "study"
    table = fedforget.sweep(config, ["train.lr=1e30,0.1"], out=out, engine="inline")
    failed = out / "cell-000" / "seed-3" / "failed.txt"
    assert "diverged" in failed.read_text()
    assert set(table["train.lr"]) == {0.1}  # the other cell ran
    mtime = failed.stat().st_mtime_ns
    fedforget.sweep(config, ["train.lr=1e30,0.1"], out=out, engine="inline")
    assert failed.stat().st_mtime_ns == mtime  # not retried
    config.write_text(config.read_text().replace("rounds = 4", "rounds = 3"))
    with pytest.raises(ConfigError, match="another scenario than this sweep's cell"):
        fedforget.sweep(config, ["train.lr=1e30,0.1"], out=out, engine="inline")


def test_set_keys_are_fixed_not_axes_and_swept_values_keep_their_types(tmp_path, capsys):
    config, out = _config(tmp_path), tmp_path / "study"
    assert main_cli(["sweep", str(config), "train.lr=0.1,0.3", "--set", "train.rounds=3", "--engine", "inline",
                     "--no-progress", "--out", str(out)]) == 0
    spec = json.loads((out / "study.json").read_text())
    assert list(spec["axes"]) == ["train.lr"]  # --set is not an axis
    res = fedforget.load(out)
    assert res.metrics["round"].max() == 3  # ... but it applies to every cell
    assert res.metrics["train.lr"].dtype.kind == "f" and set(res.metrics["train.lr"]) == {0.1, 0.3}
    import pandas as pd

    assert pd.read_parquet(out / "study.parquet")["train.lr"].dtype.kind == "f"
    assert main_cli(["export", str(out), "--out", str(tmp_path / "csv")]) == 0
    study = pd.read_csv(tmp_path / "csv" / "study.csv")
    assert set(study["train.lr"]) == {0.1, 0.3} and (tmp_path / "csv" / "verdicts.csv").is_file()
