"""Unlearning methods: one module per method, registered by name.

A method registers itself with :func:`register_method` in
:data:`fedforget.registry.methods`, which finds every module of this package
by itself (no list to keep); ``CLIENT_OPS`` maps ``<method>.<op>`` to the
client-side functions the ClientApp runs for ``train.unlearn`` messages.
"""

from __future__ import annotations

from fedforget import registry
from fedforget.unlearning.base import (
    CLIENT_OPS,
    ClientData,
    ClientReply,
    CostRecord,
    Federation,
    HistoryEntry,
    MethodParams,
    UnlearningMethod,
    register_method,
)


def get_method(name: str, params: dict | None = None) -> UnlearningMethod:
    """Instantiate a registered method with validated parameters."""
    cls = registry.methods.get(name)
    return cls(cls.Params.model_validate(params or {}))


def method_params(scenario, name: str) -> dict:
    """The scenario's ``[unlearning.<name>]`` table (empty when absent)."""
    return scenario.unlearning.method_params(name)


__all__ = [
    "CLIENT_OPS",
    "ClientData",
    "ClientReply",
    "CostRecord",
    "Federation",
    "HistoryEntry",
    "MethodParams",
    "UnlearningMethod",
    "get_method",
    "method_params",
    "register_method",
]

# Importing the package registers every method and its client operations: the
# ClientApp reads CLIENT_OPS directly, in processes that never read the registry.
registry.methods.load()
