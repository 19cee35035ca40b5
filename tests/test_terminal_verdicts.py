"""The verdict table `fedforget run` prints at the end of a run with events,
and `fedforget report RUN_DIR --text` prints again: its numbers are
metrics.parquet's."""

from __future__ import annotations

import tomli_w

from fedforget.analysis import load
from fedforget.cli import main

SCENARIO = {
    "name": "terminal", "seed": 1,
    "data": {"dataset": "synthetic", "num_clients": 4,
             "synthetic": {"samples": 600, "features": 40, "informative": 10, "classes": 5}},
    "model": {"name": "mlp", "hidden": [64]},
    "train": {"rounds": 4, "lr": 0.1, "local_epochs": 2},
    "runtime": {"engine": "inline"},
    "events": [{"round": 3, "client": 1}],
    "unlearning": {"methods": ["none", "federaser"], "recovery_rounds": 1},
    "oracle": {"n_boot": 10, "controls": 0},
}


def _table(text: str) -> dict[str, list[str]]:
    """Rows of the printed table by arm (cells split on runs of 2+ spaces)."""
    import re

    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("arm "))
    rows = {}
    for line in lines[start + 2:]:
        if not line.strip() or line.startswith("Reading"):
            break
        cells = re.split(r"\s{2,}", line.strip())
        rows[cells[0]] = cells
    return rows


def test_run_prints_the_verdict_table_with_the_run_directory_numbers(tmp_path, capsys):
    cfg = tmp_path / "s.toml"
    cfg.write_text(tomli_w.dumps(SCENARIO))
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--seeds", "2", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "Forgetting, 2 seeds" in printed and "Reading:" in printed
    rows = _table(printed)
    assert set(rows) == {"original", "retrain", "none", "federaser"}
    m = load(out).metrics
    for arm, cells in rows.items():
        for col, (rnd, metric) in {1: (2.5, "mia_auc"), 2: (2.5, "fr"), 4: (4.0, "mia_auc")}.items():
            sel = (m.arm == arm) & (m["round"] == rnd) & (m.client == 1) & (m.metric == metric)
            assert cells[col] == f"{m[sel].value.mean():.3f}", (arm, metric)
    gaps = load(out).verdicts(at="final")
    v = gaps[(gaps.arm == "none") & (gaps.client == 1) & (gaps.metric == "mia_auc")].iloc[0]
    assert rows["none"][6] == f"{v['mean']:+.3f} ± {(v.hi - v.lo) / 2:.3f} {v.verdict}"

    assert main(["report", str(out), "--text"]) == 0
    again = capsys.readouterr().out
    assert again.strip() in printed


def test_no_table_without_events(tmp_path, capsys):
    cfg = tmp_path / "s.toml"
    cfg.write_text(tomli_w.dumps({k: v for k, v in SCENARIO.items() if k not in ("events", "unlearning")}))
    assert main(["run", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "Forgetting" not in printed and "final test accuracy (original)" in printed


def test_resume_says_where_it_continued(tmp_path, capsys):
    cfg = tmp_path / "s.toml"
    cfg.write_text(tomli_w.dumps({**SCENARIO, "runtime": {"engine": "inline", "keep_checkpoints": True}}))
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    # A run killed after its last checkpoint and before events.jsonl (written last).
    (out / "events.jsonl").rename(out / "events.jsonl.partial")
    capsys.readouterr()
    assert main(["resume", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "resumed after round 4 (its last complete round)" in printed and "Forgetting" in printed


def test_a_scenario_warning_is_one_line(tmp_path, capsys):
    cfg = tmp_path / "s.toml"
    scenario = {**SCENARIO, "unlearning": {"methods": []}}
    cfg.write_text(tomli_w.dumps(scenario))
    assert main(["run", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "unlearning.methods is empty" in line]
    assert err == [err[0]] and err[0].startswith("warning: the scenario has [[events]]") and ".py:" not in err[0]


def test_results_summarise_in_a_terminal_and_plot_returns_a_figure(tmp_path):
    import fedforget
    from tests.conftest import tiny

    res = fedforget.run(tiny(events=[{"round": 2, "client": 1}], unlearning={"methods": ["none"]}), out=tmp_path / "r")
    assert repr(res).startswith("<fedforget run ") and "\n" not in repr(res) and len(repr(res)) < 300
    assert repr(res.results()).startswith("<fedforget run ") and "\n" not in repr(res.results())
    fig = res.plot(client=1)
    fig.savefig(tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 1000


def test_flwr_run_output_leaves_out_the_stale_supernode_lines():
    import io

    from fedforget.flower.deployment import relay

    log = [
        "INFO :      Starting Flower Simulation\n",
        "WARNING :   Since flwr 1.32, default simulated SuperNodes changed from 10 to 2.\n",
        "INFO :      Federation `@none/default` (6 simulated SuperNodes)\n",
        "INFO :      To change federation size, use the following command:\n",
        "INFO :      \tflwr federation simulation-config @none/default <superlink> --num-supernodes <N>\n",
        "run directory: /tmp/x\n",
    ]
    out = io.StringIO()
    relay(log, out)
    assert out.getvalue().splitlines() == [log[0].rstrip("\n"), log[2].rstrip("\n"), log[5].rstrip("\n")]
