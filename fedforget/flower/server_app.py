"""The fedforget ServerApp: one main that drives every scenario's arms over one Grid.

The round protocol itself is :class:`fedforget.protocol.ScenarioRun`; this
module binds it to Flower's ``ServerApp``: it connects each run to a
:class:`~fedforget.flower.runtime.FlowerRuntime` over the app's Grid.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedforget.config import Scenario
from fedforget.flower.client_app import scenario_from_context
from fedforget.flower.runtime import FlowerRuntime
from fedforget.progress import ProgressFn
from fedforget.protocol import (
    ClientFailure,
    DivergenceError,
    RunsFailed,
    RunSummary,
    run_scenario,
)
from fedforget.protocol.run import Connect
from fedforget.report import write_report
from fedforget.results import default_run_dir


def flower_connect(grid: Grid, scenario_index: int = 0) -> Connect:
    """How a run reaches its federation: a FlowerRuntime over ``grid``."""
    def connect(sc: Scenario, writer, policy) -> FlowerRuntime:
        return FlowerRuntime(grid, seed=sc.seed, num_clients=sc.data.num_clients, fraction=sc.train.fraction,
                             writer=writer, scenario_index=scenario_index, policy=policy)

    return connect


def make_server_app(
    scenarios: list[Scenario] | None = None,
    out_dirs: list[str | Path] | None = None,
    progress: Callable[[int], ProgressFn] | None = None,
    resume: bool = False,
    summaries: list[RunSummary] | None = None,
) -> ServerApp:
    """Build the ServerApp.

    With bound ``scenarios`` (and their ``out_dirs``) it runs them one after the
    other over the same Grid, i.e. in one runtime; otherwise it reads one
    scenario from the run config (``flwr run .``). ``progress(i)`` gives the
    per-round callback of scenario ``i``; each finished run's summary is
    appended to ``summaries``.
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        if scenarios is None:
            sc = scenario_from_context(context)
            out = str(context.run_config.get("out", "")) or default_run_dir(sc.name)
            run_scenario(flower_connect(grid), sc, out)
            write_report(out)
            return
        failures = []
        for i, sc in enumerate(scenarios):
            out = out_dirs[i] if out_dirs else default_run_dir(sc.name)
            try:
                summary = run_scenario(flower_connect(grid, i), sc, out, progress(i) if progress else None, resume)
            except (ClientFailure, DivergenceError) as err:
                if len(scenarios) == 1:
                    raise
                failures.append((str(out), err))  # the other scenarios still run
                continue
            if summaries is not None:
                summaries.append(summary)
        if failures:
            raise RunsFailed(failures)

    return app


# Module-level app for ``flwr run .``.
app = make_server_app()
