"""Unlearning methods: one module per method, registered by name.

``METHODS`` maps a name to its class; ``CLIENT_OPS`` maps ``<method>.<op>`` to the
client-side functions the ClientApp runs for ``train.unlearn`` messages.
"""

from __future__ import annotations

import importlib

from fedforget.unlearning.base import (
    CLIENT_OPS,
    METHODS,
    ClientData,
    ClientReply,
    CostRecord,
    Federation,
    HistoryEntry,
    MethodParams,
    UnlearningMethod,
    register_method,
)

# Importing a method module registers it.
_METHOD_MODULES = ("none", "forsaken", "perturb", "fnn", "federaser", "pga")
for _m in _METHOD_MODULES:
    importlib.import_module(f"fedforget.unlearning.{_m}")


def get_method(name: str, params: dict | None = None) -> UnlearningMethod:
    """Instantiate a registered method with validated parameters."""
    if name not in METHODS:
        raise ValueError(f"unknown unlearning method {name!r}; known: {', '.join(sorted(METHODS))}")
    cls = METHODS[name]
    return cls(cls.Params.model_validate(params or {}))


def method_params(scenario, name: str) -> dict:
    extra = scenario.unlearning.model_extra or {}
    return dict(extra.get(name) or {})


def validate_unlearning_config(scenario) -> None:
    """Check method names and their parameter tables (raises ValueError)."""
    un = scenario.unlearning
    for name in un.methods:
        if name not in METHODS:
            raise ValueError(
                f"unlearning.methods: unknown method {name!r}; known: {', '.join(sorted(METHODS))}"
            )
    if len(set(un.methods)) != len(un.methods):
        raise ValueError("unlearning.methods lists a method twice")
    if un.methods and not scenario.events:
        raise ValueError("unlearning.methods is set but there are no [[events]]")
    from fedforget.config import check_params_table

    for key, table in (un.model_extra or {}).items():
        try:
            check_params_table(key, table, METHODS, "method")
        except ValueError as err:
            raise ValueError(f"unlearning.{err}") from None
    for name in un.methods:
        cls = METHODS[name]
        cls.check_scenario(scenario, cls.Params(**method_params(scenario, name)))
    if scenario.events and not un.methods:
        import warnings

        warnings.warn(
            "the scenario has [[events]] but unlearning.methods is empty: only the original and retrain "
            "arms run (no unlearning method is compared)", UserWarning, stacklevel=2,
        )


__all__ = [
    "CLIENT_OPS",
    "METHODS",
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
    "validate_unlearning_config",
]
