"""The cost ledger: what each arm's regular rounds and each method's unlearning
steps cost the federation, and retraining's cost as the yardstick.

Retraining from scratch to an event redoes rounds 1..t-1 without the forgetting
clients; its cost (client steps, bytes, wall seconds) divides each method's
step cost into a speed-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fedforget.protocol.records import TrainOutcome
from fedforget.schedule import RETRAIN
from fedforget.unlearning.base import CostRecord

#: Steps shorter than this are timer noise (``none`` takes microseconds): their
#: wall-clock speed-up is reported as infinite, like their zero steps and bytes.
WALL_RESOLUTION_S = 1e-3


@dataclass
class RoundCost:
    """What one regular round of one arm cost the federation."""

    round: int
    steps: int
    bytes: int
    wall_s: float


def speedup(reference: float, cost: float, resolution: float = 0.0) -> float:
    return float("inf") if cost <= resolution else reference / cost


@dataclass
class CostLedger:
    """Round costs by arm and step costs by (arm, event round)."""

    round_costs: dict[str, list[RoundCost]] = field(default_factory=dict)
    step_costs: dict[tuple[str, int], CostRecord] = field(default_factory=dict)

    def add_round(self, arm: str, rnd: int, outcome: TrainOutcome) -> None:
        self.round_costs.setdefault(arm, []).append(
            RoundCost(rnd, outcome.steps, outcome.bytes_up + outcome.bytes_down, outcome.wall_s))

    def add_step(self, arm: str, rnd: int, cost: CostRecord) -> None:
        total = self.step_costs.setdefault((arm, rnd), CostRecord())
        for key, value in vars(cost).items():
            setattr(total, key, getattr(total, key) + value)

    def retrain_cost(self, last_round: int) -> RoundCost:
        """The retrain arm's cost over rounds 1..last_round."""
        rows = [c for c in self.round_costs.get(RETRAIN, []) if c.round <= last_round]
        return RoundCost(last_round, sum(c.steps for c in rows), sum(c.bytes for c in rows),
                         sum(c.wall_s for c in rows))

    def speedups(self, arm: str, rnd: int) -> dict[str, float]:
        """A method's step at ``rnd`` against retraining to the event."""
        ref = self.retrain_cost(rnd - 1)
        cost = self.step_costs.get((arm, rnd), CostRecord())
        return {
            "speedup_steps": speedup(ref.steps, cost.client_steps),
            "speedup_bytes": speedup(ref.bytes, cost.bytes_up + cost.bytes_down),
            "speedup_wall": speedup(ref.wall_s, cost.wall_s, WALL_RESOLUTION_S),
        }
