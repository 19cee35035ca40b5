"""TensorBoard and MLflow trackers: what a run logs reads back, with each tool's
own reader, equal to metrics.parquet; resumed trackers continue the same runs."""

import math
import time

import numpy as np
import pandas as pd
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fedforget import tracking
from fedforget.cli import main
from fedforget.config import ConfigError
from fedforget.results import MetricRow, read_metrics
from fedforget.tracking import MLflowTracker, TensorBoardTracker, tag_of, trackers_for
from tests.conftest import tiny


def _scalars(log_dir) -> dict[tuple[str, int], float]:
    """(tag, step) -> value as TensorBoard's reader shows them; a step shown twice fails."""
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})  # 0: keep every event
    acc.Reload()
    seen = [((tag, e.step), e.value) for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag)]
    shown = dict(seen)
    assert len(shown) == len(seen), "a step shown twice"
    return shown


def _expected(metrics: pd.DataFrame, arm: str) -> dict[tuple[str, int], float]:
    rows = metrics[metrics.arm == arm]
    out = {}
    for r in rows.itertuples(index=False):
        client = None if pd.isna(r.client) else int(r.client)
        out[tag_of(MetricRow(r.arm, r.round, client, r.metric, r.value))] = r.value
    return out


def _assert_close(got: dict, want: dict, rel: float) -> None:
    assert set(got) == set(want)
    keys = sorted(want)
    np.testing.assert_allclose([got[k] for k in keys], [want[k] for k in keys], rtol=rel, equal_nan=True)


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    """One inline run with both trackers on, through the CLI's --track, in a fresh cwd."""
    root = tmp_path_factory.mktemp("tracked")
    config = root / "tiny.toml"
    config.write_text(tiny(events=[{"round": 2, "client": 1}], unlearning={"methods": ["none"]}).to_toml())
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # MLflow's default store: ./mlruns
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        assert main(["run", str(config), "--out", str(root / "run"), "--no-progress",
                     "--track", "tensorboard", "--track", "mlflow"]) == 0
    return root


def test_tensorboard_reads_back_every_metric(tracked_run):
    metrics = read_metrics(tracked_run / "run")
    arms = sorted(metrics.arm.unique())
    assert arms == ["none", "original", "retrain"]
    assert sorted(p.name for p in (tracked_run / "run" / "tensorboard").iterdir()) == arms
    for arm in arms:
        got = _scalars(tracked_run / "run" / "tensorboard" / arm)
        _assert_close(got, _expected(metrics, arm), rel=1e-6)  # TensorBoard stores float32
    # The audit right after the unlearning step: its own tag at the event's round.
    assert ("client_1/mia_auc_after_step", 2) in got


def test_mlflow_reads_back_params_and_every_metric(tracked_run):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(tracked_run / "mlruns").as_uri())
    exp = client.get_experiment_by_name("tiny")
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["train.rounds"] == "3" and parent.data.params["data.num_clients"] == "4"
    assert parent.data.tags["fedforget.run_dir"] == str((tracked_run / "run").resolve())
    children = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    metrics = read_metrics(tracked_run / "run")
    assert sorted(children) == sorted(metrics.arm.unique())
    for arm, run in children.items():
        assert run.info.status == "FINISHED"
        want = _expected(metrics, arm)
        keys = set(client.get_run(run.info.run_id).data.metrics)
        assert keys == {k for k, _ in want}
        history = [((key, m.step), m.value) for key in keys for m in client.get_metric_history(run.info.run_id, key)]
        assert len(history) == len(want)  # no step logged twice
        _assert_close(dict(history), want, rel=0)


def _later() -> None:
    """TensorBoard reads a directory's event files in name order, and a name
    holds its whole second, then the writer counter as text ("10" < "9"): a
    later process starts in a later second, and so do these generations."""
    time.sleep(1.1)


def test_tensorboard_resume_discards_steps_after_the_checkpoint(tmp_path):
    rows = lambda values: [MetricRow("original", s, None, "test_accuracy", v) for s, v in values]  # noqa: E731
    old = TensorBoardTracker(tmp_path)  # an earlier run in the same directory: a new run replaces it
    old.log(rows([(1, 9.0), (5, 9.0)]))
    old.close(True)
    _later()
    first = TensorBoardTracker(tmp_path)
    first.log(rows([(1, 0.1), (2, 0.2)]))
    state = first.state()  # what the checkpoint after round 2 holds
    first.log(rows([(3, 0.3)]))  # logged, then the run was killed before its checkpoint
    first.close(False)
    _later()
    again = TensorBoardTracker(tmp_path, state)
    again.log(rows([(3, 0.33), (4, 0.4)]))
    again.close(True)
    got = _scalars(tmp_path / "original")
    assert got == pytest.approx({("global/test_accuracy", s): v for s, v in [(1, 0.1), (2, 0.2), (3, 0.33), (4, 0.4)]})


def test_mlflow_resume_continues_the_same_runs(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()
    first = MLflowTracker(uri, "exp", "run", params={"seed": 0, "events": "x" * 7000}, tags={})
    first.log([MetricRow("retrain", 1.0, 0, "mia_auc", 0.6)])
    state = first.state()
    again = MLflowTracker(uri, "exp", "run", params={"seed": 0}, tags={}, state=state)
    again.log([MetricRow("retrain", 1.5, 0, "mia_auc", 0.55), MetricRow("retrain", 2.0, 0, "mia_auc", math.inf)])
    again.close(True)
    client = MlflowClient(tracking_uri=uri)
    assert len(client.search_runs([client.get_experiment_by_name("exp").experiment_id])) == 2  # parent + arm
    assert state["uri"] == uri  # a resume from another directory finds the same store
    hist = client.get_metric_history(state["arms"]["retrain"], "client_0/mia_auc")
    after = client.get_metric_history(state["arms"]["retrain"], "client_0/mia_auc_after_step")
    assert [(m.step, m.value) for m in hist] == [(1, 0.6), (2, math.inf)]
    assert [(m.step, m.value) for m in after] == [(2, 0.55)]
    parent = client.get_run(state["parent"])
    assert parent.info.status == "FINISHED"
    # MLflow caps a parameter at 6,000 characters: the cut is cut visibly.
    assert len(parent.data.params["events"]) == 6000 and parent.data.tags["fedforget.truncated_params"] == "events"


def test_tags_and_steps():
    assert tag_of(MetricRow("a", 4.0, None, "test_accuracy", 0.0)) == ("global/test_accuracy", 4)
    assert tag_of(MetricRow("a", 9.5, 2, "fr", 0.0)) == ("client_2/fr_after_step", 10)


def test_off_by_default_and_a_missing_extra_is_named(monkeypatch, tmp_path):
    assert trackers_for(tiny(), tmp_path) == {}
    real = tracking.importlib.util.find_spec
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda n: None if n == "mlflow" else real(n))
    with pytest.raises(ConfigError, match=r"'mlflow' needs the mlflow package: from a checkout, pip install -c "
                       r"constraints.txt -e '\.\[mlflow\]' \(or pip install 'fedforget\[mlflow\]'\)"):
        trackers_for(tiny(tracking={"backends": ["mlflow"]}), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_shared_tensorboard_dir_keeps_runs_apart(tmp_path):
    sc = tiny(tracking={"backends": ["tensorboard"], "tensorboard_dir": str(tmp_path / "tb")})
    dirs = [trackers_for(sc, tmp_path / "study" / f"cell-00{i}" / "seed-0")["tensorboard"].args[0] for i in (0, 1)]
    assert dirs == [tmp_path / "tb" / "cell-000" / "seed-0", tmp_path / "tb" / "cell-001" / "seed-0"]
    default = trackers_for(tiny(tracking={"backends": ["tensorboard"]}), tmp_path / "run")["tensorboard"].args[0]
    assert default == tmp_path / "run" / "tensorboard"


class _Broken:
    def __init__(self, fail_on: str) -> None:
        self.fail_on, self.logged = fail_on, 0

    def log(self, rows):
        if self.fail_on == "log":
            raise OSError("tracking server gone")
        self.logged += len(rows)

    def state(self):
        return {}

    def close(self, ok):
        if self.fail_on == "close":
            raise OSError("tracking server gone")


@pytest.mark.parametrize("fail_on", ["start", "log", "close"])
def test_a_failing_tracker_never_costs_the_run(tmp_path, monkeypatch, fail_on):
    import fedforget
    import fedforget.protocol.run as protocol_run
    from fedforget.results import read_events

    def start():
        if fail_on == "start":
            raise OSError("tracking server gone")
        return _Broken(fail_on)

    monkeypatch.setattr(protocol_run, "trackers_for", lambda *a: {"broken": start})
    with pytest.warns(RuntimeWarning, match=f"tracking: broken failed to {fail_on} .*tracking server gone"):
        result = fedforget.run(tiny(), out=tmp_path / "run")
    (err,) = [e for e in read_events(result.run_dir) if e["event"] == "tracking_error"]
    assert err["tracker"] == "broken" and err["during"] == fail_on
    assert (result.run_dir / "metrics.parquet").is_file() and (result.run_dir / "report.html").is_file()


def test_mlflow_marks_a_failed_run_failed(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()
    tracker = MLflowTracker(uri, "exp", "run", params={}, tags={})
    tracker.log([MetricRow("original", 1.0, None, "test_accuracy", 0.5)])
    tracker.close(False)
    client = MlflowClient(tracking_uri=uri)
    assert {client.get_run(r).info.status for r in [tracker.parent, *tracker.arms.values()]} == {"FAILED"}
