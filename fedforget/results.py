"""The run directory: resolved config, events log, metrics and per-sample scores.

Files are written to a temporary name and renamed when complete, so an interrupted
run never leaves a file that looks complete: ``events.jsonl`` only appears (from
``events.jsonl.partial``) when the run ends, and the Parquet tables only at the end.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from fedforget.config import ConfigError

METRIC_COLUMNS = ["arm", "round", "client", "metric", "value"]


class MetricRow(NamedTuple):
    """One row of ``metrics.parquet``; ``client`` None for global metrics."""

    arm: str
    round: float
    client: int | None
    metric: str
    value: float


def atomic_write(path: Path, write: Callable[[Path], Any], tmp_name: str | None = None) -> None:
    """Write ``path`` through ``write(tmp)`` and rename it into place: an
    interrupted write never leaves a file that looks complete. The one atomic
    write of the package (run files, checkpoints, reports). ``tmp_name``: the
    temporary file's name where several processes may write ``path`` at once."""
    path = Path(path)
    tmp = path.with_name(tmp_name or path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    atomic_write(path, write)


def atomic_write_parquet(path: Path, df: pd.DataFrame) -> None:
    atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False))


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if hasattr(v, "item"):
        return _jsonable(v.item())
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


CHECKPOINT = "checkpoint.pt"


def default_run_dir(scenario_name: str) -> Path:
    """``runs/<name>-<timestamp>``: where a run goes without ``--out``."""
    return Path("runs") / f"{scenario_name}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_out_dir(out: Path) -> None:
    """A run directory must be new (or empty) and creatable: raise ConfigError
    before anything starts otherwise."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"run directory {out} already exists and is not empty; choose another --out or remove it")
    parent = next((p for p in [out, *out.parents] if p.exists()), Path("."))
    if not parent.is_dir():
        raise ConfigError(f"run directory {out} cannot be created: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"run directory {out} cannot be created: {parent} is not writable")


class RunWriter:
    """Collects a run's outputs and writes them into ``out_dir``.

    ``snapshot``: continue a run from a checkpoint's writer snapshot instead of
    starting one (the events written after it are dropped; they will be redone).
    ``trackers``: name -> how to start a sink (``log(rows)``, ``state()``,
    ``close(ok)``, see :mod:`fedforget.tracking`) that :meth:`track` sends the
    new rows to. A sink that raises is dropped with a warning and a
    ``tracking_error`` event: it never costs the run its results.
    """

    def __init__(self, out_dir: str | Path, resolved_toml: str, snapshot: dict | None = None,
                 trackers: dict[str, Callable[[], Any]] | None = None) -> None:
        self.dir = Path(out_dir)
        self._events_tmp = self.dir / "events.jsonl.partial"
        self.rows: list[MetricRow] = []
        self.score_frames: list[pd.DataFrame] = []
        self.tables: dict[str, pd.DataFrame] = {}
        self.trackers: dict[str, Any] = {}
        self._tracked = 0  # rows already sent to the trackers
        self._open(resolved_toml, snapshot)
        for name, start in (trackers or {}).items():
            self._safely(name, "start", self._start_tracker, name, start)

    def _start_tracker(self, name: str, start: Callable[[], Any]) -> None:
        self.trackers[name] = start()

    def _open(self, resolved_toml: str, snapshot: dict | None) -> None:
        if snapshot is not None:
            self._events = open(self._events_tmp, "r+")
            self._events.truncate(snapshot["events_bytes"])
            self._events.seek(snapshot["events_bytes"])
            self._t0 = time.time() - snapshot["elapsed_s"]
            self.rows = list(snapshot["rows"])
            self.tables = dict(snapshot["tables"])
            self._tracked = snapshot["tracked"]
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        for stale in ("metrics.parquet", "scores.parquet", "splits.parquet", "events.jsonl", "report.html", CHECKPOINT):
            (self.dir / stale).unlink(missing_ok=True)
        atomic_write_bytes(self.dir / "resolved.toml", resolved_toml.encode())
        self._events = open(self._events_tmp, "w")
        self._t0 = time.time()

    def snapshot(self) -> dict:
        """What a checkpoint needs to continue this writer."""
        self._events.flush()
        return {"events_bytes": self._events.tell(), "elapsed_s": time.time() - self._t0,
                "rows": list(self.rows), "tables": dict(self.tables), "tracked": self._tracked,
                "trackers": {name: tr.state() for name, tr in self.trackers.items()}}

    def event(self, _name: str, /, **fields: Any) -> None:
        self.events(_name, [fields])

    def events(self, name: str, records: list[dict[str, Any]]) -> None:
        """Several lines of one event in one write (a round's messages)."""
        t = round(time.time() - self._t0, 4)
        self._events.write("".join(json.dumps({"t": t, "event": name, **_jsonable(f)}) + "\n" for f in records))
        self._events.flush()

    def metric(self, arm: str, rnd: float, client: int | None, metric: str, value: float) -> None:
        """One row. ``rnd`` is a round label: ``r`` after round r's training,
        ``t - 0.5`` right after the unlearning step of an event at round t."""
        self.rows.append(MetricRow(arm, float(rnd), client, metric, float(value)))

    def track(self) -> None:
        """Send the rows added since the last call to the trackers."""
        new = self.rows[self._tracked:]
        if new:
            for name, tracker in list(self.trackers.items()):
                self._safely(name, "log", tracker.log, new)
        self._tracked = len(self.rows)

    def _safely(self, name: str, what: str, fn: Callable, *args: Any) -> None:
        try:
            fn(*args)
        except Exception as err:  # a tracker is a view of the run, never worth its results
            warnings.warn(f"tracking: {name} failed to {what} ({type(err).__name__}: {err}); "
                          "the run goes on without it", RuntimeWarning, stacklevel=2)
            self.event("tracking_error", tracker=name, during=what, message=f"{type(err).__name__}: {err}")
            self.trackers.pop(name, None)

    def table(self, name: str, df: pd.DataFrame) -> None:
        """Another table of the run directory (``<name>.parquet``), written at the end."""
        self.tables[name] = df

    def scores(self, df: pd.DataFrame) -> None:
        self.score_frames.append(df)

    def metrics_frame(self) -> pd.DataFrame:
        df = pd.DataFrame(self.rows, columns=METRIC_COLUMNS)
        df["client"] = df["client"].astype("Int64")
        return df

    def close(self, ok: bool) -> None:
        """Finish the run: on success publish every file; on failure keep only the
        partial events log (for debugging) and no table."""
        if ok:
            self.track()
        for name, tracker in list(self.trackers.items()):
            self._safely(name, "close", tracker.close, ok)
        self.event("run_end", ok=ok)
        self._events.close()
        if not ok:
            return
        atomic_write_parquet(self.dir / "metrics.parquet", self.metrics_frame())
        if self.score_frames:
            atomic_write_parquet(self.dir / "scores.parquet", pd.concat(self.score_frames, ignore_index=True))
        for name, df in self.tables.items():
            atomic_write_parquet(self.dir / f"{name}.parquet", df)
        os.replace(self._events_tmp, self.dir / "events.jsonl")  # last: marks the run finished


def read_metrics(run_dir: str | Path) -> pd.DataFrame:
    path = Path(run_dir) / "metrics.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no metrics.parquet (the run did not finish)")
    return pd.read_parquet(path)


def read_events(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
