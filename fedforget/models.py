"""Models: ``logreg``, ``mlp``, ``cnn``, ``lenet``, ``resnet18``, built from the
data's input shape and registered by name in :data:`fedforget.registry.models`.

Every model is an ``nn.Sequential`` whose last child is a Linear classifier
producing logits. Unlearning methods rely on this shape: a *hidden neuron* is
an output unit of a Linear or Conv2d child immediately followed by an
``nn.ReLU`` child (:func:`fedforget.unlearning.fnn.hidden_relu_layers`).

- ``logreg``, ``mlp``, ``cnn`` and ``lenet`` are flat Sequentials of
  Flatten / Linear / Conv2d / ReLU / MaxPool2d: every hidden layer is such a
  neuron layer, so every method applies.
- ``resnet18`` has residual blocks and GroupNorm: its convolutions feed a
  normalisation (which would undo a per-neuron scaling), not a ReLU, so it has
  no hidden neurons in that sense. ``fnn`` (which decays hidden neurons)
  rejects it when the scenario is loaded; Forsaken's masks fall back to the
  classifier's rows (:func:`fedforget.unlearning.forsaken.masks.neuron_layers`);
  methods that treat the weights as one vector (perturb, federaser, pga, none)
  apply unchanged. :func:`has_hidden_relu_neurons` tells which is which.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from fedforget import registry

ModelBuilder = Callable[[tuple[int, ...], int, list[int]], nn.Sequential]


def _image_shape(name: str, input_shape: tuple[int, ...], min_side: int) -> tuple[int, int, int]:
    """``(C, H, W)`` of an image input, or a ValueError naming the model's needs."""
    if len(input_shape) != 3:
        raise ValueError(f"{name} needs image input (C, H, W), got shape {input_shape}")
    c, h, w = input_shape
    if h < min_side or w < min_side:
        raise ValueError(f"{name} needs images of at least {min_side}x{min_side} pixels, got {h}x{w}")
    return c, h, w


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
    c, h, w = _image_shape("cnn", input_shape, 4)
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


@registry.models.register("lenet")
def lenet(input_shape: tuple[int, ...], num_classes: int, hidden: list[int]) -> nn.Sequential:
    """LeNet-5 style: conv 6@5x5, pool, conv 16@5x5, pool, then 120, 84, classes.

    ReLU and 2x2 max-pooling replace LeCun's tanh and average pooling. Both
    convolutions pad by 2 ("same"), so any image of at least 4x4 pixels fits
    (28x28 gives 16x7x7 features, 32x32 16x8x8, 8x8 16x2x2). ``hidden`` is
    ignored: the fully connected widths are LeNet's 120 and 84.
    """
    c, h, w = _image_shape("lenet", input_shape, 4)
    return nn.Sequential(
        nn.Conv2d(c, 6, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * (h // 4) * (w // 4), 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, num_classes),
    )


def _group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups, or gcd(32, channels) where ``channels`` is not a multiple of 32."""
    return nn.GroupNorm(math.gcd(32, channels), channels)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs with GroupNorm, identity or 1x1 shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.norm1 = _group_norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.norm2 = _group_norm(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), _group_norm(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


def _resnet_stem(c: int, h: int, w: int) -> list[nn.Module]:
    """CIFAR stem (3x3 conv, no pooling) up to 64 px, else ImageNet's (7x7/2 conv, 3x3/2 max-pool)."""
    if max(h, w) <= 64:
        return [nn.Conv2d(c, 64, 3, 1, 1, bias=False), _group_norm(64), nn.ReLU()]
    return [nn.Conv2d(c, 64, 7, 2, 3, bias=False), _group_norm(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]


@registry.models.register("resnet18")
def resnet18(input_shape: tuple[int, ...], num_classes: int, hidden: list[int]) -> nn.Sequential:
    """ResNet-18 (basic blocks [2, 2, 2, 2], 64-128-256-512 channels) with GroupNorm.

    A CIFAR-style stem (3x3 conv, stride 1, no max-pool) for inputs up to 64
    pixels, ImageNet's above; global average pooling and one Linear
    classifier. Any number of input channels (1 for MNIST). ``hidden`` is
    ignored. 11.17M parameters on 3x32x32 with 10 classes.

    GroupNorm (32 groups), not BatchNorm: BatchNorm's running mean and variance
    are buffers every client updates from its own data, and FedAvg averages
    them into the global model. They are client state that leaks membership
    and that the "weights only" accounting (what a client sends, what a method
    changes, what the oracle audits) would not see. GroupNorm normalises each
    sample by itself and has no running statistics: the model's state is its
    parameters.
    """
    c, h, w = _image_shape("resnet18", input_shape, 1)
    layers: list[nn.Module] = _resnet_stem(c, h, w)
    c_in = 64
    for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers.append(nn.Sequential(BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1)))
        c_in = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes)]
    return nn.Sequential(*layers)


#: Per model: whether it has hidden ReLU neurons (a Linear/Conv2d child followed by ReLU), given ``hidden``.
_HIDDEN_RELU: dict[str, Callable[[list[int]], bool]] = {
    "logreg": lambda hidden: False,
    "mlp": lambda hidden: bool(hidden),
    "cnn": lambda hidden: True,
    "lenet": lambda hidden: True,
    "resnet18": lambda hidden: False,
}


def has_hidden_relu_neurons(name: str, hidden: list[int]) -> bool | None:
    """Whether built-in model ``name`` has hidden ReLU neurons.

    Parameters
    ----------
    name : str
        A model name (``model.name``).
    hidden : list of int
        ``model.hidden``.

    Returns
    -------
    bool or None
        None for a model this module does not know (a plugin): only building it
        can tell.
    """
    rule = _HIDDEN_RELU.get(name)
    return None if rule is None else rule(list(hidden))


def parameter_count(name: str, input_shape: tuple[int, ...], num_classes: int, hidden: list[int]) -> int:
    """Number of parameters of model ``name`` for that input.

    Built on the meta device (no memory, no initialisation); a builder that
    cannot run there (a plugin doing arithmetic on tensors) is built on the CPU.
    A builder's refusal of the shape (ValueError) propagates.
    """
    builder = registry.models.get(name)
    try:
        with torch.device("meta"):
            model = builder(tuple(input_shape), num_classes, list(hidden))
    except (NotImplementedError, RuntimeError):
        model = builder(tuple(input_shape), num_classes, list(hidden))
    return sum(p.numel() for p in model.parameters())


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
