"""Models: ``logreg``, ``mlp``, ``cnn``, built from the data's input shape and
registered by name in :data:`fedforget.registry.models`.

Every model is an ``nn.Sequential`` of Flatten / Linear / Conv2d / ReLU / MaxPool2d
whose last layer is a Linear classifier producing logits. Unlearning methods rely
on this shape: hidden neurons are a Linear or Conv2d immediately followed by ReLU.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from fedforget import registry

ModelBuilder = Callable[[tuple[int, ...], int, list[int]], nn.Sequential]


@registry.models.register("logreg")
def logreg(input_shape: tuple[int, ...], num_classes: int, hidden: list[int]) -> nn.Sequential:
    """Multinomial logistic regression (``hidden`` is ignored)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes))


@registry.models.register("mlp")
def mlp(input_shape: tuple[int, ...], num_classes: int, hidden: list[int]) -> nn.Sequential:
    """Fully connected ReLU network with the given hidden widths."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


@registry.models.register("cnn")
def cnn(input_shape: tuple[int, ...], num_classes: int, hidden: list[int]) -> nn.Sequential:
    """Two 3x3 conv blocks (16, 32 channels, 2x2 max-pool each) and a ReLU head.

    ``hidden`` gives the widths of the fully connected layers after the convs.
    """
    if len(input_shape) != 3:
        raise ValueError(f"cnn needs image input (C, H, W), got shape {input_shape}")
    c, h, w = input_shape
    layers: list[nn.Module] = [
        nn.Conv2d(c, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
    ]
    width = 32 * (h // 4) * (w // 4)
    for hd in hidden:
        layers += [nn.Linear(width, hd), nn.ReLU()]
        width = hd
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def build_model(
    name: str, input_shape: tuple[int, ...], num_classes: int, hidden: list[int], seed: int
) -> nn.Sequential:
    """Build a registered model with a seeded initialisation."""
    builder = registry.models.get(name)
    with torch.random.fork_rng(devices=[]):
        # The CPU generator only (modules initialise on the CPU): the same values
        # as torch.manual_seed, without its lazy seeding of CUDA/XPU/MTIA, which
        # costs ~1.5 ms per call (a ClientApp builds a model per message).
        torch.default_generator.manual_seed(seed)
        return builder(tuple(input_shape), num_classes, list(hidden))


def get_device(preference: str = "auto") -> torch.device:
    """CUDA when present (or asked for), else CPU."""
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("runtime.device = 'cuda' but CUDA is not available")
        return torch.device("cuda")
    return torch.device("cpu")
