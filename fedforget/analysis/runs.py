"""Read finished run directories back: one run, or the seeds of a multi-seed directory.

``load_study(path)`` returns a :class:`Study` over the runs one report covers;
its methods answer per arm, round and client with an :class:`~fedforget.analysis.stats.Estimate`
(across seeds a t-interval, for one run the oracle's bootstrap bounds).

Rounds are floats: whole round ``r`` is the models after round ``r``'s training;
``t - 0.5`` is every arm audited right after the unlearning step of an event at
round ``t``. The oracle is calibrated on original at ``t - 1``.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedforget.analysis.stats import (
    NAN,
    NO_SIGNAL,
    SIGNAL_AUC,
    Estimate,
    band_across,
    bounds,
    estimate_of,
    finite,
    t_interval,
)
from fedforget.analysis.verdicts import GLOBAL_METRICS, PairedVerdict, paired_verdict
from fedforget.schedule import ORIGINAL, RETRAIN

GLOBAL = -1  # client id standing for the global (client = NA) rows
REQUIRED_COLUMNS = ("arm", "round", "client", "metric", "value")
FR_METRICS = ("fr", "fr_fixed_fpr", "fr_transition")  # meaningless for a client without signal
# the oracle's witness metrics: meaningless when original's witness AUC interval at calibration includes 0.5
WITNESS_METRICS = ("witness_mia_auc", "witness_fr", "witness_fr_fixed_fpr")
ACROSS_SEEDS_LABEL = "across-seed 95% interval"
ORACLE_SAMPLING_LABEL = "oracle-sampling interval (model fixed)"


@dataclass
class Run:
    """One finished run directory.

    Attributes
    ----------
    path : Path
        The run directory.
    scenario : dict
        ``resolved.toml`` as a dict.
    events : list of dict
        ``events.jsonl``, one dict per line.
    curves : dict
        ``(arm, client, metric) -> Series`` of values indexed by (float) round;
        global rows use client ``GLOBAL`` (-1).
    scores : dict or None
        ``(arm, round, client) -> DataFrame`` of per-sample oracle scores (round
        a float), or None when the run has no ``scores.parquet``.
    """

    path: Path
    scenario: dict[str, Any]
    events: list[dict[str, Any]]
    curves: dict[tuple[str, int, str], pd.Series]
    scores: dict[tuple[str, float, int], pd.DataFrame] | None

    @property
    def seed(self) -> Any:
        return self.scenario.get("seed")

    def curve(self, arm: str, client: int, metric: str) -> pd.Series:
        """Values of one metric by round (empty when absent)."""
        return self.curves.get((arm, client, metric), _EMPTY)

    def value(self, arm: str, rnd: float, client: int, metric: str) -> float:
        """One value, NaN when absent."""
        return float(self.curve(arm, client, metric).get(float(rnd), NAN))

    def n_nonmembers(self, arm: str, rnd: float, client: int) -> float:
        """Non-members the oracle scored there: the ``n_nonmembers`` metric, else
        counted in ``scores.parquet``; NaN when unknown."""
        n = self.value(arm, rnd, client, "n_nonmembers")
        if not finite(n) and self.scores is not None:
            g = self.scores.get((arm, float(rnd), client))
            if g is not None:
                n = float((~g["member"]).sum())
        return n

    def has_signal(self, client: int, calibration_round: float) -> bool | None:
        """Did the oracle see the client at calibration (original's MIA AUC at
        least ``SIGNAL_AUC``)? None when that AUC is missing."""
        auc = self.value(ORIGINAL, calibration_round, client, "mia_auc")
        return None if not finite(auc) else auc >= SIGNAL_AUC

    def has_witness_signal(self, client: int, calibration_round: float) -> bool | None:
        """Did the oracle tell the planted witnesses from witness non-members at
        calibration (original's witness AUC interval excludes 0.5)? None when
        that interval is missing."""
        lo, hi = (self.value(ORIGINAL, calibration_round, client, k) for k in bounds("witness_mia_auc"))
        return None if not (finite(lo) and finite(hi)) else not lo <= 0.5 <= hi


_EMPTY = pd.Series(dtype=float)


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        partial = path.parent / "events.jsonl.partial"
        hint = " (events.jsonl.partial is there: the run did not finish or failed)" if partial.exists() else ""
        raise FileNotFoundError(f"{path.parent}: not a finished run directory, no {what}{hint}")


def read_events_log(path: Path) -> list[dict[str, Any]]:
    events = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}, line {i}: not JSON ({err})") from err
    return events


def _tidy_metrics(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Typed columns, global rows on client GLOBAL, one value per key.

    Several events in one round each write a cost record, so duplicated cost
    rows are summed; any other duplicate keeps its last value.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {', '.join(missing)}")
    df = pd.DataFrame(
        {
            "arm": df["arm"].astype(str),
            "round": pd.to_numeric(df["round"]).astype(np.float64),  # t - 0.5: right after unlearning
            "client": pd.to_numeric(df["client"]).fillna(GLOBAL).astype(np.int64),
            "metric": df["metric"].astype(str),
            "value": pd.to_numeric(df["value"], errors="coerce").astype(float),
        }
    )
    keys = ["arm", "round", "client", "metric"]
    is_cost = df["metric"].str.startswith("cost_")
    summed = df[is_cost].groupby(keys, as_index=False, sort=False)["value"].sum(min_count=1)
    last = df[~is_cost].groupby(keys, as_index=False, sort=False)["value"].last()
    return pd.concat([summed, last], ignore_index=True)


def _curves_of(df: pd.DataFrame) -> dict[tuple[str, int, str], pd.Series]:
    return {
        (arm, int(client), metric): g.set_index("round")["value"].sort_index()
        for (arm, client, metric), g in df.groupby(["arm", "client", "metric"], sort=False)
    }


def _scores_of(path: Path) -> dict[tuple[str, float, int], pd.DataFrame] | None:
    if not path.is_file():
        return None
    df = pd.read_parquet(path)
    missing = [c for c in ("arm", "round", "client", "member", "score") if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {', '.join(missing)}")
    df = df.assign(
        round=pd.to_numeric(df["round"]).astype(np.float64),
        client=pd.to_numeric(df["client"]).astype(np.int64),
        member=df["member"].astype(bool),
        score=pd.to_numeric(df["score"], errors="coerce").astype(float),
    )
    return {(str(a), float(r), int(c)): g for (a, r, c), g in df.groupby(["arm", "round", "client"], sort=False)}


def load_run(run_dir: str | Path) -> Run:
    """Read one finished run directory.

    Raises
    ------
    FileNotFoundError
        The directory, or one of ``resolved.toml``, ``events.jsonl`` and
        ``metrics.parquet``, is missing (the run did not finish).
    ValueError
        A file is there but malformed.
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such run directory")
    for name in ("metrics.parquet", "events.jsonl", "resolved.toml"):
        _require_file(path / name, name)
    try:
        scenario = tomllib.loads((path / "resolved.toml").read_text())
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path / 'resolved.toml'}: not valid TOML ({err})") from err
    metrics = _tidy_metrics(pd.read_parquet(path / "metrics.parquet"), path / "metrics.parquet")
    return Run(
        path=path,
        scenario=scenario,
        events=read_events_log(path / "events.jsonl"),
        curves=_curves_of(metrics),
        scores=_scores_of(path / "scores.parquet"),
    )


def seed_dirs(root: Path) -> list[Path]:
    """``seed-*`` subdirectories, in seed order when the suffix is a number."""

    def key(p: Path) -> tuple[int, str]:
        m = re.fullmatch(r"seed-(\d+)", p.name)
        return (int(m.group(1)) if m else math.inf, p.name)  # type: ignore[return-value]

    return sorted((p for p in root.glob("seed-*") if p.is_dir()), key=key)


@dataclass
class Study:
    """The runs one report covers: one run, or the seeds of a multi-seed directory."""

    root: Path
    runs: list[Run]
    multi_seed: bool = False
    skipped: list[Path] = field(default_factory=list)

    @property
    def across_seeds(self) -> bool:
        return len(self.runs) > 1

    @property
    def scenario(self) -> dict[str, Any]:
        return self.runs[0].scenario

    @property
    def interval_label(self) -> str:
        """What the intervals shown are: across seeds, or the oracle's bootstrap of one run."""
        return ACROSS_SEEDS_LABEL if self.across_seeds else ORACLE_SAMPLING_LABEL

    @property
    def arms(self) -> list[str]:
        """The arms in the metrics: original, retrain, the methods in the
        scenario's order, then any other arm."""
        present = {a for r in self.runs for (a, _, _) in r.curves}
        order = [ORIGINAL, RETRAIN, *self.scenario.get("unlearning", {}).get("methods", [])]
        return [a for a in order if a in present] + sorted(present - set(order))

    @property
    def methods(self) -> list[str]:
        return [a for a in self.arms if a not in (ORIGINAL, RETRAIN)]

    def _client_events(self) -> dict[int, dict]:
        """Client with data to forget -> its first withdraw/delete event log line."""
        out: dict[int, dict] = {}
        for run in self.runs:
            for ev in run.events:
                if ev.get("event") in ("withdraw", "delete"):
                    for c in ev.get("clients") or [ev.get("client")]:
                        if c is not None:
                            out.setdefault(int(c), ev)
        return out

    @property
    def withdrawn(self) -> dict[int, int]:
        """Client with data to forget -> its event round, from the withdraw and
        delete events (a deleting client is audited on its deleted samples)."""
        return {c: int(ev["round"]) for c, ev in sorted(self._client_events().items())}

    @property
    def event_kind(self) -> dict[int, str]:
        """Client -> the kind of its event (``withdraw``, ``delete_fraction``, ...)."""
        return {c: str(ev.get("kind", "withdraw")) for c, ev in self._client_events().items()}

    def witness(self, client: int) -> str | None:
        """The witness planted for a client's event (``backdoor``, ``canary``),
        from the resolved scenario's events, else from its event log line."""
        for run in self.runs:
            for ev in run.scenario.get("events") or []:
                ids = ev.get("clients") or ([ev["client"]] if ev.get("client") is not None else [])
                if client in [int(c) for c in ids] and ev.get("witness"):
                    return str(ev["witness"])
        w = self._client_events().get(client, {}).get("witness")
        return str(w) if w else None

    @property
    def controls(self) -> list[int]:
        """Audited clients that never withdraw."""
        audited = {c for r in self.runs for (_, c, m) in r.curves if m == "mia_auc" and c != GLOBAL}
        return sorted(audited - set(self.withdrawn))

    @property
    def last_round(self) -> float:
        rounds = [float(s.index.max()) for r in self.runs for s in r.curves.values() if len(s)]
        return max(rounds, default=0.0)

    def calibration_round(self, client: int) -> float:
        """Where the oracle auditing a client was calibrated: original's model
        after round t - 1 (t: the client's event; controls: the first event)."""
        t = self.withdrawn.get(client, min(self.withdrawn.values(), default=1))
        return float(t - 1)

    def signal(self, client: int) -> list[bool | None]:
        """Per run: did the oracle see the client at calibration? (None: unknown)."""
        cal = self.calibration_round(client)
        return [r.has_signal(client, cal) for r in self.runs]

    def witness_signal(self, client: int) -> list[bool | None]:
        """Per run: did the oracle see the client's witnesses at calibration? (None: unknown)."""
        cal = self.calibration_round(client)
        return [r.has_witness_signal(client, cal) for r in self.runs]

    def usable(self, client: int, metric: str) -> list[bool] | None:
        """Per run, whether a value of the metric is meaningful: FR metrics of a
        client without signal are not, nor the oracle's witness metrics without
        witness signal (None: every run's value is)."""
        if client == GLOBAL or metric not in (*FR_METRICS, *WITNESS_METRICS):
            return None
        signal = self.signal(client) if metric in FR_METRICS else self.witness_signal(client)
        return [s is not False for s in signal]

    def paired(self, arm: str, client: int, metric: str, rnd: float) -> PairedVerdict:
        """The arm's paired gap to retrain at one round label, over the runs,
        and its verdict (see :mod:`fedforget.analysis.verdicts`). Global
        metrics (test accuracy) pair the global rows; runs whose value has no
        signal are left out."""
        c = GLOBAL if metric in GLOBAL_METRICS else client
        usable = self.usable(client, metric) or [True] * len(self.runs)
        diffs = [r.value(arm, rnd, c, metric) - r.value(RETRAIN, rnd, c, metric) if ok else NAN
                 for r, ok in zip(self.runs, usable, strict=True)]
        verdict = paired_verdict(diffs, metric)
        return verdict if any(usable) else replace(verdict, verdict=NO_SIGNAL)

    def relapse(self, arm: str, client: int, metric: str) -> PairedVerdict:
        """A relapse metric (``relapse_auc``, ``relapse_z``: already one change
        of a gap to retrain per run, written at the arm's last round) over the
        runs, with its verdict."""
        values = [float(s.iloc[-1]) if len(s := r.curve(arm, client, metric)) else NAN for r in self.runs]
        return paired_verdict(values, metric)

    def estimate(self, fn: Callable[[Run], float], lo: Callable[[Run], float] | None = None,
                 hi: Callable[[Run], float] | None = None) -> Estimate:
        """``fn`` per run; across seeds a t-interval, for one run the given bounds."""
        if self.across_seeds:
            return t_interval([fn(r) for r in self.runs])
        run = self.runs[0]
        return Estimate(fn(run), lo(run) if lo else NAN, hi(run) if hi else NAN)

    def value(self, arm: str, rnd: float, client: int, metric: str) -> Estimate:
        """One metric at one round, with its interval ("no signal" for an FR of
        a client the oracle did not see)."""
        lo, hi = bounds(metric)
        return estimate_of(
            [r.value(arm, rnd, client, metric) for r in self.runs],
            [r.value(arm, rnd, client, lo) for r in self.runs],
            [r.value(arm, rnd, client, hi) for r in self.runs],
            self.across_seeds,
            self.usable(client, metric),
        )

    def band(self, arm: str, client: int, metric: str) -> pd.DataFrame:
        """Curve of one metric: columns mean, lo, hi indexed by (float) round.
        Runs whose values have no signal are left out."""
        usable = self.usable(client, metric) or [True] * len(self.runs)
        runs = [r for r, ok in zip(self.runs, usable, strict=True) if ok]
        empty = pd.DataFrame(columns=["mean", "lo", "hi"], dtype=float)
        if self.across_seeds:
            curves = [c for r in runs if len(c := r.curve(arm, client, metric))]
            return band_across(curves) if curves else empty
        if not runs:
            return empty
        run = runs[0]
        s = run.curve(arm, client, metric)
        lo, hi = bounds(metric)
        return pd.DataFrame({"mean": s, "lo": run.curve(arm, client, lo).reindex(s.index),
                             "hi": run.curve(arm, client, hi).reindex(s.index)})


def load_study(run_dir: str | Path) -> Study:
    """A single run directory, or a directory of ``seed-*`` run directories.

    Raises
    ------
    FileNotFoundError
        Neither a finished run nor a directory with a finished ``seed-*`` run.
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such run directory")
    if (root / "metrics.parquet").is_file():
        return Study(root, [load_run(root)])
    seeds = seed_dirs(root)
    done = [p for p in seeds if (p / "metrics.parquet").is_file()]
    if not seeds:
        load_run(root)  # raises, naming the missing file
    if not done:
        raise FileNotFoundError(
            f"{root}: not a finished run directory (none of its {len(seeds)} seed-* directories has metrics.parquet)"
        )
    return Study(root, [load_run(p) for p in done], multi_seed=True, skipped=[p for p in seeds if p not in done])
