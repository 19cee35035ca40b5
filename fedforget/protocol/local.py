"""The in-process federation: :class:`~fedforget.protocol.federation.FederationRuntime`
over clients' tensors in memory, without Flower.

Client operations run through the same ``CLIENT_OPS`` the ClientApp uses, and the
method gets the same :class:`~fedforget.protocol.federation.MethodHandle` as in a
run, so a method's whole loop (server side and client side) runs here exactly as
in a run; only the transport differs. Rounds over the remaining clients are real
FedAvg rounds (local SGD, example-weighted mean). Costs are counted like the
Flower runtime's: client steps from the ops' ``steps`` metric and from local
training, bytes from the arrays that would travel.

Used by the tests and by ``simulations/forsaken_sweep.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fedforget.protocol.federation import AskOutcome, FederationRuntime, MethodHandle
from fedforget.protocol.records import (
    AskContext,
    AskRequest,
    FailurePolicy,
    TrainOutcome,
    TrainRequest,
)
from fedforget.schedule import local_seed
from fedforget.training import train_local, weighted_mean_state
from fedforget.unlearning.base import CLIENT_OPS, ClientData, HistoryEntry


def _nbytes(arrays: dict[str, Any] | None) -> int:
    return sum(int(np.asarray(v).nbytes) for v in (arrays or {}).values())


def _state_bytes(state: dict[str, torch.Tensor]) -> int:
    return sum(v.numel() * v.element_size() for v in state.values())


class InProcessRuntime(FederationRuntime):
    """Clients in memory: ``clients`` maps a partition id to its :class:`ClientData`.

    ``asked`` records every (client, op) asked, ``exchanges`` counts message
    exchanges, ``logs`` keeps what methods log.
    """

    def __init__(
        self,
        model_fn,
        clients: dict[int, ClientData],
        *,
        seed: int = 0,
        local_epochs: int = 1,
        lr: float = 0.05,
        batch_size: int = 32,
    ) -> None:
        self.model_fn = model_fn
        self.clients = clients
        self.seed = seed
        self.num_clients = len(clients)
        self.fraction = 1.0
        self.policy = FailurePolicy()
        self.local_epochs = local_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.asked: list[tuple[int, str]] = []
        self.exchanges = 0
        self.logs: list[dict] = []
        self.warnings: list[str] = []

    def ask(self, requests: list[AskRequest], context: AskContext) -> AskOutcome:
        self.exchanges += 1
        model = self.model_fn()
        replies, up, down = [], 0, 0
        for r in requests:
            self.asked.append((r.client, r.op))
            model.load_state_dict(context.state)
            replies.append(CLIENT_OPS[r.op](model, self.clients[r.client], dict(r.arrays or {}), dict(r.config)))
            down += _state_bytes(context.state) + _nbytes(r.arrays)
            up += _nbytes(replies[-1].arrays)
        return AskOutcome(replies, up, down)

    def train(self, requests: list[TrainRequest]) -> list[TrainOutcome]:
        self.exchanges += 1
        return [self._train_one(r) for r in requests]

    def _train_one(self, request: TrainRequest) -> TrainOutcome:
        out = TrainOutcome(state={k: v.clone() for k, v in request.state.items()})
        states, counts = {}, {}
        for c in request.clients:
            local = self.model_fn()
            local.load_state_dict(request.state)
            data = self.clients[c]
            res = train_local(local, data.x_train, data.y_train,
                              epochs=max(1, round(request.epochs or self.local_epochs)), batch_size=self.batch_size,
                              lr=self.lr, seed=local_seed(self.seed, request.seed_key, c))
            out.steps += res.steps
            out.bytes_down += _state_bytes(request.state)
            out.bytes_up += _state_bytes(local.state_dict())
            states[c], counts[c] = local.state_dict(), res.num_examples
        if states:
            out.state = weighted_mean_state([{k: v.float() for k, v in s.items()} for s in states.values()],
                                            [counts[c] for c in states])
        if request.keep_client_states:
            out.client_states, out.num_examples = states, counts
        return out

    def log(self, event: str, **info: Any) -> None:
        if event == "warning":
            self.warnings.append(info["message"])
        else:
            self.logs.append(info)


class LocalFederation(MethodHandle):
    """A :class:`MethodHandle` over an :class:`InProcessRuntime`: what a method
    gets in a run, built from in-memory clients.

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
    local_epochs, lr, batch_size : training of rounds over the remaining clients.
    history : list of HistoryEntry, optional
    seed : int
    round : int
        The event round.
    """

    def __init__(
        self,
        model_fn,
        clients: dict[int, ClientData],
        withdrawing: list[int],
        num_classes: int,
        *,
        server_validation: tuple[torch.Tensor, torch.Tensor] | None = None,
        local_epochs: int = 1,
        lr: float = 0.05,
        batch_size: int = 32,
        history: list[HistoryEntry] | None = None,
        seed: int = 0,
        round: int = 1,
    ) -> None:
        runtime = InProcessRuntime(model_fn, clients, seed=seed, local_epochs=local_epochs, lr=lr,
                                   batch_size=batch_size)
        excluded = {c for c in clients if c in withdrawing}
        super().__init__(runtime, arm="local", event_round=round, withdrawing=withdrawing, excluded=excluded,
                         model_factory=model_fn, num_classes=num_classes, history=history or [],
                         server_validation=server_validation, local_epochs=local_epochs, train_lr=lr)

    @property
    def asked(self) -> list[tuple[int, str]]:
        return self.runtime.asked

    @property
    def exchanges(self) -> int:
        return self.runtime.exchanges

    @property
    def logs(self) -> list[dict]:
        return self.runtime.logs

    @property
    def warnings(self) -> list[str]:
        return self.runtime.warnings
