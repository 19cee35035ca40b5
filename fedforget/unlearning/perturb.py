"""Weight perturbation for the lightweight perturb-then-fine-tune method.

Pure PyTorch core of Chen, Wang & Huang, "Lightweight machine unlearning in neural
network" (arXiv 2111.05528). Confirmed (abstract only): "a small perturbation of the
weight of the target model", then iterate towards the model of the remaining data.

Our choices where the paper is silent (METHODS.md implementation note 5):

* Gaussian noise, per tensor: ``eps_l ~ N(0, (beta * std(theta_l))^2)`` with the
  (unbiased) standard deviation over that tensor's elements; default ``beta`` lives in
  the config (0.05 suggested).
* Tensors with fewer than 2 elements, zero spread, or a non-floating dtype get no noise
  (a scale-relative noise is undefined for them).
* ``beta = 0`` returns exact copies without touching the random generator, so the
  "no noise" ablation is bit-identical to continued training without the client.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn

from fedforget.unlearning.base import (
    CostRecord,
    Federation,
    MethodParams,
    UnlearningMethod,
    register_method,
)

__all__ = ["noise_scales", "perturb_state"]


def _scale(t: Tensor, beta: float) -> float:
    """Noise standard deviation for one tensor (0.0 means: leave it alone)."""
    if not torch.is_floating_point(t) or t.numel() < 2 or beta == 0:
        return 0.0
    return float(beta * t.detach().float().std())


def noise_scales(params: dict[str, Tensor], beta: float) -> dict[str, float]:
    """Per-tensor noise standard deviations ``beta * std(theta_l)``.

    Parameters
    ----------
    params : dict of str to Tensor
        Parameters (or a state dict).
    beta : float
        Relative noise level, ``>= 0``.

    Returns
    -------
    dict of str to float
        ``{name: sigma}``; 0.0 for tensors that receive no noise.
    """
    if beta < 0:
        raise ValueError("beta must be >= 0")
    return {name: _scale(t, beta) for name, t in params.items()}


def perturb_state(
    params: dict[str, Tensor], beta: float, generator: torch.Generator
) -> dict[str, Tensor]:
    """Return a copy of ``params`` with per-tensor scale-relative Gaussian noise added.

    Parameters
    ----------
    params : dict of str to Tensor
        Parameters (or a state dict); not modified.
    beta : float
        Relative noise level, ``>= 0``; 0 gives exact copies.
    generator : torch.Generator
        Randomness source (CPU generator; noise is moved to each tensor's device).

    Returns
    -------
    dict of str to Tensor
        New, detached tensors with the same keys, shapes and dtypes.
    """
    scales = noise_scales(params, beta)
    out: dict[str, Tensor] = {}
    for name, t in params.items():
        t = t.detach()
        sigma = scales[name]
        if sigma == 0.0:
            out[name] = t.clone()
            continue
        noise = torch.randn(t.shape, generator=generator, device=generator.device)
        out[name] = t + (sigma * noise).to(device=t.device, dtype=t.dtype)
    return out


# ------------------------------------------------------------- the federated method


class PerturbParams(MethodParams):
    beta: float = Field(0.05, ge=0, description="noise std as a fraction of each layer's weight std (0: 'just continue')")
    max_rounds: int = Field(5, ge=0, description="cap on FedAvg rounds over the remaining clients after the perturbation")
    target_auc: float = Field(0.55, ge=0, le=1, description="stop when the withdrawing client's self-check AUC is <= this")


@register_method
class Perturb(UnlearningMethod):
    """Lightweight unlearning: perturb the weights, then iterate toward the
    remaining-data model with FedAvg rounds over the remaining clients until the
    withdrawing client's self-check AUC reaches ``target_auc`` or ``max_rounds``.
    The server never sees remaining data; the withdrawing client is only asked
    for its self-check AUC after each round (stop rule, METHODS note 5)."""

    name = "perturb"
    Params = PerturbParams
    search_space = {"beta": [0.0, 0.02, 0.05, 0.1, 0.2], "max_rounds": [1, 2, 5], "target_auc": [0.55, 0.6]}
    summary = "Per-layer Gaussian weight perturbation, then FedAvg rounds over the remaining clients until a stop rule."
    needs = "remaining clients: ordinary training rounds; withdrawing client: its self-check AUC after each round"
    uses_client_validation = True

    def unlearn(self, model: nn.Module, fed: Federation) -> tuple[nn.Module, CostRecord]:
        p = self.params
        gen = torch.Generator().manual_seed(fed.seed("noise"))
        noisy = perturb_state(dict(model.state_dict()), p.beta, gen)
        model.load_state_dict(noisy)
        aucs = []
        for _ in range(p.max_rounds):
            model = fed.run_rounds(model, 1, "perturb")
            aucs.append(fed.self_check(model))
            if aucs[-1] <= p.target_auc:
                break
        fed.log(method=self.name, rounds=len(aucs), self_check_auc=aucs)
        return model, fed.cost()
