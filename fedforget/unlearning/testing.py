"""An in-process federation for methods: the :class:`Federation` handle over
local tensors, without Flower.

Client operations run through the same :data:`CLIENT_OPS` the ClientApp uses, so a
method's whole loop (server side and client side) runs here exactly as in a run;
only the transport differs. Rounds over the remaining clients are real FedAvg
rounds (local SGD, example-weighted average). Costs are accounted like the
federation runtime's: client steps from the ops' ``steps`` metric and from local
training, bytes from the arrays that would travel.

Used by the tests and by ``simulations/forsaken_sweep.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from fedforget.training import evaluate, train_local
from fedforget.unlearning.base import CLIENT_OPS, ClientData, ClientReply, CostRecord, HistoryEntry


def _nbytes(arrays: dict[str, Any] | None) -> int:
    return sum(int(np.asarray(v).nbytes) for v in (arrays or {}).values())


def _state_bytes(model: nn.Module) -> int:
    return sum(v.numel() * v.element_size() for v in model.state_dict().values())


class LocalFederation:
    """A :class:`~fedforget.unlearning.base.Federation` over in-memory clients.

    Parameters
    ----------
    model_fn : callable
        Builds a fresh model of the federation's architecture.
    clients : dict of int to ClientData
        Every client's own data.
    withdrawing : list of int
        Clients leaving in this event.
    num_classes : int
    server_validation : (Tensor, Tensor), optional
        The server's validation set (methods' accuracy guards); without it
        :meth:`validation_accuracy` is NaN (guards never trigger).
    local_epochs, lr, batch_size : training of :meth:`run_rounds`.
    history : list of HistoryEntry, optional
    seed : int
    """

    def __init__(
        self,
        model_fn,
        clients: dict[int, ClientData],
        withdrawing: list[int],
        num_classes: int,
        server_validation: tuple[torch.Tensor, torch.Tensor] | None = None,
        *,
        local_epochs: int = 1,
        lr: float = 0.05,
        batch_size: int = 32,
        history: list[HistoryEntry] | None = None,
        seed: int = 0,
        round: int = 1,
    ) -> None:
        self.model_fn = model_fn
        self.clients = clients
        self.round = round
        self.withdrawing = list(withdrawing)
        self.remaining = [c for c in clients if c not in withdrawing]
        self.num_clients = len(clients)
        self.num_classes = num_classes
        self.local_epochs = local_epochs
        self.lr = self.train_lr = lr
        self.batch_size = batch_size
        self.server_validation = server_validation
        self._history = list(history or [])
        self._seed = seed
        self.asked: list[tuple[int, str]] = []
        self.exchanges = 0
        self.logs: list[dict] = []
        self._cost = CostRecord()

    def build_model(self) -> nn.Module:
        return self.model_fn()

    # -- asking clients -----------------------------------------------------------
    def _run(self, client: int, op: str, model: nn.Module, arrays, config) -> ClientReply:
        self.asked.append((client, op))
        rep = CLIENT_OPS[op](model, self.clients[client], dict(arrays or {}), dict(config))
        self._cost.client_steps += int(rep.metrics.get("steps", 0))
        self._cost.bytes_down += _state_bytes(model) + _nbytes(arrays)
        self._cost.bytes_up += _nbytes(rep.arrays)
        return rep

    def ask_batch(self, requests, model: nn.Module) -> list[ClientReply]:
        allowed = set(self.withdrawing) | set(self.remaining)
        bad = [c for c, *_ in requests if c not in allowed]
        if bad:
            raise ValueError(f"ask_batch: clients {bad} are neither withdrawing nor remaining")
        self.exchanges += 1
        return [self._run(c, op, model, arrays, config) for c, op, arrays, config in requests]

    def ask_client(self, client, op, model, arrays, config) -> ClientReply:
        if client not in self.withdrawing:
            raise ValueError(f"ask_client: client {client} is not withdrawing in this event")
        return self.ask_batch([(client, op, arrays, config)], model)[0]

    def ask_remaining(self, op, model, arrays, config, clients) -> dict[int, ClientReply]:
        if any(c not in self.remaining for c in clients):
            raise ValueError(f"ask_remaining: {clients} includes clients that are not remaining")
        return dict(zip(clients, self.ask_batch([(c, op, arrays, config) for c in clients], model), strict=True))

    def self_check(self, model: nn.Module) -> float:
        replies = self.ask_batch([(c, "self_check", None, {}) for c in self.withdrawing], model)
        n = sum(r.metrics["n"] for r in replies)
        return float(sum(r.metrics["auc"] * r.metrics["n"] for r in replies) / n)

    # -- rounds over the remaining clients -----------------------------------------
    def train_remaining(self, model, tag, *, epochs=None, clients=None):
        clients = list(self.remaining if clients is None else clients)
        states, counts = {}, {}
        self.exchanges += 1
        self._cost.rounds += 1
        for c in clients:
            local = self.build_model()
            local.load_state_dict(model.state_dict())
            data = self.clients[c]
            res = train_local(local, data.x_train, data.y_train, epochs=max(1, round(epochs or self.local_epochs)),
                              batch_size=self.batch_size, lr=self.lr, seed=self.seed("local", tag, c))
            self._cost.client_steps += res.steps
            self._cost.bytes_down += _state_bytes(model)
            self._cost.bytes_up += _state_bytes(local)
            states[c], counts[c] = local.state_dict(), res.num_examples
        return states, counts

    def run_rounds(self, model, k, tag, *, epochs=None):
        for i in range(k):
            states, counts = self.train_remaining(model, f"{tag}:{i}", epochs=epochs)
            total = sum(counts.values())
            avg = {n: sum(states[c][n].float() * (counts[c] / total) for c in states) for n in model.state_dict()}
            model.load_state_dict(avg)
        return model

    # -- the rest of the handle ------------------------------------------------------
    def history(self) -> list[HistoryEntry]:
        return list(self._history)

    def server_validation_data(self):
        sv = self.server_validation
        return sv if sv is not None and len(sv[1]) else None

    def validation_accuracy(self, model: nn.Module) -> float:
        if self.server_validation is None or len(self.server_validation[1]) == 0:
            return float("nan")
        return evaluate(model, *self.server_validation)[1]

    def log(self, **info) -> None:
        self.logs.append(info)

    def cost(self) -> CostRecord:
        return CostRecord(**vars(self._cost))

    def seed(self, *parts) -> int:
        from fedforget.schedule import derive_seed

        return derive_seed(self._seed, "method", *[str(p) for p in parts])
