"""Membership-inference attacks used as the oracle's per-sample decision rule.

One module per attack, each a class deriving from
:class:`~fedforget.oracle.attacks.base.Attack` (the template: score, threshold,
reference models) and registered by name in :data:`fedforget.registry.attacks`,
which finds every module of this package by itself. Its parameters live in its
own ``Params`` table (``[oracle.<name>]`` in a scenario).

``ATTACKS`` is that registry (it reads like a mapping from names to classes).
"""

from fedforget import registry
from fedforget.oracle.attacks.base import (
    Attack,
    AttackParams,
    best_balanced_threshold,
    get_attack,
)
from fedforget.oracle.attacks.lira import (
    LiraAttack,
    lira_in_masks,
    lira_offline_score,
    lira_score,
)
from fedforget.oracle.attacks.loss import LossThresholdAttack
from fedforget.oracle.attacks.population import PopulationAttack

#: The attack registry under its earlier name.
ATTACKS = registry.attacks

__all__ = [
    "Attack",
    "AttackParams",
    "LossThresholdAttack",
    "PopulationAttack",
    "LiraAttack",
    "ATTACKS",
    "get_attack",
    "best_balanced_threshold",
    "lira_in_masks",
    "lira_score",
    "lira_offline_score",
]
