"""The round protocol, apart from the transport that carries its messages.

:class:`ScenarioRun` drives one scenario round by round over a
:class:`FederationRuntime`; methods reach the federation through one
:class:`MethodHandle`. Flower's runtime (``fedforget.flower``) and the in-process
federation (:mod:`fedforget.protocol.local`) both implement the runtime; nothing
here imports ``flwr``.
"""

from fedforget.protocol.errors import ClientFailure, DivergenceError, RunsFailed
from fedforget.protocol.federation import AskOutcome, FederationRuntime, MethodHandle
from fedforget.protocol.records import (
    AskContext,
    AskRequest,
    FailurePolicy,
    TrainOutcome,
    TrainRequest,
)
from fedforget.protocol.run import RunSummary, ScenarioRun, run_scenario

__all__ = [
    "AskContext",
    "AskOutcome",
    "AskRequest",
    "ClientFailure",
    "DivergenceError",
    "FailurePolicy",
    "FederationRuntime",
    "MethodHandle",
    "RunSummary",
    "RunsFailed",
    "ScenarioRun",
    "TrainOutcome",
    "TrainRequest",
    "run_scenario",
]
