"""Live logging of a run's metric rows to TensorBoard and MLflow (``[tracking]``).

A tracker receives the rows the run directory gets (arm, round label, client,
metric, value) at the end of every round and when the run ends; the run
directory stays the record, a tracker is a view of it. Both trackers use one
layout:

- one tracker run per arm (TensorBoard: the subdirectory ``<arm>``; MLflow: a
  run nested under the fedforget run, named after the arm), so a tool overlays
  the arms on one chart;
- tags ``global/<metric>`` and ``client_<c>/<metric>``; steps are whole rounds.
  The audit right after an event's unlearning step (round label ``t - 0.5``)
  goes to ``<tag>_after_step`` at step ``t``.

A tracker is a view of the run directory, never the record: one that fails
(to start, log or close) is dropped with a warning and a ``tracking_error``
event, and the run goes on.

A resumed run continues the same tracker runs. TensorBoard reopens its
directories with ``purge_step`` one past the checkpoint's last step (its reader
drops what the killed process logged after the checkpoint); MLflow reopens the
same runs in the same store, whose histories may hold the interrupted round's
values twice (same steps; values equal except wall times).
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fedforget.config import ConfigError, Scenario, flatten
from fedforget.results import MetricRow

EXTRAS = {"tensorboard": ("tensorboard", "fedforget[tensorboard]"), "mlflow": ("mlflow", "fedforget[mlflow]")}
MLFLOW_BATCH = 1000  # MLflow's limit of metrics per log_batch call
MLFLOW_PARAM_CHARS = 6000  # MLflow's limit on a parameter value


def check_available(backends: Sequence[str]) -> None:
    """ConfigError naming the extra to install for a backend whose package is missing."""
    for name in backends:
        module, extra = EXTRAS[name]
        if importlib.util.find_spec(module) is None:
            short = extra.split("[", 1)[1].rstrip("]")
            raise ConfigError(f"tracking.backends: {name!r} needs the {module} package: from a checkout, "
                              f"pip install -c constraints.txt -e '.[{short}]' (or pip install '{extra}')")


def tag_of(row: MetricRow) -> tuple[str, int]:
    """A row's tag and integer step (see the module docstring)."""
    tag = f"global/{row.metric}" if row.client is None else f"client_{int(row.client)}/{row.metric}"
    rnd = float(row.round)
    return (tag, int(rnd)) if rnd.is_integer() else (f"{tag}_after_step", math.ceil(rnd))


class TensorBoardTracker:
    """Event files under ``log_dir/<arm>`` (``torch.utils.tensorboard``).

    Writers open with a ``purge_step``: TensorBoard's reader drops what the
    directory holds from that step on. A new run purges from step 0 (a run
    started over in place, or a reused ``tensorboard_dir``, replaces the old
    one); ``state`` (a checkpoint's) purges from one past the checkpoint's last
    step, what the killed process logged after it.
    """

    def __init__(self, log_dir: str | Path, state: dict | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._writer_class = SummaryWriter
        self.log_dir = Path(log_dir)
        self.last_step = int((state or {}).get("last_step", -1))
        self._purge_step = self.last_step + 1
        self._writers: dict[str, Any] = {}

    def _writer(self, arm: str):
        if arm not in self._writers:
            self._writers[arm] = self._writer_class(str(self.log_dir / arm), purge_step=self._purge_step)
        return self._writers[arm]

    def log(self, rows: Sequence[MetricRow]) -> None:
        for row in rows:
            tag, step = tag_of(row)
            self._writer(row.arm).add_scalar(tag, row.value, step)
            self.last_step = max(self.last_step, step)
        for w in self._writers.values():
            w.flush()

    def state(self) -> dict:
        return {"last_step": self.last_step}

    def close(self, ok: bool) -> None:
        for w in self._writers.values():
            w.close()


class MLflowTracker:
    """An MLflow run per fedforget run (parameters: the resolved scenario) with
    one nested run per arm holding its metrics."""

    def __init__(self, uri: str, experiment: str, run_name: str, *, params: dict[str, Any],
                 tags: dict[str, str], state: dict | None = None) -> None:
        if uri.startswith("file:") or "://" not in uri:
            # MLflow 3 keeps the local file store in maintenance mode behind this opt-in.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        if state:
            self.parent = state["parent"]
            # Every arm run of this parent, also one created after the checkpoint.
            children = self.client.search_runs(
                [self.client.get_run(self.parent).info.experiment_id],
                filter_string=f"tags.mlflow.parentRunId = '{self.parent}'",
            )
            self.arms = {r.data.tags["fedforget.arm"]: r.info.run_id for r in children}
            for run_id in [self.parent, *self.arms.values()]:
                self.client.update_run(run_id, status="RUNNING")
            return
        exp = self.client.get_experiment_by_name(experiment)
        self.experiment_id = exp.experiment_id if exp else self.client.create_experiment(experiment)
        self.parent = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags).info.run_id
        self.arms: dict[str, str] = {}
        self._log_params(params)

    def _log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:MLFLOW_PARAM_CHARS]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow's limit of parameters per batch
            self.client.log_batch(self.parent, params=items[i:i + 100])
        cut = [k for k, v in params.items() if len(str(v)) > MLFLOW_PARAM_CHARS]
        if cut:  # the whole value stays in the run directory's resolved.toml
            self.client.set_tag(self.parent, "fedforget.truncated_params", ",".join(cut))

    def _arm_run(self, arm: str) -> str:
        if arm not in self.arms:
            parent = self.client.get_run(self.parent)
            self.arms[arm] = self.client.create_run(
                parent.info.experiment_id, run_name=arm, tags={"mlflow.parentRunId": self.parent, "fedforget.arm": arm}
            ).info.run_id
        return self.arms[arm]

    def log(self, rows: Sequence[MetricRow]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        by_arm: dict[str, list] = defaultdict(list)
        for row in rows:
            tag, step = tag_of(row)
            by_arm[row.arm].append(Metric(tag, float(row.value), now, step))
        for arm, metrics in by_arm.items():
            run_id = self._arm_run(arm)
            for i in range(0, len(metrics), MLFLOW_BATCH):
                self.client.log_batch(run_id, metrics=metrics[i:i + MLFLOW_BATCH])

    def state(self) -> dict:
        return {"uri": self.uri, "parent": self.parent, "arms": dict(self.arms)}

    def close(self, ok: bool) -> None:
        status = "FINISHED" if ok else "FAILED"
        for run_id in [*self.arms.values(), self.parent]:
            self.client.set_terminated(run_id, status=status)


def trackers_for(scenario: Scenario, run_dir: str | Path, state: dict | None = None) -> dict[str, Callable[[], Any]]:
    """How to start each of the scenario's trackers, by backend name (``state``:
    a checkpoint's, to continue them). The run directory's writer starts them
    (:class:`fedforget.results.RunWriter`): a tracker that fails is dropped, the run goes on."""
    tr, run_dir, state = scenario.tracking, Path(run_dir), state or {}
    check_available(tr.backends)
    # The run directory's last two parts name its tracker runs: "cell-003/seed-1" in a sweep.
    run_name = "/".join(run_dir.resolve().parts[-2:])
    out: dict[str, Callable[[], Any]] = {}
    for name in tr.backends:
        if name == "tensorboard":
            log_dir = Path(tr.tensorboard_dir) / run_name if tr.tensorboard_dir else run_dir / "tensorboard"
            out[name] = functools.partial(TensorBoardTracker, log_dir, state.get(name))
        else:
            saved = state.get(name)
            uri = (saved or {}).get("uri") or tr.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI") \
                or Path("mlruns").resolve().as_uri()
            out[name] = functools.partial(
                MLflowTracker, uri, tr.mlflow_experiment or scenario.name, run_name,
                params=flatten(scenario.to_toml_dict()), tags={"fedforget.run_dir": str(run_dir.resolve())},
                state=saved,
            )
    return out
