"""Local training and evaluation loops, and the weighted mean.

Pure PyTorch: these functions know nothing about Flower. Randomness (data order)
comes from an explicit seed, so the same (scenario seed, round, client) gives the
same local update in every arm and on every engine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import nn
from torch.nn import functional as F

T = TypeVar("T")


@dataclass(frozen=True)
class TrainResult:
    """Outcome of one local training call."""

    num_examples: int
    steps: int  # samples x passes processed
    loss: float  # mean training loss over the last epoch


def weighted_mean(values: Sequence[T], weights: Sequence[float]) -> T:
    """``sum(v * w / total)`` in the given order: tensors, arrays or floats.

    The one weighted mean of the package (FedAvg, a mean of client replies).
    The terms are added in the order given, so the result does not depend on
    the engine that collected them (bit-identical engines).
    """
    total = sum(weights)
    if not values or total == 0:
        raise ValueError("a weighted mean needs at least one value with a positive weight")
    out = None
    for value, weight in zip(values, weights, strict=True):
        term = value * (weight / total)
        out = term if out is None else out + term
    return out


def weighted_mean_state(states: Sequence[Mapping[str, T]], weights: Sequence[float]) -> dict[str, T]:
    """:func:`weighted_mean` of state dicts (or reply arrays), key by key."""
    return {k: weighted_mean([s[k] for s in states], weights) for k in states[0]}


def make_optimizer(model: nn.Module, name: str, lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}")


def train_local(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    optimizer: str = "sgd",
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    seed: int = 0,
    device: torch.device | None = None,
) -> TrainResult:
    """Train ``model`` in place with mini-batch SGD/Adam on (x, y).

    A fresh optimizer per call: FL clients hold no optimizer state between rounds.
    """
    device = device or next(model.parameters()).device
    model.to(device).train()
    opt = make_optimizer(model, optimizer, lr, momentum, weight_decay)
    gen = torch.Generator().manual_seed(seed)
    n = len(y)
    last_loss = float("nan")
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        total, count = 0.0, 0
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            xb, yb = x[idx].to(device), y[idx].to(device)
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            count += len(idx)
        last_loss = total / max(count, 1)
    return TrainResult(num_examples=n, steps=n * epochs, loss=last_loss)


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = [model(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)]
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy; (nan, nan) on empty data."""
    if len(y) == 0:
        return float("nan"), float("nan")
    logits = predict_logits(model, x)
    loss = F.cross_entropy(logits, y).item()
    acc = (logits.argmax(1) == y).float().mean().item()
    return loss, acc


def accuracy_on_labels(model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of samples predicted as the given labels (e.g. planted witness labels)."""
    if len(labels) == 0:
        return float("nan")
    return (predict_logits(model, x).argmax(1) == labels).float().mean().item()
