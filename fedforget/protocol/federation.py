"""The federation interface the round protocol and the methods talk to.

:class:`FederationRuntime` is what carries messages: train a batch of
:class:`~fedforget.protocol.records.TrainRequest`, ask clients for
:class:`~fedforget.protocol.records.AskRequest` operations, and sample clients
from the scenario seed. Two implement it: the Flower runtime in
``fedforget.flower`` (messages over a Grid, on every engine) and the in-process
federation in :mod:`fedforget.protocol.local` (tensors in memory, for method
tests and sweeps).

:class:`MethodHandle` is the one handle an unlearning method gets during one
event (:class:`fedforget.unlearning.base.Federation`), over either runtime: the
guards (whom a method may ask), cost accounting and seeds live here once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fedforget.protocol.records import (
    AskContext,
    AskRequest,
    FailurePolicy,
    TrainOutcome,
    TrainRequest,
)
from fedforget.schedule import derive_seed, sample_clients
from fedforget.training import evaluate, weighted_mean
from fedforget.unlearning.base import ClientReply, CostRecord, HistoryEntry


@dataclass
class AskOutcome:
    """The replies to a batch of :class:`AskRequest` (request order) and the
    array bytes that travelled."""

    replies: list[ClientReply]
    bytes_up: int
    bytes_down: int


class FederationRuntime(ABC):
    """All message traffic of one scenario run.

    Subclasses set ``seed``, ``num_clients``, ``fraction`` and ``policy`` and
    implement :meth:`train` and :meth:`ask`.
    """

    seed: int
    num_clients: int
    fraction: float
    policy: FailurePolicy

    def sample(self, key: int | str, exclude: set[int] = frozenset(), seed: int | None = None) -> list[int]:
        """Partition ids sampled for ``key`` (a round number or an exchange's
        tag) minus ``exclude``; ``seed`` overrides the scenario seed."""
        seed = self.seed if seed is None else seed
        return sample_clients(seed, key, self.num_clients, self.fraction, exclude)

    @abstractmethod
    def train(self, requests: list[TrainRequest]) -> list[TrainOutcome]:
        """Every request's local training in one exchange, each aggregated."""

    @abstractmethod
    def ask(self, requests: list[AskRequest], context: AskContext) -> AskOutcome:
        """Client operations in one exchange; replies in request order."""

    def log(self, event: str, **info: Any) -> None:
        """A line in the run's events log (default: nowhere)."""


class MethodHandle:
    """What one unlearning method sees of the federation during one event.

    Parameters
    ----------
    runtime : FederationRuntime
    arm : str
    event_round : int
    withdrawing : list of int
        Clients leaving (or deleting data) in this event.
    excluded : set of int
        Clients no longer in the arm after the event.
    model_factory : callable
        Builds a fresh model of the scenario's architecture.
    num_classes : int
    history : list of HistoryEntry
        The arm's stored rounds.
    server_validation : (Tensor, Tensor) or None
        The server's validation set (methods' guards; never the test set).
    local_epochs, train_lr : the scenario's training settings.
    drop : tuple of int
        Deletion events in force in the arm (this one included).
    event_index : int or None
        The event whose forget set the client operations see.
    """

    def __init__(
        self,
        runtime: FederationRuntime,
        *,
        arm: str,
        event_round: int,
        withdrawing: list[int],
        excluded: set[int],
        model_factory: Callable[[], nn.Module],
        num_classes: int,
        history: list[HistoryEntry] = (),
        server_validation: tuple[torch.Tensor, torch.Tensor] | None = None,
        local_epochs: int = 1,
        train_lr: float = 0.05,
        drop: tuple[int, ...] = (),
        event_index: int | None = None,
    ) -> None:
        self.runtime = runtime
        self.arm = arm
        self.round = event_round
        self.withdrawing = list(withdrawing)
        self.num_clients = runtime.num_clients
        self.remaining = [c for c in range(runtime.num_clients) if c not in excluded]
        self.num_classes = num_classes
        self.local_epochs = local_epochs
        self.train_lr = train_lr
        self.drop = tuple(drop)
        self.event_index = event_index
        self._model_factory = model_factory
        self._history = list(history)
        self._server_validation = server_validation
        self._cost = CostRecord()
        self._exchanges = 0

    def build_model(self) -> nn.Module:
        return self._model_factory()

    # -- asking clients ------------------------------------------------------------
    def ask_client(self, client, op, model, arrays, config) -> ClientReply:
        if client not in self.withdrawing:
            raise ValueError(f"ask_client: client {client} is not withdrawing in this event")
        return self._ask([AskRequest(client, op, arrays, dict(config))], model)[0]

    def ask_remaining(self, op, model, arrays, config, clients) -> dict[int, ClientReply]:
        bad = [c for c in clients if c not in self.remaining]
        if bad:
            raise ValueError(f"ask_remaining: clients {bad} are not remaining clients")
        replies = self._ask([AskRequest(c, op, arrays, dict(config)) for c in clients], model)
        return dict(zip(clients, replies, strict=True))

    def ask_batch(self, requests: list[AskRequest], model) -> list[ClientReply]:
        allowed = set(self.withdrawing) | set(self.remaining)
        bad = [r.client for r in requests if r.client not in allowed]
        if bad:
            raise ValueError(f"ask_batch: clients {bad} are neither withdrawing nor remaining")
        return self._ask(requests, model)

    def _ask(self, requests: list[AskRequest], model: nn.Module) -> list[ClientReply]:
        context = AskContext(arm=self.arm, state=model.state_dict(), drop=self.drop, forget_event=self.event_index)
        out = self.runtime.ask(requests, context)
        self._cost.bytes_up += out.bytes_up
        self._cost.bytes_down += out.bytes_down
        self._cost.client_steps += sum(int(r.metrics.get("steps", 0)) for r in out.replies)
        return out.replies

    def self_check(self, model) -> float:
        replies = self._ask([AskRequest(c, "self_check") for c in self.withdrawing], model)
        return float(weighted_mean([r.metrics["auc"] for r in replies], [r.metrics["n"] for r in replies]))

    # -- rounds over the remaining clients ----------------------------------------------
    def _tag(self, tag: str) -> str:
        self._exchanges += 1
        return f"{self.arm}:e{self.round}:{self._exchanges}:{tag}"

    def _train(self, model_state, tag: str, clients, epochs, keep: bool) -> TrainOutcome:
        request = TrainRequest(arm=self.arm, round=self.round - 0.5, tag=tag, state=model_state, clients=clients,
                               epochs=epochs, keep_client_states=keep, drop=self.drop)
        (res,) = self.runtime.train([request])
        self._cost.client_steps += res.steps
        self._cost.bytes_up += res.bytes_up
        self._cost.bytes_down += res.bytes_down
        self._cost.rounds += 1
        return res

    def _excluded(self) -> set[int]:
        return set(range(self.num_clients)) - set(self.remaining)

    def train_remaining(self, model, tag, *, epochs=None, clients=None):
        tag = self._tag(tag)
        if clients is None:
            clients = self.runtime.sample(tag, self._excluded())
        elif any(c not in self.remaining for c in clients):
            raise ValueError(f"train_remaining: {clients} includes clients that are not remaining")
        res = self._train(model.state_dict(), tag, list(clients), epochs, keep=True)
        return res.client_states, res.num_examples

    def run_rounds(self, model, k, tag, *, epochs=None):
        state = {n: v.detach().clone() for n, v in model.state_dict().items()}
        for _ in range(k):
            rtag = self._tag(tag)
            state = self._train(state, rtag, self.runtime.sample(rtag, self._excluded()), epochs, keep=False).state
        out = self.build_model()
        out.load_state_dict(state)
        return out

    # -- the rest of the handle ------------------------------------------------------------
    def history(self) -> list[HistoryEntry]:
        return list(self._history)

    def server_validation_data(self):
        sv = self._server_validation
        return sv if sv is not None and len(sv[1]) else None

    def validation_accuracy(self, model) -> float:
        sv = self.server_validation_data()
        return evaluate(model, *sv)[1] if sv is not None else float("nan")

    def log(self, **info) -> None:
        self.runtime.log("unlearn_step", arm=self.arm, round=self.round, **info)

    def warn(self, message: str) -> None:
        self.runtime.log("warning", message=f"arm {self.arm!r}: {message}")

    def cost(self) -> CostRecord:
        return CostRecord(**vars(self._cost))

    def seed(self, *parts) -> int:
        return derive_seed(self.runtime.seed, "method", self.arm, self.round, *parts)
