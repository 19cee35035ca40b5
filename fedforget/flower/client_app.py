"""The fedforget ClientApp.

Each virtual SuperNode is one client; ``partition-id`` in its node config picks
its data. Its raw data never leaves this module: replies carry weights, gradients
or statistics only.

Message types handled:

- ``train``: local training from the received global weights.
- ``train.unlearn``: a method's client-side operation (``config["op"]``), looked up
  in :data:`fedforget.unlearning.CLIENT_OPS`.
- ``query.whoami``: the client's partition id (the server maps nodes to clients).

A process resolves each scenario once and builds each client's data once,
looked up by the scenario's data key (:func:`fedforget.data.federated.data_key`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp

from fedforget.config import Scenario, load_scenario, scenario_from_dict
from fedforget.data.federated import (
    ClientDataView,
    FederatedData,
    data_key,
    federated_data_for,
)
from fedforget.flower.arrays import (
    load_record_into,
    numpy_to_array,
    record_to_state,
    state_to_record,
)
from fedforget.models import build_model, get_device
from fedforget.schedule import client_fails
from fedforget.training import train_local
from fedforget.unlearning import CLIENT_OPS, ClientData


@lru_cache(maxsize=4)
def _scenario_from_json(text: str) -> Scenario:
    return scenario_from_dict(json.loads(text), "<run_config>")


def scenario_from_context(context: Context) -> Scenario:
    """The scenario of a ``flwr run`` app: ``scenario-json`` or a ``scenario`` path
    (plus space-separated ``overrides``) in the run config."""
    rc = context.run_config
    if "scenario-json" in rc:
        return _scenario_from_json(str(rc["scenario-json"]))
    if "scenario" in rc:
        return _scenario_from_path(str(rc["scenario"]), str(rc.get("overrides", "")))
    raise ValueError("run config has neither 'scenario' nor 'scenario-json'")


@lru_cache(maxsize=4)
def _scenario_from_path(path: str, overrides: str) -> Scenario:
    return load_scenario(path, overrides.split())


class SimulatedClientFailure(RuntimeError):
    """A failure drawn by ``runtime.client_failure_rate`` (the reply becomes an error)."""


@dataclass
class ResolvedScenario:
    """One scenario as a client process uses it: resolved once, with its data
    key, its federated data, the device and the clients' data by (client,
    deletions in force, event asked about)."""

    scenario: Scenario
    key: str = ""
    fd: FederatedData | None = None
    device: torch.device | None = None
    client_data: dict[tuple, ClientData] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.key = data_key(self.scenario)
        self.fd = federated_data_for(self.scenario, self.key)
        self.device = get_device(self.scenario.runtime.device)

    def data(self, pid: int, drop: tuple[int, ...] = (), forget_event: int | None = None) -> ClientData:
        key = (pid, drop, forget_event)
        if key not in self.client_data:
            self.client_data[key] = self._build(pid, drop, forget_event)
        return self.client_data[key]

    def _build(self, pid: int, drop: tuple[int, ...], forget_event: int | None) -> ClientData:
        """The client's data in an arm, built from its :class:`ClientDataView`
        only: its train part minus the samples deleted by the events in ``drop``
        (a deletion happens on the client: the data is simply no longer used),
        and the forget set of ``forget_event`` (if it concerns it)."""
        view = ClientDataView.of(self.fd, pid)
        events, seed = self.scenario.events, self.scenario.data_seed
        deletions = [events[e] for e in drop if pid in events[e].client_ids and not events[e].withdraws]
        removed = [view.forget_ids(ev, seed) for ev in deletions]
        forget, label = None, None
        if forget_event is not None and pid in events[forget_event].client_ids:
            ev = events[forget_event]
            forget = view.forget_ids(ev, seed)
            label = ev.label if ev.kind == "delete_class" else None
        return ClientData.from_view(view, self.device, np.concatenate(removed) if removed else None, forget, label)


_RESOLVED: dict[int, tuple[Scenario, ResolvedScenario]] = {}
#: Scenarios a process keeps resolved (a sweep's cells run one after the other).
KEEP_RESOLVED = 4


def resolved(scenario: Scenario) -> ResolvedScenario:
    """The process's one :class:`ResolvedScenario` of a scenario object (kept
    with the object, so its id cannot be reused while it is cached)."""
    entry = _RESOLVED.pop(id(scenario), None)
    if entry is None:
        entry = (scenario, ResolvedScenario(scenario))
    _RESOLVED[id(scenario)] = entry  # most recent last
    while len(_RESOLVED) > KEEP_RESOLVED:
        del _RESOLVED[next(iter(_RESOLVED))]
    return entry[1]


def _fresh_model(rs: ResolvedScenario, arrays: ArrayRecord) -> torch.nn.Module:
    """A fresh model holding the received weights (unlearning ops may alter it)."""
    sc, fd = rs.scenario, rs.fd
    model = build_model(sc.model.name, fd.input_shape, fd.num_classes, sc.model.hidden, seed=0)
    model.load_state_dict(record_to_state(arrays))
    return model.to(rs.device)


_WORK_MODELS: dict[tuple, tuple[torch.nn.Module, dict[str, torch.Tensor]]] = {}


def _work_model(rs: ResolvedScenario, arrays: ArrayRecord) -> torch.nn.Module:
    """One reused model per architecture and device for plain training (a
    process handles one message at a time): the received weights are copied
    straight into every parameter and buffer, and the optimiser is fresh per call."""
    sc = rs.scenario
    key = (sc.model.name, tuple(sc.model.hidden), rs.key, str(rs.device))
    if key not in _WORK_MODELS:
        model = _fresh_model(rs, arrays)
        # state_dict() views share the parameters' storage; on the CPU they take the new weights in place.
        _WORK_MODELS[key] = (model, model.state_dict() if rs.device.type == "cpu" else {})
        return model
    model, views = _WORK_MODELS[key]
    if views:
        load_record_into(views, arrays)
    else:
        model.load_state_dict(record_to_state(arrays))
    return model


def _reply(message: Message, arrays: ArrayRecord | None, metrics: dict, meta: dict) -> Message:
    content = RecordDict()
    if arrays is not None:
        content["arrays"] = arrays
    content["metrics"] = MetricRecord(metrics)
    content["meta"] = ConfigRecord(meta)
    return Message(content=content, reply_to=message)


def _train_epochs(sc: Scenario, model, x, y, epochs: float, seed: int, device) -> tuple[int, float]:
    """Local training for ``epochs`` (possibly fractional); returns the client
    steps and the last training loss."""
    def run(xs, ys, n_epochs: int):
        return train_local(
            model, xs, ys, epochs=n_epochs, batch_size=sc.train.batch_size, lr=sc.train.lr,
            optimizer=sc.train.optimizer, momentum=sc.train.momentum,
            weight_decay=sc.train.weight_decay, seed=seed, device=device,
        )

    steps, full, part = 0, int(epochs), epochs - int(epochs)
    if full:
        res = run(x, y, full)
        steps += res.steps
    if part > 1e-9:
        # A fractional epoch (FedEraser's calibration) trains on a seeded
        # subset of that size.
        g = torch.Generator().manual_seed(seed + 1)
        idx = torch.randperm(len(y), generator=g)[: max(1, int(round(part * len(y))))]
        res = run(x[idx], y[idx], 1)
        steps += res.steps
    return steps, res.loss


def make_client_app(scenarios: list[Scenario] | None = None) -> ClientApp:
    """Build the ClientApp.

    With ``scenarios`` bound it ignores the run config (how ``fedforget run``
    passes scenarios to Ray actors); a message's ``config["sc"]`` picks one, so
    several scenarios (seeds, sweeps) share one runtime.
    """
    app = ClientApp()

    def setup(context: Context, message: Message | None = None) -> tuple[ResolvedScenario, int]:
        if scenarios is not None:
            idx = 0
            if message is not None and "config" in message.content.config_records:
                idx = int(message.content["config"].get("sc", 0))
            sc = scenarios[idx]
        else:
            sc = scenario_from_context(context)
        # Same thread count on every engine, so float reductions match bit for bit.
        torch.set_num_threads(max(1, int(sc.runtime.num_cpus)))
        return resolved(sc), int(context.node_config["partition-id"])

    @app.query("whoami")
    def whoami(message: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        return _reply(message, None, {"partition-id": pid}, {"partition-id": pid})

    @app.train()
    def train(message: Message, context: Context) -> Message:
        rs, pid = setup(context, message)
        sc, cfg = rs.scenario, message.content["config"]
        reference = "train_ids" in message.content.array_records  # the oracle's, not the federation's
        regular = not cfg.get("tag", "")
        if not reference and regular and client_fails(sc.seed, int(cfg["round"]), pid, sc.runtime.client_failure_rate):
            raise SimulatedClientFailure(f"client {pid} failed in round {int(cfg['round'])} "
                                         "(runtime.client_failure_rate)")
        data = rs.data(pid, tuple(cfg.get("drop", [])))
        model = _work_model(rs, message.content["arrays"])
        epochs = float(cfg.get("epochs", sc.train.local_epochs))
        if epochs <= 0:
            raise ValueError(f"epochs must be > 0, got {epochs}")
        x, y = data.x_train, data.y_train
        if reference:
            # The oracle's reference training (simulation-only, not the
            # protocol): train on the given sample ids instead.
            x, y = rs.fd.tensors(message.content["train_ids"]["ids"].numpy())
        steps, loss = _train_epochs(sc, model, x, y, epochs, int(cfg["seed"]), data.device)
        arrays = state_to_record(model.state_dict())
        metrics = {"num-examples": len(y), "steps": steps, "train-loss": loss}
        meta = {"arm": str(cfg.get("arm", "")), "partition-id": pid, "job": int(cfg.get("job", -1))}
        return _reply(message, arrays, metrics, meta)

    @app.train("unlearn")
    def unlearn(message: Message, context: Context) -> Message:
        rs, pid = setup(context, message)
        cfg = dict(message.content["config"])
        op = str(cfg.pop("op"))
        cfg.pop("sc", None)
        if op not in CLIENT_OPS:
            raise ValueError(f"unknown client operation {op!r}")
        fe = cfg.pop("forget_event", None)
        data = rs.data(pid, tuple(cfg.pop("drop", [])), None if fe is None else int(fe))
        model = _fresh_model(rs, message.content["arrays"])
        extra_rec = message.content.array_records.get("extra")
        extra = {k: v.numpy() for k, v in extra_rec.items()} if extra_rec is not None else {}
        reply = CLIENT_OPS[op](model, data, extra, cfg)
        out = RecordDict()
        out["extra"] = ArrayRecord({k: _as_array(v) for k, v in reply.arrays.items()}) if reply.arrays else ArrayRecord()
        out["metrics"] = MetricRecord({k: float(v) for k, v in reply.metrics.items()})
        out["meta"] = ConfigRecord(
            {"arm": str(cfg.get("arm", "")), "partition-id": pid, "op": op, "req": int(cfg.get("req", -1))}
        )
        return Message(content=out, reply_to=message)

    return app


def _as_array(v) -> Array:
    return numpy_to_array(np.asarray(v))


# Module-level app for ``flwr run .`` (the scenario comes from the run config).
app = make_client_app()
