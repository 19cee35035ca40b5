"""Forgetting neural networks (FNN): per-neuron exponential decay baked into weights.

Pure PyTorch core of the FNN unlearning method (Hatua et al., arXiv 2410.22374, after
Cano-Cordoba et al., CBMM Memo 071). A forgetting neuron outputs
``h_i = phi_i * relu(z_i)`` with ``phi_i = exp(-dt / tau_i)`` (Ebbinghaus retention).

Confirmed by the sources (METHODS.md section 3): multiplicative per-neuron decay factors,
variants with fixed / varying / activation-rank-based forgetting rates.

Our choices where the paper could not be read (METHODS.md implementation note 6):

* The decay is *baked* into the incoming weights and bias of a hidden ReLU neuron
  instead of adding a new layer type. Because ``relu(phi * z) = phi * relu(z)`` for
  ``phi > 0`` this is exact, keeps the architecture standard and survives FedAvg.
* Per-channel decay for Conv2d layers (one factor per output channel).
* Rank variant: neurons ranked by mean post-ReLU activation on the forget data; the
  most active gets ``tau_min`` (forgets fastest), the least active ``tau_max``, linear
  in rank, ties broken stably by neuron index.
* VFR draws ``tau_i ~ U[tau_min, tau_max]``. Defaults ``tau=10``, ``tau_min=1``,
  ``tau_max=20``, ``dt=1``.
* In FL the withdrawing client sends only :func:`neuron_mean_activations`.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import Tensor, nn

from fedforget.training import weighted_mean_state
from fedforget.unlearning.base import (
    ClientData,
    ClientReply,
    CostRecord,
    Federation,
    MethodParams,
    UnlearningMethod,
    register_method,
)

__all__ = [
    "hidden_relu_layers",
    "neuron_mean_activations",
    "forgetting_taus",
    "forgetting_factors",
    "bake_decay",
]

_WEIGHTED = (nn.Linear, nn.Conv2d)


def hidden_relu_layers(model: nn.Module) -> list[str]:
    """Names of the Linear/Conv2d children immediately followed by ``nn.ReLU``.

    Parameters
    ----------
    model : nn.Module
        A flat ``nn.Sequential`` (as built by the project's model registry).

    Returns
    -------
    list of str
        Child-module names (e.g. ``["1", "3"]``) in forward order.
    """
    children = list(model.named_children())
    return [
        name
        for (name, module), (_, nxt) in zip(children[:-1], children[1:])
        if isinstance(module, _WEIGHTED) and isinstance(nxt, nn.ReLU)
    ]


def _neuron_means(output: Tensor) -> tuple[Tensor, int]:
    """Sum over batch (and space) of post-ReLU outputs, plus the number of terms."""
    act = torch.relu(output)
    if act.dim() == 2:  # Linear: [B, n]
        return act.sum(dim=0), act.shape[0]
    # Conv2d: [B, C, H, W] -> per channel, averaged over batch and space
    return act.sum(dim=(0, 2, 3)), act.shape[0] * act.shape[2] * act.shape[3]


@torch.no_grad()
def neuron_mean_activations(
    model: nn.Module, x: Tensor, layer_names: list[str], batch_size: int = 1024
) -> dict[str, Tensor]:
    """Per-neuron mean post-ReLU activation of the given layers on ``x``.

    This vector is the only thing the withdrawing client sends for the rank variant.

    Parameters
    ----------
    model : nn.Module
        The flat Sequential model.
    x : Tensor
        Input batch (e.g. the forget data), ``x.shape[0] >= 1``.
    layer_names : list of str
        Names from :func:`hidden_relu_layers`.
    batch_size : int
        Forward-pass chunk size (memory only; result is independent of it).

    Returns
    -------
    dict of str to Tensor
        ``{name: Tensor[n_out]}``; per output channel for Conv2d (mean over batch and
        spatial positions).
    """
    if x.shape[0] == 0:
        raise ValueError("neuron_mean_activations needs at least one sample")
    modules = dict(model.named_children())
    sums: dict[str, Tensor] = {}
    counts: dict[str, int] = {n: 0 for n in layer_names}

    def make_hook(name: str):
        def hook(_module: nn.Module, _inp: tuple[Tensor, ...], out: Tensor) -> None:
            s, c = _neuron_means(out.detach())
            sums[name] = sums[name] + s if name in sums else s
            counts[name] += c

        return hook

    handles = []
    for name in layer_names:
        if name not in modules or not isinstance(modules[name], _WEIGHTED):
            raise ValueError(f"layer {name!r} is not a Linear/Conv2d child of the model")
        handles.append(modules[name].register_forward_hook(make_hook(name)))
    try:
        for start in range(0, x.shape[0], batch_size):
            model(x[start : start + batch_size])
    finally:
        for h in handles:
            h.remove()
    return {n: sums[n] / counts[n] for n in layer_names}


def forgetting_taus(
    variant: str,
    n: int,
    *,
    tau: float = 10.0,
    tau_min: float = 1.0,
    tau_max: float = 20.0,
    activations: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Per-neuron forgetting time constants ("memory strengths") for one layer.

    Parameters
    ----------
    variant : {"ffr", "vfr", "rank"}
        ``ffr``: every neuron gets ``tau``. ``vfr``: ``tau_i ~ U[tau_min, tau_max]``.
        ``rank``: most active neuron ``tau_min``, least active ``tau_max``, linear in
        rank (stable tie-breaking by index).
    n : int
        Number of neurons (output features / channels).
    tau, tau_min, tau_max : float
        Time constants, all > 0 and ``tau_min <= tau_max``.
    activations : Tensor, optional
        ``Tensor[n]`` mean activations; required for ``rank``.
    generator : torch.Generator, optional
        Randomness source for ``vfr``.

    Returns
    -------
    Tensor
        ``Tensor[n]`` of float32 time constants.
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    if tau <= 0 or tau_min <= 0 or tau_max < tau_min:
        raise ValueError("need tau > 0, tau_min > 0 and tau_min <= tau_max")
    v = variant.lower()
    if v == "ffr":
        return torch.full((n,), float(tau))
    if v == "vfr":
        return tau_min + (tau_max - tau_min) * torch.rand(n, generator=generator)
    if v == "rank":
        if activations is None or activations.numel() != n:
            raise ValueError("rank variant needs activations with n elements")
        # stable descending sort: equal activations keep index order
        order = torch.sort(activations.detach().flatten().cpu().float(), descending=True, stable=True).indices
        ranks = torch.empty(n, dtype=torch.float32)
        ranks[order] = torch.arange(n, dtype=torch.float32)
        frac = ranks / (n - 1) if n > 1 else torch.zeros(n)
        return tau_min + (tau_max - tau_min) * frac
    raise ValueError(f"unknown FNN variant {variant!r}; expected 'ffr', 'vfr' or 'rank'")


def forgetting_factors(taus: Tensor, dt: float = 1.0) -> Tensor:
    """Ebbinghaus retention factors ``phi = exp(-dt / tau)`` (in (0, 1] for dt >= 0).

    Parameters
    ----------
    taus : Tensor
        Positive time constants.
    dt : float
        Forgetting time applied in this step.

    Returns
    -------
    Tensor
        Factors with the shape of ``taus``.
    """
    if bool((taus <= 0).any()):
        raise ValueError("taus must be > 0")
    return torch.exp(-dt / taus)


@torch.no_grad()
def bake_decay(model: nn.Module, layer_name: str, phi: Tensor) -> None:
    """Multiply a hidden ReLU layer's incoming weights and bias by ``phi`` in place.

    Exact equivalent of scaling that layer's post-ReLU activations by ``phi`` because
    ``relu(phi * z) = phi * relu(z)`` for ``phi > 0``.

    Parameters
    ----------
    model : nn.Module
        The flat Sequential model (modified in place).
    layer_name : str
        A name from :func:`hidden_relu_layers`.
    phi : Tensor
        ``Tensor[n_out]`` positive factors (one per output neuron / channel).
    """
    if layer_name not in hidden_relu_layers(model):
        raise ValueError(f"layer {layer_name!r} is not a Linear/Conv2d followed by ReLU")
    layer = dict(model.named_children())[layer_name]
    w = layer.weight
    if phi.numel() != w.shape[0]:
        raise ValueError(f"phi has {phi.numel()} elements, layer has {w.shape[0]} outputs")
    if bool((phi <= 0).any()):
        # exactness of the baking relies on phi > 0
        raise ValueError("phi must be > 0")
    phi = phi.to(device=w.device, dtype=w.dtype).flatten()
    w.mul_(phi.view(-1, *([1] * (w.dim() - 1))))
    if layer.bias is not None:
        layer.bias.mul_(phi)


# ------------------------------------------------------------- the federated method


class FNNParams(MethodParams):
    variant: str = Field("rank", pattern="^(ffr|vfr|rank)$", description="'ffr' fixed, 'vfr' varying, 'rank' activation-ranked rates")
    tau: float = Field(10.0, gt=0, description="memory strength of every neuron (ffr)")
    tau_min: float = Field(1.0, gt=0, description="fastest forgetting (vfr, rank: the most active neuron)")
    tau_max: float = Field(20.0, gt=0, description="slowest forgetting (vfr, rank: the least active neuron)")
    dt: float = Field(1.0, gt=0, description="forgetting time per unlearn step: phi = exp(-dt/tau)")
    layers: int = Field(1, ge=1, description="how many of the last hidden ReLU layers forget")
    iterations: int = Field(5, ge=1, description="K: (decay, learn round) iterations at most")
    target_auc: float = Field(0.55, ge=0, le=1, description="stop when the withdrawing client's self-check AUC is <= this")


def _op_activations(model: nn.Module, data: ClientData, arrays: dict, config: dict[str, Any]) -> ClientReply:
    """Client: per-neuron mean activations on its data (nothing else leaves)."""
    names = [str(n) for n in config["layers"]]
    acts = neuron_mean_activations(model, data.x_forget, names)
    return ClientReply({k: v.cpu().numpy() for k, v in acts.items()}, {"n": float(len(data.y_forget)), "steps": 0.0})


@register_method
class FNN(UnlearningMethod):
    """Forgetting neural networks: decay phi = exp(-dt/tau) baked into the incoming
    weights and biases of the last hidden ReLU layer(s), alternated with learn
    rounds (one FedAvg round over the remaining clients each), K times at most,
    stopping early when the withdrawing client's self-check AUC is at target."""

    name = "fnn"
    Params = FNNParams
    search_space = {"variant": ["ffr", "vfr", "rank"], "iterations": [1, 2, 5], "dt": [0.5, 1.0, 2.0]}
    summary = "Forgetting neural networks: per-neuron decay (ffr/vfr/activation-rank) alternated with learn rounds."
    needs = "withdrawing client: per-neuron mean activations (rank variant) and self-check AUCs; remaining clients: learn rounds"
    uses_client_validation = True
    client_ops = {"activations": _op_activations}


    @classmethod
    def check_scenario(cls, scenario, params) -> None:
        super().check_scenario(scenario, params)
        from fedforget.models import has_hidden_relu_neurons

        m = scenario.model
        if has_hidden_relu_neurons(m.name, m.hidden) is False:
            raise ValueError(f"fnn prunes hidden ReLU neurons (a Linear/Conv2d followed by ReLU); "
                             f"model.name = {m.name!r} with model.hidden = {m.hidden} has none")

    def unlearn(self, model: nn.Module, fed: Federation) -> tuple[nn.Module, CostRecord]:
        p = self.params
        layers = hidden_relu_layers(model)[-p.layers :]
        if not layers:
            raise ValueError("fnn needs a model with hidden ReLU layers (not logreg)")
        modules = dict(model.named_children())
        widths = {name: modules[name].weight.shape[0] for name in layers}
        acts: dict[str, torch.Tensor] = {}
        if p.variant == "rank":
            replies = {c: fed.ask_client(c, "fnn.activations", model, None, {"layers": list(layers)}) for c in fed.withdrawing}
            acts = weighted_mean_state([{k: torch.as_tensor(r.arrays[k]) for k in layers} for r in replies.values()],
                                       [r.metrics["n"] for r in replies.values()])
        gen = torch.Generator().manual_seed(fed.seed("taus"))
        phis = {
            name: forgetting_factors(
                forgetting_taus(
                    p.variant, widths[name], tau=p.tau, tau_min=p.tau_min, tau_max=p.tau_max,
                    activations=acts.get(name), generator=gen,
                ),
                p.dt,
            )
            for name in layers
        }
        aucs = []
        for _ in range(p.iterations):
            for name in layers:
                bake_decay(model, name, phis[name])
            model = fed.run_rounds(model, 1, "fnn-learn")
            aucs.append(fed.self_check(model))
            if aucs[-1] <= p.target_auc:
                break
        fed.log(
            method=self.name, variant=p.variant, layers=layers, iterations=len(aucs), self_check_auc=aucs,
            phi_min=float(min(v.min() for v in phis.values())),
        )
        return model, fed.cost()
