"""Start scenarios on an engine and own their run directories.

``run`` is the Python API (the CLI is a thin layer over it). ``run_many`` runs
several scenarios with the same number of clients in ONE runtime: Ray and Flower
start once (~17 s on a 2-core machine) and the ServerApp drives the scenarios one
after the other over the same Grid.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fedforget import registry
from fedforget.analysis import Results, load
from fedforget.config import ConfigError, Scenario, load_scenario, with_overrides
from fedforget.data import federated_data_for
from fedforget.flower.client_app import make_client_app
from fedforget.flower.engines import run_inline, run_on_ray
from fedforget.flower.server_app import make_server_app
from fedforget.models import build_model
from fedforget.progress import progress_bar
from fedforget.protocol import RunSummary
from fedforget.protocol.checkpoint import load_checkpoint
from fedforget.report import write_report
from fedforget.results import CHECKPOINT, check_out_dir, default_run_dir
from fedforget.tracking import check_available
from fedforget.unlearning import get_method, method_params

ENGINES = tuple(registry.engines.names())  # the engine registry is the one list of engines


@dataclass
class RunResult:
    """A finished run: its directory, scenario and metrics table."""

    run_dir: Path
    scenario: Scenario
    metrics: pd.DataFrame

    def final(self, metric: str = "test_accuracy", arm: str = "original") -> float:
        """The metric's value at the last round for an arm (global metrics)."""
        df = self.metrics
        sel = df[(df.arm == arm) & (df.metric == metric) & df.client.isna()]
        return float(sel.sort_values("round").value.iloc[-1])

    def results(self) -> Results:
        """The run as :class:`fedforget.analysis.Results` (tidy tables and helpers)."""
        return load(self.run_dir)

    def plot(self, client: int, metric: str = "mia_auc", ax=None):
        """The client's forgetting curves, one line per arm: the matplotlib Figure."""
        return self.results().plot(client, metric, ax)

    def __repr__(self) -> str:
        # A terminal gets a summary, not the whole metrics table.
        arms = ", ".join(dict.fromkeys(self.metrics.arm))
        return f"<fedforget run {self.run_dir}: {self.scenario.name}, {len(self.metrics):,} metric rows; arms: {arms}>"

    def _repr_html_(self) -> str:
        return self.results()._repr_html_()


def _resolve(scenario: Scenario | str | Path, overrides: list[str] | None) -> Scenario:
    if isinstance(scenario, Scenario):
        return with_overrides(scenario, list(overrides or []))
    return load_scenario(scenario, list(overrides or []))


def _quiet(verbose: bool) -> None:
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if not verbose:
        logging.getLogger("flwr").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module="flwr_datasets")


def run_many(
    scenarios: list[Scenario],
    outs: list[str | Path],
    engine: str | None = None,
    progress: bool = False,
    verbose: bool = False,
    resume: bool = False,
) -> list[RunResult]:
    """Run scenarios that share ``num_clients`` and runtime settings in one
    runtime (``resume``: continue each from its run directory's checkpoint)."""
    if not scenarios:
        return []
    engine = engine or scenarios[0].runtime.engine
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; expected one of {ENGINES}")
    n = {s.data.num_clients for s in scenarios}
    if len(n) != 1:
        raise ValueError(f"scenarios in one runtime need the same num_clients, got {sorted(n)}")
    _quiet(verbose)  # after importing flwr, which configures its logger on import
    # Fail fast, before any runtime starts or file is written: data that cannot be
    # loaded (Hub offline) or partitioned (too many clients) is a clear error here.
    for o in outs:
        check_resumable(Path(o)) if resume else check_out_dir(Path(o))
    for sc in scenarios:
        check_available(sc.tracking.backends)
        try:
            fd = federated_data_for(sc)
        except ValueError as err:  # e.g. more clients than samples, a bad witness label
            raise ConfigError(f"<{sc.name}>: data: {err}") from None
        except Exception as err:
            if _builtin_data(sc):
                raise
            raise ConfigError(f"<{sc.name}>: data (dataset {sc.data.dataset!r}, partitioner {sc.data.partitioner!r}): "
                              f"the plugin raised {type(err).__name__}: {err}") from None
        _try_plugins(sc, fd)

    # In a sweep every cell has the scenario's name: its progress line names the cell.
    labels = [f"{sc.name} {Path(o).parent.name}/{Path(o).name}" if Path(o).parent.name.startswith("cell-")
              else f"{sc.name} (seed {sc.seed})" for sc, o in zip(scenarios, outs, strict=True)]
    bar = progress_bar(scenarios, labels) if progress else None
    client_app = make_client_app(list(scenarios))
    summaries: list[RunSummary] = []
    server_app = make_server_app(list(scenarios), [Path(o) for o in outs], bar.callback if bar else None, resume,
                                 summaries)
    num_nodes = scenarios[0].data.num_clients
    try:
        if bar:
            bar.start()
        rt = scenarios[0].runtime
        if engine == "inline":
            run_inline(server_app, client_app, num_nodes)
        else:
            run_on_ray(engine, server_app, client_app, num_nodes, rt.num_cpus, rt.num_gpus, rt.address, verbose)
    finally:
        if bar:
            bar.stop()
    return [RunResult(summary.run_dir, sc, summary.metrics) for sc, summary in zip(scenarios, summaries, strict=True)]


def _builtin_data(sc: Scenario) -> bool:
    return ((sc.data.dataset.startswith("hf:") or registry.datasets.is_builtin(sc.data.dataset))
            and registry.partitioners.is_builtin(sc.data.partitioner))


def _try_plugins(sc: Scenario, fd) -> None:
    """Call the plugin code a run starts with (a model builder, a method's
    constructor) once, before anything is written: an exception there is a
    ConfigError naming the plugin, and no run directory is created."""
    if not registry.models.is_builtin(sc.model.name):
        try:
            build_model(sc.model.name, fd.input_shape, fd.num_classes, sc.model.hidden, seed=0)
        except Exception as err:
            raise ConfigError(f"<{sc.name}>: model.name = {sc.model.name!r}: building the model raised "
                              f"{type(err).__name__}: {err}") from None
    for name in sc.unlearning.methods:
        if not registry.methods.is_builtin(name):
            try:
                get_method(name, method_params(sc, name))
            except Exception as err:
                raise ConfigError(f"<{sc.name}>: unlearning.methods: {name!r}: creating the method raised "
                                  f"{type(err).__name__}: {err}") from None


def check_resumable(run_dir: Path) -> None:
    """A run directory ``resume`` can continue; ConfigError naming why not."""
    if not (run_dir / "resolved.toml").is_file():
        raise ConfigError(f"{run_dir}: not a fedforget run directory (no resolved.toml)")
    if (run_dir / "events.jsonl").is_file():  # written last, when the run finished
        raise ConfigError(f"{run_dir}: the run already finished; nothing to resume")
    if not (run_dir / CHECKPOINT).exists():
        return  # interrupted before its first complete round: it starts over
    try:
        load_checkpoint(run_dir)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def resume(
    run_dir: str | Path, engine: str | None = None, progress: bool = False, verbose: bool = False
) -> RunResult:
    """Continue an interrupted run from its last complete round."""
    run_dir = Path(run_dir)
    check_resumable(run_dir)
    try:
        sc = load_scenario(run_dir / "resolved.toml")
    except ConfigError as err:
        raise ConfigError(f"{run_dir}: its resolved.toml is not a valid scenario: {err}") from None
    (result,) = run_many([sc], [run_dir], engine, progress, verbose, resume=True)
    report_run(run_dir)
    return result


def run(
    scenario: Scenario | str | Path,
    overrides: list[str] | None = None,
    engine: str | None = None,
    out: str | Path | None = None,
    progress: bool = False,
    verbose: bool = False,
) -> RunResult:
    """Run one scenario.

    Parameters
    ----------
    scenario : Scenario or path
        A scenario object or a TOML file.
    overrides : list of str
        Dotted ``key=value`` overrides, typed by the schema.
    engine : {"ray", "inline"}, optional
        Defaults to the scenario's ``runtime.engine``.
    out : path, optional
        Run directory; default ``runs/<name>-<timestamp>``.

    Returns
    -------
    RunResult
        The run directory and the metrics as a pandas DataFrame.
    """
    sc = _resolve(scenario, overrides)
    if engine is not None:
        sc = with_overrides(sc, [f"runtime.engine={engine}"])
    out_dir = Path(out) if out is not None else default_run_dir(sc.name)
    (result,) = run_many([sc], [out_dir], sc.runtime.engine, progress, verbose)
    report_run(out_dir)
    return result


def run_seeds(
    scenario: Scenario | str | Path,
    seeds: int,
    overrides: list[str] | None = None,
    engine: str | None = None,
    out: str | Path | None = None,
    progress: bool = False,
    verbose: bool = False,
) -> list[RunResult]:
    """Run a scenario with ``seeds`` consecutive seeds (scenario seed, +1, ...)
    in one runtime, into ``out/seed-<seed>/``; the report in ``out`` shows means
    and 95% intervals across seeds."""
    if seeds < 1:
        raise ValueError("seeds must be >= 1")
    sc = _resolve(scenario, overrides)
    if engine is not None:
        sc = with_overrides(sc, [f"runtime.engine={engine}"])
    root = Path(out) if out is not None else default_run_dir(sc.name)
    check_out_dir(root)
    scs = [with_overrides(sc, [f"seed={sc.seed + k}"]) for k in range(seeds)]
    outs = [root / f"seed-{s.seed}" for s in scs]
    results = run_many(scs, outs, sc.runtime.engine, progress, verbose)
    for o in outs:
        report_run(o)
    report_run(root)
    return results


def report_run(run_dir: Path) -> None:
    """Write a run's (or a seeds run's) report."""
    write_report(run_dir)
