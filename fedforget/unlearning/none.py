"""``none``: stop sampling the withdrawn client and keep training.

The baseline every method must beat: the client's contribution fades only as
later rounds overwrite it.
"""

from __future__ import annotations

from torch import nn

from fedforget.unlearning.base import (
    CostRecord,
    Federation,
    UnlearningMethod,
    register_method,
)


@register_method
class NoUnlearning(UnlearningMethod):
    name = "none"
    summary = "Stop sampling the withdrawn client; keep training (the baseline)."
    needs = "nothing from anyone"
    search_space = {}  # nothing to tune: one setting

    def unlearn(self, model: nn.Module, fed: Federation) -> tuple[nn.Module, CostRecord]:
        return model, fed.cost()
