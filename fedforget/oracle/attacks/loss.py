"""The loss-threshold attack (Yeom et al. 2018)."""

from __future__ import annotations

import numpy as np

from fedforget import registry
from fedforget.oracle.attacks.base import Attack
from fedforget.oracle.features import SampleStats


@registry.attacks.register()
class LossThresholdAttack(Attack):
    """Global loss threshold (Yeom et al. 2018): score = ``-loss``."""

    name = "loss"

    def score(self, stats: SampleStats) -> np.ndarray:
        return -stats.loss
