"""``wide_mlp``: a model builder ``(input_shape, num_classes, hidden) -> nn.Sequential``."""

from __future__ import annotations

import math

from torch import nn


def wide_mlp(input_shape: tuple[int, ...], num_classes: int, hidden: list[int]) -> nn.Sequential:
    """One ReLU hidden layer four times as wide as ``hidden[0]`` (default 64), then a linear classifier."""
    width = 4 * (hidden[0] if hidden else 64)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(input_shape), width),
        nn.ReLU(),
        nn.Linear(width, num_classes),
    )
