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
from fedforget.flower.scenario_run import ProgressFn, ScenarioRun
from fedforget.results import RunWriter


def run_scenario(
    grid: Grid,
    scenario: Scenario,
    out_dir: str | Path,
    progress: ProgressFn | None = None,
    scenario_index: int = 0,
) -> None:
    """Run a scenario over ``grid`` and write its run directory."""
    writer = RunWriter(out_dir, scenario.to_toml())
    ok = False
    try:
        # Same thread count on the server as on the clients (bit-identical engines).
        torch.set_num_threads(max(1, int(scenario.runtime.num_cpus)))
        ScenarioRun(grid, scenario, writer, progress, scenario_index).run()
        ok = True
    except BaseException as err:
        writer.event("error", kind=type(err).__name__, message=str(err))
        raise
    finally:
        writer.close(ok)


def default_out_dir(sc: Scenario) -> str:
    return f"runs/{sc.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def make_server_app(
    scenarios: list[Scenario] | None = None,
    out_dirs: list[str | Path] | None = None,
    progress: Callable[[int], ProgressFn] | None = None,
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
        for i, sc in enumerate(scenarios):
            out = out_dirs[i] if out_dirs else default_out_dir(sc)
            run_scenario(grid, sc, out, progress(i) if progress else None, scenario_index=i)

    return app


# Module-level app for ``flwr run .``.
app = make_server_app()
