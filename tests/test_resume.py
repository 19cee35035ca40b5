"""Checkpoints and resume: a run killed with SIGKILL at several points and
resumed gives the metrics (and per-sample scores) of an uninterrupted run,
wall-clock measurements aside."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import fedforget
import fedforget.results
from fedforget.cli import main

ROOT = Path(__file__).resolve().parent.parent


def _scenario():
    from tests.conftest import tiny

    # LiRA with reference federations, a withdrawal, two methods: every stage to kill in.
    return tiny(
        train={"rounds": 5, "local_epochs": 3},
        events=[{"round": 3, "client": 1}],
        unlearning={"methods": ["none", "perturb"], "recovery_rounds": 0},
        oracle={"attack": "lira", "n_boot": 50, "lira": {"shadows": 4}},
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    config = root / "scenario.toml"
    config.write_text(_scenario().to_toml())
    reference = fedforget.run(_scenario(), out=root / "uninterrupted")
    return root, config, reference


def _events_so_far(run_dir: Path) -> list[dict]:
    path = run_dir / "events.jsonl.partial"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written
            break
    return out


def _kill_when(config: Path, out: Path, marker, *extra: str) -> None:
    """Start a run in a subprocess and SIGKILL it as soon as ``marker(events)``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedforget", "run", str(config), "--engine", "inline", "--no-progress",
         "--out", str(out), *extra], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if marker(_events_so_far(out)):
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before the kill point"
    assert not (out / "metrics.parquet").exists()


KILL_POINTS = {
    # LiRA's reference federations train beside the prefix rounds from round 1.
    "during the reference (shadow) training": lambda ev: any(e["event"] == "oracle_references" for e in ev),
    "during the prefix": lambda ev: any(e["event"] == "round_end" and e["round"] == 2 for e in ev),
    "during the oracle's calibration": lambda ev: any(e["event"] == "withdraw" for e in ev),
    "during an unlearning step": lambda ev: any(e["event"] == "oracle_calibrated" for e in ev),
    "after the last round": lambda ev: any(e["event"] == "round_end" and e["round"] == 5 for e in ev),
}


def _plant_stale_tensorboard_value(out: Path) -> None:
    """A value past the checkpoint, as a kill between logging and checkpointing
    leaves (too narrow a window to hit with a real kill)."""
    from torch.utils.tensorboard import SummaryWriter

    from tests.test_tracking import _later

    _later()  # after the killed process's files, before the resumed one's (name order)
    with SummaryWriter(str(out / "tensorboard" / "original")) as stale:
        stale.add_scalar("global/test_accuracy", 99.0, 4)
    _later()


def _assert_tensorboard_equals(out: Path, metrics: pd.DataFrame) -> None:
    """The resumed run's event files, read by TensorBoard's reader, equal its
    metrics.parquet (wall-clock metrics aside): the planted value is gone and
    no step shows twice."""
    from tests.conftest import TIMED_METRICS
    from tests.test_tracking import _assert_close, _expected, _scalars

    metrics = metrics[~metrics.metric.isin(TIMED_METRICS)]
    for arm in sorted(metrics.arm.unique()):
        got = _scalars(out / "tensorboard" / arm)
        want = _expected(metrics, arm)
        assert {k for k in got if k not in want} <= {k for k in got if k[0].rsplit("/", 1)[-1] in TIMED_METRICS}
        _assert_close({k: got[k] for k in want}, want, rel=1e-6)


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_killed_and_resumed_run_equals_an_uninterrupted_one(setup, point):
    from tests.conftest import assert_same_metrics

    root, config, reference = setup
    out = root / point.replace(" ", "-").replace("'", "").replace("(", "").replace(")", "")
    tracked = point == "during the prefix"  # one kill point also logs to TensorBoard
    _kill_when(config, out, KILL_POINTS[point], *(["--track", "tensorboard"] if tracked else []))
    if tracked:
        _plant_stale_tensorboard_value(out)
    resumed = fedforget.resume(out)
    if tracked:
        _assert_tensorboard_equals(out, resumed.metrics)
    continued = [e for e in fedforget.results.read_events(out) if e["event"] == "resumed"]
    if point != "during the reference (shadow) training":  # killed before round 1 ended: starts over
        assert continued and continued[0]["after_round"] >= 1
    assert_same_metrics(resumed.metrics, reference.metrics)
    keys = ["arm", "round", "client", "sample_id"]
    a = pd.read_parquet(out / "scores.parquet").sort_values(keys).reset_index(drop=True)
    b = pd.read_parquet(reference.run_dir / "scores.parquet").sort_values(keys).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    assert not (out / "checkpoint.pt").exists()  # removed on success
    assert (out / "events.jsonl").is_file() and (out / "report.html").is_file()


def test_resume_refuses_what_it_cannot_continue(setup, tmp_path, capsys):
    root, config, reference = setup
    assert main(["resume", str(reference.run_dir)]) == 2
    assert "already finished" in capsys.readouterr().err
    assert main(["resume", str(tmp_path)]) == 2
    assert "not a fedforget run directory" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "resolved.toml").write_text(config.read_text())
    (broken / "events.jsonl.partial").write_text("")
    (broken / "checkpoint.pt").write_bytes(b"half a checkpoint")
    before = sorted(p.name for p in broken.iterdir())
    assert main(["resume", str(broken)]) == 2
    assert "unreadable checkpoint" in capsys.readouterr().err
    assert sorted(p.name for p in broken.iterdir()) == before


def test_checkpoints_can_be_kept_or_switched_off(tmp_path):
    from fedforget.config import with_overrides

    kept = fedforget.run(with_overrides(_scenario(), ["runtime.keep_checkpoints=true", "oracle.attack=\"loss\""]),
                         out=tmp_path / "kept")
    assert (kept.run_dir / "checkpoint.pt").is_file()
    off = fedforget.run(with_overrides(_scenario(), ["runtime.checkpoints=false", "oracle.attack=\"loss\""]),
                        out=tmp_path / "off")
    assert not (off.run_dir / "checkpoint.pt").exists()
