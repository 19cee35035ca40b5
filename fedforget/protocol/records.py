"""Typed records between the round protocol and the federation that carries it.

A :class:`TrainRequest` is one arm's local training in one exchange; an
:class:`AskRequest` is one client operation of an unlearning method. Round
labels are floats end to end: ``r`` is regular round ``r``, ``t - 0.5`` the
unlearning step of an event at round ``t``. Exchanges a method runs inside its
step carry a ``tag`` naming them; seeds derive from that tag, so every arm and
every engine draws the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from fedforget.unlearning.base import AskRequest

__all__ = ["AskContext", "AskRequest", "FailurePolicy", "State", "TrainOutcome", "TrainRequest"]

State = dict[str, torch.Tensor]


@dataclass(kw_only=True)
class TrainRequest:
    """One arm's local training in one exchange.

    Attributes
    ----------
    arm : str
        The arm (or the oracle's reference federation) the training is for.
    round : float
        The round label the exchange belongs to.
    tag : str
        ``""`` for a regular round; otherwise the name of the exchange a method
        runs inside its unlearning step (seeds and the client sample derive from it).
    state : State
        The global model the clients start from.
    clients : list of int
        The partition ids that train.
    epochs : float or None
        Local epochs (``None``: the scenario's ``train.local_epochs``).
    keep_client_states : bool
        Return each client's trained state (for methods that store rounds).
    seed : int or None
        Overrides the scenario seed (the oracle's reference federations).
    train_ids : dict of int to ndarray or None
        Per-client training ids (the oracle's reference federations only).
    drop : tuple of int
        Deletion events in force in this arm: each client leaves their samples out.
    """

    arm: str
    round: float
    state: State
    clients: list[int]
    tag: str = ""
    epochs: float | None = None
    keep_client_states: bool = False
    seed: int | None = None
    train_ids: dict[int, np.ndarray] | None = None
    drop: tuple[int, ...] = ()

    @property
    def regular(self) -> bool:
        """A regular round (simulated client failures happen only there)."""
        return not self.tag

    @property
    def seed_key(self) -> int | str:
        """What client sampling and local seeds derive from: the round number of
        a regular round, the tag of any other exchange."""
        return int(self.round) if self.regular else self.tag


@dataclass
class TrainOutcome:
    """One :class:`TrainRequest`'s aggregate and what it cost."""

    state: State  # aggregated (unchanged if nobody trained)
    failed: dict[int, str] = field(default_factory=dict)  # client -> reason (recorded failures)
    diverged: str = ""  # what went non-finite (on_divergence = "mark"; otherwise train raises)
    client_states: dict[int, State] = field(default_factory=dict)
    num_examples: dict[int, int] = field(default_factory=dict)
    steps: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    wall_s: float = 0.0  # of the whole exchange this request was sent in


@dataclass(frozen=True, kw_only=True)
class AskContext:
    """Whose request it is: the arm, its model, and the client data in force."""

    arm: str
    state: State
    drop: tuple[int, ...] = ()  # deletion events in force in the arm
    forget_event: int | None = None  # the event whose forget set the ops see


@dataclass(frozen=True)
class FailurePolicy:
    """What a client's error reply does (``[runtime]`` min_replies,
    on_client_error, client_retries, on_divergence)."""

    min_replies: int = 1
    on_client_error: str = "abort"
    retries: int = 0
    mark_divergence: bool = False  # on_divergence = "mark": report it in the outcome instead of raising

    def records(self, reason: str) -> bool:
        """A training error is recorded (not fatal): a simulated failure always,
        a ClientApp exception unless on_client_error = 'abort'."""
        return self.on_client_error == "record" or "SimulatedClientFailure" in reason


def divergence(state: State, losses: list[float] = ()) -> str:
    """What is non-finite in a state (or the losses), or '' when nothing is."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        return f"non-finite weights ({', '.join(bad[:3])})"
    return "a non-finite training loss" if not all(np.isfinite(losses)) else ""


def clone_state(state: State) -> State:
    return {k: v.detach().clone() for k, v in state.items()}
