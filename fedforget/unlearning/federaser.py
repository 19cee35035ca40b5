"""FedEraser calibration: stored-update magnitude, new-update direction.

Pure PyTorch core of Liu et al., "FedEraser" (IWQoS 2021). Confirmed (METHODS.md 4.1):
the server keeps client updates every ``dt`` rounds; to unlearn, the remaining clients
run short calibration training and each stored update is rescaled as
``U_tilde = ||U_old|| * U_new / ||U_new||``, then FedAvg-aggregated.

Our choices where the paper is silent:

* Norms are taken per tensor (per layer), as in the released FedEraser code.
* A calibration update with zero norm yields a zero calibrated update (no direction).
* Non-floating tensors (e.g. integer buffers) are passed through from the new update.
* Aggregation weights are normalised to sum to 1 (FedAvg sample-count weights).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from fedforget.training import weighted_mean, weighted_mean_state
from fedforget.unlearning.base import (
    CostRecord,
    Federation,
    MethodParams,
    UnlearningMethod,
    register_method,
)

__all__ = ["calibrate_update", "calibrated_aggregate", "storage_bytes"]


def calibrate_update(old_update: dict[str, Tensor], new_update: dict[str, Tensor]) -> dict[str, Tensor]:
    """Per tensor ``||old|| * new / ||new||``.

    Parameters
    ----------
    old_update : dict of str to Tensor
        Update stored during original training (gives the step length).
    new_update : dict of str to Tensor
        Calibration update of the same client (gives the direction).

    Returns
    -------
    dict of str to Tensor
        Calibrated update, keys of ``new_update``; zeros where ``||new|| = 0``.
    """
    if old_update.keys() != new_update.keys():
        raise ValueError("old and new updates must have the same keys")
    out: dict[str, Tensor] = {}
    for name, new in new_update.items():
        new = new.detach()
        if not torch.is_floating_point(new):
            out[name] = new.clone()
            continue
        new_norm = torch.linalg.vector_norm(new)
        if new_norm == 0:
            out[name] = torch.zeros_like(new)
            continue
        old_norm = torch.linalg.vector_norm(old_update[name].detach().to(new.dtype))
        out[name] = new * (old_norm / new_norm)
    return out


def calibrated_aggregate(
    old_updates: list[dict[str, Tensor]],
    new_updates: list[dict[str, Tensor]],
    weights: list[float],
) -> dict[str, Tensor]:
    """Weighted mean of the calibrated updates of the remaining clients.

    Parameters
    ----------
    old_updates, new_updates : list of dict
        Stored and calibration updates, aligned by client.
    weights : list of float
        Non-negative client weights (e.g. sample counts); normalised here.

    Returns
    -------
    dict of str to Tensor
        ``sum_k w_k * calibrate_update(old_k, new_k) / sum_k w_k``.
    """
    if not (len(old_updates) == len(new_updates) == len(weights)) or not weights:
        raise ValueError("need equally many (>= 1) old updates, new updates and weights")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError("weights must be non-negative with a positive sum")
    calibrated = [calibrate_update(o, n) for o, n in zip(old_updates, new_updates, strict=True)]
    return {name: weighted_mean([u[name] for u in calibrated], weights) if torch.is_floating_point(first)
            else first.clone() for name, first in calibrated[0].items()}


def storage_bytes(updates: list[dict[str, Tensor]]) -> int:
    """Bytes needed to store the given updates (server-side FedEraser history cost).

    Parameters
    ----------
    updates : list of dict
        Stored updates.

    Returns
    -------
    int
        ``sum numel * element_size`` over all tensors.
    """
    return int(sum(t.numel() * t.element_size() for u in updates for t in u.values()))


# ------------------------------------------------------------- the federated method


class FedEraserParams(MethodParams):
    interval: int = Field(2, ge=1, description="delta t: the server stores client updates every this many rounds")
    calibration_ratio: float = Field(0.5, gt=0, le=1, description="r: calibration local epochs = r x train.local_epochs")
    first_round: Literal["replay", "calibrate"] = Field(
        "replay", description="replay: the first stored round starts from the same model as in training, so its "
                              "stored updates are applied as they are (the paper's scheme, no client work); "
                              "calibrate: calibration training there too (our earlier scheme)")
    integer_epochs: bool = Field(False, description="round calibration epochs up to a whole number, as the "
                                                    "released code does (the paper: r x E, possibly fractional)")


@register_method
class FedEraser(UnlearningMethod):
    """FedEraser (Liu et al., IWQoS 2021; METHODS §4.1): replay the stored rounds
    from the initial model; in each, the remaining clients that took part train
    ``r x E`` local epochs from the calibrated model, and each stored update keeps
    its norm but takes the new update's direction; their weighted mean is applied.
    """

    name = "federaser"
    Params = FedEraserParams
    search_space = {"calibration_ratio": [0.1, 0.2, 0.5, 1.0], "first_round": ["replay", "calibrate"],
                    "interval": [2, 4]}
    summary = "Calibrated replay of stored client updates (every interval rounds) without the withdrawn client."
    needs = "server: stored client updates every `interval` rounds; remaining clients: short calibration training"

    def history_rounds(self, rounds: int, event_rounds: list[int]) -> list[int]:
        return [r for r in range(1, rounds + 1) if (r - 1) % self.params.interval == 0]

    def unlearn(self, model: nn.Module, fed: Federation) -> tuple[nn.Module, CostRecord]:
        p = self.params
        entries = [e for e in fed.history() if e.round < fed.round]
        if not entries:
            raise ValueError("federaser: no stored rounds before the withdrawal (event at round 1?)")
        storage = sum(storage_bytes([e.global_state, *e.client_states.values()]) for e in entries)
        calibrated = {k: v.clone() for k, v in entries[0].global_state.items()}
        epochs = p.calibration_ratio * fed.local_epochs
        epochs = float(math.ceil(epochs)) if p.integer_epochs else epochs
        replayed = 0
        for i, e in enumerate(entries):
            clients = sorted(c for c in e.client_states if c in fed.remaining)
            if not clients:
                continue
            old = [{k: e.client_states[c][k] - e.global_state[k] for k in calibrated} for c in clients]
            weights = [float(e.num_examples[c]) for c in clients]
            if i == 0 and p.first_round == "replay":
                # Same starting model as in training: the stored updates are exact, nothing to calibrate.
                step = weighted_mean_state(old, weights)
            else:
                start = fed.build_model()
                start.load_state_dict(calibrated)
                new_states, _ = fed.train_remaining(start, f"federaser-r{e.round}", epochs=epochs, clients=clients)
                new = [{k: new_states[c][k] - calibrated[k] for k in calibrated} for c in clients]
                step = calibrated_aggregate(old, new, weights)
            calibrated = {k: calibrated[k] + step[k] for k in calibrated}
            replayed += 1
        model.load_state_dict(calibrated)
        cost = fed.cost()
        cost.server_storage_bytes = storage
        fed.log(method=self.name, replayed_rounds=replayed, stored_rounds=len(entries), storage_bytes=storage)
        return model, cost
