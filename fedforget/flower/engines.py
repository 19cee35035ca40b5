"""Start a ServerApp and a ClientApp on an engine.

``ray``: Flower's Simulation Runtime (``flwr.simulation.run_simulation``) on Ray,
locally or on an existing cluster: the reference engine. ``actors``: the same apps,
the ClientApp in a pool of Ray actors behind our own Grid
(:class:`~fedforget.flower.actors.ActorGrid`), without the runtime's 0.1 s polling.
``inline``: the same apps in this process over an
:class:`~fedforget.flower.inline.InlineGrid`.
"""

from __future__ import annotations

from flwr.app import Context, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

from fedforget import registry
from fedforget.flower.inline import InlineGrid


@registry.engines.register("inline")
def run_inline(server_app: ServerApp, client_app: ClientApp, num_nodes: int) -> None:
    """Run the apps in this process (no Ray)."""
    grid = InlineGrid(client_app, num_nodes)
    server_app(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={}))


def run_on_ray(
    engine: str,
    server_app: ServerApp,
    client_app: ClientApp,
    num_nodes: int,
    num_cpus: float,
    num_gpus: float,
    address: str = "",
    verbose: bool = False,
) -> None:
    """Run the apps on Ray: ``"actors"`` (our Grid over a pool of actors) or
    ``"ray"`` (Flower's Simulation Runtime), locally or on the cluster at ``address``."""
    if engine == "actors":
        from fedforget.flower.actors import ActorGrid

        grid = ActorGrid(client_app, num_nodes, num_cpus=num_cpus, num_gpus=num_gpus, address=address, verbose=verbose)
        try:
            server_app(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={}))
        finally:
            grid.shutdown()
        return
    from flwr.simulation import run_simulation

    init_args: dict = {"logging_level": "DEBUG" if verbose else "ERROR", "log_to_driver": verbose}
    if address:
        init_args["address"] = address
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=num_nodes,
        backend_config={"client_resources": {"num_cpus": num_cpus, "num_gpus": num_gpus}, "init_args": init_args},
        verbose_logging=verbose,
    )


@registry.engines.register("ray")
def run_ray(server_app: ServerApp, client_app: ClientApp, num_nodes: int, num_cpus: float, num_gpus: float,
            address: str = "", verbose: bool = False) -> None:
    """Flower's Simulation Runtime on Ray (the reference engine)."""
    run_on_ray("ray", server_app, client_app, num_nodes, num_cpus, num_gpus, address, verbose)


@registry.engines.register("actors")
def run_actors(server_app: ServerApp, client_app: ClientApp, num_nodes: int, num_cpus: float, num_gpus: float,
               address: str = "", verbose: bool = False) -> None:
    """The ClientApp in a pool of Ray actors behind our own Grid (no runtime polling)."""
    run_on_ray("actors", server_app, client_app, num_nodes, num_cpus, num_gpus, address, verbose)
