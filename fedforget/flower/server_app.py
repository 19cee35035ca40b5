"""The fedforget ServerApp: one main that drives every arm over one Grid.

The round protocol itself (prefix rounds, the event's calibration and unlearning
steps, the regular rounds every arm trains, the audits) is
:class:`fedforget.flower.scenario_run.ScenarioRun`; this module binds it to
Flower's ``ServerApp`` and owns the run directory's life cycle.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedforget.config import Scenario
from fedforget.flower.client_app import scenario_from_context
from fedforget.flower.scenario_run import ScenarioRun
from fedforget.flower.strategy import ClientFailure, DivergenceError, RunsFailed
from fedforget.progress import ProgressFn
from fedforget.results import CHECKPOINT, RunWriter
from fedforget.tracking import trackers_for


def run_scenario(
    grid: Grid,
    scenario: Scenario,
    out_dir: str | Path,
    progress: ProgressFn | None = None,
    scenario_index: int = 0,
    resume: bool = False,
) -> None:
    """Run a scenario over ``grid`` and write its run directory; ``resume``
    continues it from the directory's checkpoint instead (or starts it over
    when it was interrupted before its first complete round)."""
    checkpoint = load_checkpoint(out_dir) if resume and (Path(out_dir) / CHECKPOINT).exists() else None
    snapshot = checkpoint["writer"] if checkpoint else None
    trackers = trackers_for(scenario, out_dir, snapshot.get("trackers") if snapshot else None)
    writer = RunWriter(out_dir, scenario.to_toml(), snapshot, trackers)
    ok = False
    try:
        # Same thread count on the server as on the clients (bit-identical engines).
        torch.set_num_threads(max(1, int(scenario.runtime.num_cpus)))
        ScenarioRun(grid, scenario, writer, progress, scenario_index).run(checkpoint)
        ok = True
    except BaseException as err:
        writer.event("error", kind=type(err).__name__, message=str(err))
        raise
    finally:
        writer.close(ok)
    if not scenario.runtime.keep_checkpoints:
        (Path(out_dir) / CHECKPOINT).unlink(missing_ok=True)


def load_checkpoint(out_dir: str | Path) -> dict:
    """The run directory's checkpoint; ValueError naming the problem otherwise."""
    path = Path(out_dir) / CHECKPOINT
    if not path.is_file():
        raise ValueError(f"{out_dir}: no {CHECKPOINT} to resume from (the run wrote none, or finished)")
    try:
        ckpt = torch.load(path, weights_only=False)
    except Exception as err:  # truncated or foreign file
        raise ValueError(f"{path}: unreadable checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(ckpt, dict) or not {"round", "state", "writer", "rng"} <= set(ckpt):
        raise ValueError(f"{path}: not a fedforget checkpoint")
    return ckpt


def default_out_dir(sc: Scenario) -> str:
    return f"runs/{sc.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def make_server_app(
    scenarios: list[Scenario] | None = None,
    out_dirs: list[str | Path] | None = None,
    progress: Callable[[int], ProgressFn] | None = None,
    resume: bool = False,
) -> ServerApp:
    """Build the ServerApp.

    With bound ``scenarios`` (and their ``out_dirs``) it runs them one after the
    other over the same Grid, i.e. in one runtime; otherwise it reads one
    scenario from the run config (``flwr run .``). ``progress(i)`` gives the
    per-round callback of scenario ``i``.
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        if scenarios is None:
            sc = scenario_from_context(context)
            out = str(context.run_config.get("out", "")) or default_out_dir(sc)
            run_scenario(grid, sc, out)
            from fedforget.report import write_report

            write_report(out)
            return
        failures = []
        for i, sc in enumerate(scenarios):
            out = out_dirs[i] if out_dirs else default_out_dir(sc)
            try:
                run_scenario(grid, sc, out, progress(i) if progress else None, scenario_index=i, resume=resume)
            except (ClientFailure, DivergenceError) as err:
                if len(scenarios) == 1:
                    raise
                failures.append((str(out), err))  # the other scenarios still run
        if failures:
            raise RunsFailed(failures)

    return app


# Module-level app for ``flwr run .``.
app = make_server_app()
