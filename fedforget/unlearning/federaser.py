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

import torch
from torch import Tensor

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
    w = torch.tensor(weights, dtype=torch.float64)
    if bool((w < 0).any()) or float(w.sum()) <= 0:
        raise ValueError("weights must be non-negative with a positive sum")
    w = w / w.sum()
    calibrated = [calibrate_update(o, n) for o, n in zip(old_updates, new_updates)]
    out: dict[str, Tensor] = {}
    for name, first in calibrated[0].items():
        if not torch.is_floating_point(first):
            out[name] = first.clone()
            continue
        acc = torch.zeros_like(first)
        for wk, upd in zip(w.tolist(), calibrated):
            acc = acc + wk * upd[name]
        out[name] = acc
    return out


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
