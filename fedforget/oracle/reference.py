"""Reference training the oracle asks the run for (DESIGN "The oracle").

An attack that needs reference models (LiRA's shadow federations, and any later
attack such as RMIA or U-LiRA) describes them as :class:`ReferenceRun` requests.
The run loop trains each request as an auxiliary federation beside the arms and
hands the trained states back by key; it never knows what they are for, and they
are never arms of the study (no metrics, no report rows).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class ReferenceRun:
    """One federation trained for the oracle.

    Attributes
    ----------
    key : str
        Unique, opaque to the run loop; the attack finds its model by it.
    seed : int
        Seed of its initialisation, client sampling and data order (its own, so
        reference models differ from the study's arms).
    rounds : int
        It trains rounds ``1..rounds`` (the calibration round of its client).
    excluded : frozenset of int
        Clients it never samples.
    train_ids : dict of int to np.ndarray
        Clients whose training data is replaced by these global sample ids
        (auditor-side only: an IN reference model trains on chosen audit samples).
    """

    key: str
    seed: int
    rounds: int
    excluded: frozenset[int] = frozenset()
    train_ids: dict[int, np.ndarray] = field(default_factory=dict)
