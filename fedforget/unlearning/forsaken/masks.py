"""Forsaken's masks: a sparse set of neurons that carry the forget data.

A neuron is a unit of a Linear layer or a channel of a Conv2d layer that feeds a
ReLU (every hidden layer of the project's models; the classifier when a model
has no hidden layer). A mask selects, per layer, the ``mask_fraction`` of its
neurons with the highest saliency, and only their incoming weights and biases
change. Saliency is the first-order (Taylor) estimate of how much a neuron's
incoming parameters move the forgetting objective, ``sum |theta * dL/dtheta|``
over them; the withdrawing client computes it on its own data and sends one
number per neuron. ``mask_fraction = 1`` is the "all weights" ablation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from fedforget.unlearning.fnn import hidden_relu_layers


def neuron_layers(model: nn.Module) -> list[str]:
    """Child-module names whose output units a mask may select."""
    hidden = hidden_relu_layers(model)
    if hidden:
        return hidden
    linear = [n for n, m in model.named_children() if isinstance(m, nn.Linear)]
    if not linear:
        raise ValueError("model has no Linear or Conv2d layer to mask")
    return linear[-1:]


def layer_parameter_names(model: nn.Module, layers: list[str]) -> list[str]:
    """``<layer>.weight`` and ``<layer>.bias`` of the given layers, in model order."""
    wanted = {f"{layer}.{p}" for layer in layers for p in ("weight", "bias")}
    return [n for n, _ in model.named_parameters() if n in wanted]


def neuron_saliency(params: dict[str, Tensor], grads: dict[str, Tensor], layers: list[str]) -> dict[str, Tensor]:
    """Per layer, ``sum |theta * g|`` over each output unit's incoming parameters."""
    out = {}
    for layer in layers:
        w, g = params[f"{layer}.weight"], grads[f"{layer}.weight"]
        s = (w * g).abs().reshape(w.shape[0], -1).sum(dim=1)
        if f"{layer}.bias" in grads:
            s = s + (params[f"{layer}.bias"] * grads[f"{layer}.bias"]).abs()
        out[layer] = s.detach()
    return out


@dataclass(frozen=True)
class NeuronMask:
    """Selected output units per layer (sorted indices)."""

    rows: dict[str, np.ndarray]

    @classmethod
    def select(cls, saliency: dict[str, Tensor], fraction: float) -> NeuronMask:
        """The top ``ceil(fraction * units)`` neurons of every layer (at least one)."""
        if not 0 < fraction <= 1:
            raise ValueError(f"mask_fraction must be in (0, 1], got {fraction}")
        rows = {}
        for layer, s in saliency.items():
            k = max(1, math.ceil(fraction * s.numel()))
            rows[layer] = np.sort(torch.topk(s, k).indices.cpu().numpy()).astype(np.int64)
        return cls(rows)

    def parameter_names(self, model: nn.Module) -> list[str]:
        return layer_parameter_names(model, list(self.rows))

    def gather(self, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
        """The masked rows of each of the layers' tensors (what a client sends)."""
        return {n: t[torch.as_tensor(self.rows[n.rsplit(".", 1)[0]])] for n, t in tensors.items()}

    def scatter_add_(self, model: nn.Module, deltas: dict[str, Tensor]) -> None:
        """Add row deltas (as from :meth:`gather`) to the model's parameters in place."""
        params = dict(model.named_parameters())
        with torch.no_grad():
            for n, d in deltas.items():
                idx = torch.as_tensor(self.rows[n.rsplit(".", 1)[0]], device=params[n].device)
                params[n].index_add_(0, idx, d.to(params[n]))

    def changed_fraction(self, model: nn.Module) -> float:
        """Share of all the model's parameters the mask lets change."""
        params = dict(model.named_parameters())
        changed = sum(params[n][0].numel() * len(self.rows[n.rsplit(".", 1)[0]]) for n in self.parameter_names(model))
        return changed / sum(p.numel() for p in model.parameters())

    def as_arrays(self) -> dict[str, np.ndarray]:
        return {f"rows/{layer}": r for layer, r in self.rows.items()}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> NeuronMask:
        return cls({k.split("/", 1)[1]: np.asarray(v, dtype=np.int64) for k, v in arrays.items() if k.startswith("rows/")})
