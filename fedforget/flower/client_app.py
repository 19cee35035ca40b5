"""The fedforget ClientApp.

Each virtual SuperNode is one client; ``partition-id`` in its node config picks
its data. Its raw data never leaves this module: replies carry weights, gradients
or statistics only.

Message types handled:

- ``train``: local training from the received global weights.
- ``evaluate``: loss/accuracy of the received weights on the client's validation part.
- ``train.unlearn``: a method's client-side operation (``config["op"]``), looked up
  in :data:`fedforget.unlearning.CLIENT_OPS`.
- ``query.whoami``: the client's partition id (the server maps nodes to clients).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedforget.config import Scenario, load_scenario, scenario_from_dict
from fedforget.data import federated_data_for
from fedforget.data.federated import ClientDataView
from fedforget.flower.arrays import record_to_state
from fedforget.models import build_model, get_device
from fedforget.schedule import client_fails
from fedforget.training import evaluate, train_local
from fedforget.unlearning import CLIENT_OPS, ClientData


@lru_cache(maxsize=4)
def _scenario_from_json(text: str) -> Scenario:
    import json

    return scenario_from_dict(json.loads(text), "<run_config>")


def scenario_from_context(context: Context) -> Scenario:
    """The scenario of a ``flwr run`` app: ``scenario-json`` or a ``scenario`` path
    (plus space-separated ``overrides``) in the run config."""
    rc = context.run_config
    if "scenario-json" in rc:
        return _scenario_from_json(str(rc["scenario-json"]))
    if "scenario" in rc:
        overrides = str(rc.get("overrides", "")).split()
        return load_scenario(str(rc["scenario"]), overrides)
    raise ValueError("run config has neither 'scenario' nor 'scenario-json'")


class SimulatedClientFailure(RuntimeError):
    """A failure drawn by ``runtime.client_failure_rate`` (the reply becomes an error)."""


def _event_list(raw) -> list[int]:
    return [int(e) for e in str(raw or "").split(",") if e != ""]


def _client_data(scenario: Scenario, pid: int, drop: list[int] = (), forget_event: int | None = None) -> ClientData:
    """The client's data in an arm, built from its :class:`ClientDataView` only:
    its train part minus the samples deleted by the events in ``drop`` (a
    deletion happens on the client: the data is simply no longer used), and the
    forget set of ``forget_event`` (if it concerns it)."""
    view = ClientDataView.of(federated_data_for(scenario), pid)
    events, seed = scenario.events, scenario.seed
    deletions = [events[e] for e in drop if pid in events[e].client_ids and not events[e].withdraws]
    removed = [view.forget_ids(ev, seed) for ev in deletions]
    forget, label = None, None
    if forget_event is not None and pid in events[forget_event].client_ids:
        ev = events[forget_event]
        forget = view.forget_ids(ev, seed)
        label = ev.label if ev.kind == "delete_class" else None
    device = get_device(scenario.runtime.device)
    return ClientData.from_view(view, device, np.concatenate(removed) if removed else None, forget, label)


def _reference_train_data(scenario: Scenario, ids: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The samples an oracle reference federation trains this client on
    (auditor-side simulation, not the protocol; no method reaches this)."""
    return federated_data_for(scenario).tensors(ids)


def _model(scenario: Scenario, arrays: ArrayRecord, device: torch.device) -> torch.nn.Module:
    """A fresh model holding the received weights (unlearning ops may alter it)."""
    fd = federated_data_for(scenario)
    model = build_model(scenario.model.name, fd.input_shape, fd.num_classes, scenario.model.hidden, seed=0)
    model.load_state_dict(record_to_state(arrays))
    return model.to(device)


_WORK_MODELS: dict[tuple, torch.nn.Module] = {}


def _work_model(scenario: Scenario, arrays: ArrayRecord, device: torch.device) -> torch.nn.Module:
    """One reused model per architecture and device for plain training and
    evaluation (a process handles one message at a time): loading the weights
    replaces every parameter and buffer, and the optimiser is fresh per call."""
    fd = federated_data_for(scenario)
    key = (scenario.model.name, tuple(fd.input_shape), fd.num_classes, tuple(scenario.model.hidden), str(device))
    model = _WORK_MODELS.get(key)
    if model is None:
        model = _WORK_MODELS[key] = _model(scenario, arrays, device)
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

    def setup(context: Context, message: Message | None = None) -> tuple[Scenario, int]:
        if scenarios is not None:
            idx = 0
            if message is not None and "config" in message.content.config_records:
                idx = int(message.content["config"].get("sc", 0))
            sc = scenarios[idx]
        else:
            sc = scenario_from_context(context)
        # Same thread count on every engine, so float reductions match bit for bit.
        torch.set_num_threads(max(1, int(sc.runtime.num_cpus)))
        return sc, int(context.node_config["partition-id"])

    @app.query("whoami")
    def whoami(message: Message, context: Context) -> Message:
        _, pid = setup(context)
        return _reply(message, None, {"partition-id": pid}, {"partition-id": pid})

    @app.train()
    def train(message: Message, context: Context) -> Message:
        sc, pid = setup(context, message)
        cfg = message.content["config"]
        tag = str(cfg.get("round", ""))
        reference = "train_ids" in message.content.array_records  # the oracle's, not the federation's
        if not reference and tag.isdigit() and client_fails(sc.seed, int(tag), pid, sc.runtime.client_failure_rate):
            raise SimulatedClientFailure(f"client {pid} failed in round {tag} (runtime.client_failure_rate)")
        data = _client_data(sc, pid, _event_list(cfg.get("drop")))
        model = _work_model(sc, message.content["arrays"], data.device)
        epochs = float(cfg.get("epochs", sc.train.local_epochs))
        if epochs <= 0:
            raise ValueError(f"epochs must be > 0, got {epochs}")
        x, y = data.x_train, data.y_train
        if "train_ids" in message.content.array_records:
            # The oracle's reference training (simulation-only, not the
            # protocol): train on the given sample ids instead.
            x, y = _reference_train_data(sc, message.content["train_ids"]["ids"].numpy())
        steps, loss = _train_epochs(sc, model, x, y, epochs, int(cfg["seed"]), data.device)
        arrays = ArrayRecord({k: v.cpu() for k, v in model.state_dict().items()})
        metrics = {"num-examples": len(y), "steps": steps, "train-loss": loss}
        meta = {"arm": str(cfg.get("arm", "")), "partition-id": pid, "job": int(cfg.get("job", -1))}
        return _reply(message, arrays, metrics, meta)

    @app.evaluate()
    def evaluate_validation(message: Message, context: Context) -> Message:
        sc, pid = setup(context, message)
        data = _client_data(sc, pid)
        model = _work_model(sc, message.content["arrays"], data.device)
        loss, acc = evaluate(model, data.x_validation, data.y_validation)
        metrics = {"num-examples": len(data.y_validation), "eval-loss": loss, "eval-accuracy": acc}
        return _reply(message, None, metrics, {"partition-id": pid})

    @app.train("unlearn")
    def unlearn(message: Message, context: Context) -> Message:
        sc, pid = setup(context, message)
        cfg = dict(message.content["config"])
        op = str(cfg.pop("op"))
        cfg.pop("sc", None)
        if op not in CLIENT_OPS:
            raise ValueError(f"unknown client operation {op!r}")
        fe = int(cfg.pop("forget_event", -1))
        data = _client_data(sc, pid, _event_list(cfg.pop("drop", "")), fe if fe >= 0 else None)
        model = _model(sc, message.content["arrays"], data.device)
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


def _as_array(v):
    from flwr.app import Array

    return Array(np.ascontiguousarray(np.asarray(v)))


# Module-level app for ``flwr run .`` (the scenario comes from the run config).
app = make_client_app()
