"""Reference loops the benchmark compares fedforget's engines with.

- :func:`torch_floor`: a plain PyTorch FedAvg loop doing the same training as a
  scenario's ``original`` arm (same data, model, epochs, batch size, clients per
  round): the compute floor.
- :func:`plain_flower`: a minimal Flower app (``FedAvg`` from
  ``flwr.serverapp.strategy``, a ClientApp training the same way) on Flower's
  Simulation Runtime: what a user would write with Flower alone.

Both return per-round wall seconds (one entry per round).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from fedforget.config import Scenario
from fedforget.data import federated_data_for
from fedforget.models import build_model
from fedforget.training import train_local


def _clients_per_round(sc: Scenario) -> int:
    return max(1, int(round(sc.train.fraction * sc.data.num_clients)))


def _train(sc: Scenario, model: torch.nn.Module, x, y, seed: int) -> int:
    return train_local(
        model, x, y, epochs=sc.train.local_epochs, batch_size=sc.train.batch_size, lr=sc.train.lr,
        optimizer=sc.train.optimizer, momentum=sc.train.momentum, weight_decay=sc.train.weight_decay, seed=seed,
    ).num_examples


def torch_floor(sc: Scenario) -> list[float]:
    """A plain PyTorch FedAvg loop: sample, train each client from the global
    weights, average weighted by examples."""
    torch.set_num_threads(max(1, int(sc.runtime.num_cpus)))
    fd = federated_data_for(sc)
    model = build_model(sc.model.name, fd.input_shape, fd.num_classes, sc.model.hidden, seed=0)
    global_state = {k: v.clone() for k, v in model.state_dict().items()}
    data = {c: fd.tensors(fd.train_ids[c]) for c in range(fd.num_clients)}
    rng = np.random.default_rng(sc.seed)
    times = []
    for rnd in range(1, sc.train.rounds + 1):
        t0 = time.perf_counter()
        sampled = sorted(rng.choice(fd.num_clients, _clients_per_round(sc), replace=False).tolist())
        total = {k: torch.zeros_like(v, dtype=torch.float32) for k, v in global_state.items()}
        n_total = 0
        for c in sampled:
            model.load_state_dict(global_state)
            n = _train(sc, model, *data[c], seed=rnd * 100_003 + c)
            for k, v in model.state_dict().items():
                total[k] += v.float() * n
            n_total += n
        global_state = {k: (v / n_total).to(global_state[k].dtype) for k, v in total.items()}
        times.append(time.perf_counter() - t0)
    return times


def plain_flower_apps(sc: Scenario):
    """A ServerApp running ``FedAvg`` for ``sc.train.rounds`` rounds and a
    ClientApp training on the scenario's partition; the ServerApp records each
    round's wall seconds in the returned list."""
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg

    times: list[float] = []
    client_app = ClientApp()

    @client_app.train()
    def train(msg: Message, context: Context) -> Message:
        torch.set_num_threads(max(1, int(sc.runtime.num_cpus)))
        fd = federated_data_for(sc)
        pid = int(context.node_config["partition-id"])
        model = build_model(sc.model.name, fd.input_shape, fd.num_classes, sc.model.hidden, seed=0)
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        n = _train(sc, model, *fd.tensors(fd.train_ids[pid]), seed=pid)
        content = RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": MetricRecord({"num-examples": n})})
        return Message(content=content, reply_to=msg)

    class TimedFedAvg(FedAvg):
        def configure_train(self, server_round, arrays, config, grid):
            times.append(time.perf_counter())
            return super().configure_train(server_round, arrays, config, grid)

    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        torch.set_num_threads(max(1, int(sc.runtime.num_cpus)))
        fd = federated_data_for(sc)
        model = build_model(sc.model.name, fd.input_shape, fd.num_classes, sc.model.hidden, seed=0)
        strategy = TimedFedAvg(fraction_train=sc.train.fraction, fraction_evaluate=0.0,
                               min_train_nodes=1, min_available_nodes=sc.data.num_clients)
        strategy.start(grid=grid, initial_arrays=ArrayRecord(model.state_dict()), num_rounds=sc.train.rounds)
        times.append(time.perf_counter())

    return server_app, client_app, times


def plain_flower(sc: Scenario) -> list[float]:
    """The plain Flower app on Flower's Simulation Runtime (Ray)."""
    from fedforget.flower.engines import run_on_ray

    server_app, client_app, stamps = plain_flower_apps(sc)
    run_on_ray("ray", server_app, client_app, sc.data.num_clients, sc.runtime.num_cpus, sc.runtime.num_gpus)
    return list(np.diff(stamps))
