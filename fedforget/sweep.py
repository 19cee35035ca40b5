"""Sweeps: a scenario over the Cartesian product (or the zip) of swept keys,
with several seeds, into one study directory.

Layout of a study directory::

    study.json                 the config, the axes, every cell's values
    cell-000/seed-<s>/         one run directory per cell and seed
    ...
    study.parquet              one row per (cell, seed, arm, forgetting client)

A rerun of the same sweep skips finished runs, resumes interrupted ones from
their checkpoints (``fedforget resume``) and runs the rest; runs that share the
number of clients share one runtime.
"""

from __future__ import annotations

import itertools
import json
import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fedforget.analysis.tables import STUDY_FILE, study_table
from fedforget.config import ConfigError, Scenario, load_scenario, with_overrides
from fedforget.protocol import ClientFailure, DivergenceError, RunsFailed
from fedforget.report import write_study_report
from fedforget.results import atomic_write_bytes, atomic_write_parquet
from fedforget.runner import report_run, run_many

FAILED_FILE = "failed.txt"  # in a run directory: the run failed; reruns of the sweep skip it
STUDY_TABLE = "study.parquet"


def split_values(raw: str) -> list[str]:
    """``v1,v2,...`` split at top-level commas: a bracketed or quoted value
    (``["forsaken","none"]``) is one value."""
    values, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(raw):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            values.append(raw[start:i].strip())
            start = i + 1
    values.append(raw[start:].strip())
    if depth != 0 or quote or any(v == "" for v in values):
        raise ConfigError(f"sweep values {raw!r}: unbalanced brackets or quotes, or an empty value")
    return values


def parse_axes(specs: list[str]) -> dict[str, list[str]]:
    """``["train.lr=0.1,0.2", ...]`` -> ``{"train.lr": ["0.1", "0.2"], ...}``."""
    axes: dict[str, list[str]] = {}
    for spec in specs:
        if "=" not in spec:
            raise ConfigError(f"sweep axis {spec!r} is not of the form key=v1,v2,...")
        key, raw = spec.split("=", 1)
        key = key.strip()
        if not key or key in axes:
            raise ConfigError(f"sweep axis {spec!r}: empty or repeated key")
        axes[key] = split_values(raw)
    if not axes:
        raise ConfigError("a sweep needs at least one key=v1,v2,... axis")
    return axes


def cells_of(axes: dict[str, list[str]], zipped: bool = False) -> list[dict[str, str]]:
    """Every cell's values: the Cartesian product, or the lists zipped."""
    keys = list(axes)
    if zipped:
        lengths = {len(v) for v in axes.values()}
        if len(lengths) != 1:
            raise ConfigError(f"--zip needs lists of one length, got {[len(v) for v in axes.values()]}")
        combos = zip(*axes.values())
    else:
        combos = itertools.product(*axes.values())
    return [dict(zip(keys, c)) for c in combos]


@dataclass
class PlannedRun:
    cell: int
    scenario: Scenario
    run_dir: Path

    @property
    def finished(self) -> bool:
        # events.jsonl appears last, once every table is written (RunWriter.close).
        return (self.run_dir / "events.jsonl").is_file()

    @property
    def failed(self) -> str:
        """Why the run failed (a client, divergence) in an earlier attempt, or ''."""
        path = self.run_dir / FAILED_FILE
        return path.read_text() if path.is_file() else ""

    @property
    def interrupted(self) -> bool:
        """Started and not finished: its resolved scenario is written first
        (a directory without it holds nothing of the run, see ``sweep``)."""
        return not self.finished and (self.run_dir / "resolved.toml").is_file()


def plan(config: str | Path, axes: dict[str, list[str]], seeds: int, out: Path, zipped: bool = False,
         overrides: list[str] | None = None) -> tuple[list[dict[str, str]], list[PlannedRun]]:
    """Every cell and run of a sweep; every cell's scenario is validated here,
    before anything runs."""
    if seeds < 1:
        raise ConfigError("--seeds must be >= 1")
    base = load_scenario(config, list(overrides or []))
    cells = cells_of(axes, zipped)
    runs = []
    for i, values in enumerate(cells):
        try:
            sc = with_overrides(base, [f"{k}={v}" for k, v in values.items()])
        except ConfigError as err:
            raise ConfigError(f"sweep cell {i} ({values}): {err}") from None
        for k in range(seeds):
            s = with_overrides(sc, [f"seed={sc.seed + k}"])
            runs.append(PlannedRun(i, s, out / f"cell-{i:03d}" / f"seed-{s.seed}"))
    return cells, runs


def _write_study_file(out: Path, config, axes, cells, seeds: int, zipped: bool) -> None:
    spec = {"config": str(config), "axes": axes, "zip": zipped, "seeds": seeds,
            "cells": [{"cell": i, "dir": f"cell-{i:03d}", "values": v} for i, v in enumerate(cells)]}
    path = out / STUDY_FILE
    if path.exists():
        old = json.loads(path.read_text())
        if {k: old.get(k) for k in ("axes", "zip", "seeds")} != {k: spec[k] for k in ("axes", "zip", "seeds")}:
            raise ConfigError(f"{out} holds a different sweep (its {STUDY_FILE} has other axes or seeds); "
                              "choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, json.dumps(spec, indent=2).encode())


def sweep(
    config: str | Path,
    axes: list[str] | dict[str, list[str]],
    seeds: int = 1,
    out: str | Path = "runs/sweep",
    zipped: bool = False,
    overrides: list[str] | None = None,
    engine: str | None = None,
    progress: bool = False,
    verbose: bool = False,
) -> pd.DataFrame:
    """Run (or continue) a sweep and return its study table."""

    out = Path(out)
    axes = parse_axes(axes) if isinstance(axes, list) else {k: [str(v) for v in vs] for k, vs in axes.items()}
    cells, runs = plan(config, axes, seeds, out, zipped, overrides)
    _write_study_file(out, config, axes, cells, seeds, zipped)
    for r in runs:
        if not r.finished and not r.interrupted and r.run_dir.exists():
            shutil.rmtree(r.run_dir)  # killed before its scenario was written: nothing to keep
        elif r.interrupted or r.finished:
            if (r.run_dir / "resolved.toml").read_text() != r.scenario.to_toml():
                raise ConfigError(f"{r.run_dir} was run with another scenario than this sweep's cell "
                                  f"(the config or its overrides changed); choose another --out")
    for resume in (True, False):
        todo = [r for r in runs if not r.finished and not r.failed and r.interrupted == resume]
        groups: dict[tuple, list[PlannedRun]] = defaultdict(list)
        for r in todo:  # one runtime per client count and runtime settings
            rt = r.scenario.runtime
            groups[(r.scenario.data.num_clients, rt.engine, rt.num_cpus, rt.num_gpus, rt.address)].append(r)
        for group in groups.values():
            try:
                run_many([r.scenario for r in group], [r.run_dir for r in group], engine, progress, verbose,
                         resume=resume)
            except (ClientFailure, DivergenceError, RunsFailed) as err:
                failures = err.failures if isinstance(err, RunsFailed) else [(str(group[0].run_dir), err)]
                for out_dir, why in failures:
                    (Path(out_dir) / FAILED_FILE).write_text(f"{type(why).__name__}: {why}\n")

    for r in runs:
        if r.finished and not (r.run_dir / "report.html").exists():
            report_run(r.run_dir)
    table = study_table(out)
    atomic_write_parquet(out / STUDY_TABLE, table)

    write_study_report(out)
    return table

