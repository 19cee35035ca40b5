"""Forsaken's update generators: how the gradients become a step.

Both produce a unit direction over the masked coordinates from the forgetting
gradient ``g_f``, the retention gradient ``g_r`` (both normalised, so scale-free)
and the masked parameters; the step is ``-step_size * ||theta_M|| * gain * m``.

- ``identity`` (the ablation): ``m = unit(g_f/|g_f| + lambda_r g_r/|g_r|)``, gain 1.
- ``learned``: a coordinate-wise MLP (one small network shared by every masked
  coordinate, the learned-optimiser form) reads per coordinate the two
  normalised gradients, the parameter and a momentum of past directions, and
  outputs three bounded corrections (on the forget term, the retention term and
  the momentum); a learned gain per step index scales the step. Its last layer
  starts at zero, so it starts as ``identity`` with unit gains.

**How the learned generator learns** (our design; the paper's method section
could not be read): before its first use the server builds *proxy forget tasks*
from its own validation set, without any client's raw data: a copy of the global
model is fine-tuned on one half (which it then memorises) while the other half
plays the non-members and the retained data. The generator is meta-trained on
those tasks by unrolling the whole ``steps``-step loop and minimising the mean,
over the unrolled steps, of the forgetting objective plus ``lambda_r`` times the
retention loss, each relative to its value before the first step (truncated first-order: the model gradients at each step are
constants, the path from each step's direction to every later loss is
differentiated). Meta-training is server compute, counted in the step's wall
time; the trained generator is kept by the method object and reused for later
events of the run (the amortisation that makes a learned optimiser pay).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from fedforget.training import train_local
from fedforget.unlearning.forsaken.masks import (
    NeuronMask,
    layer_parameter_names,
    neuron_layers,
    neuron_saliency,
)
from fedforget.unlearning.forsaken.objective import (
    membership_loss,
    validation_confidence,
)

_EPS = 1e-12


def _unit(v: Tensor) -> Tensor:
    return v / v.norm().clamp_min(_EPS)


class IdentityGenerator:
    """``m = unit(g_f/|g_f| + lambda_r g_r/|g_r|)`` with unit gains (the ablation)."""

    name = "identity"

    def __init__(self, lambda_r: float = 1.0) -> None:
        self.lambda_r = lambda_r

    def start(self) -> None:
        """Forget the state of a previous loop."""

    def __call__(self, k: int, g_f: Tensor, g_r: Tensor | None, theta: Tensor) -> tuple[Tensor, Tensor]:
        d = _unit(g_f) + (self.lambda_r * _unit(g_r) if g_r is not None else 0.0)
        return _unit(d), torch.ones(())


class LearnedGenerator(nn.Module):
    """Coordinate-wise learned optimiser (see the module docstring)."""

    name = "learned"

    def __init__(self, lambda_r: float = 1.0, steps: int = 8, *, hidden: int = 16, momentum: float = 0.5,
                 seed: int = 0) -> None:
        super().__init__()
        self.lambda_r, self.momentum = lambda_r, momentum
        g = torch.Generator().manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(4, hidden), nn.Tanh(), nn.Linear(hidden, 3))
        with torch.no_grad():
            for p in self.net[0].parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            self.net[2].weight.zero_()
            self.net[2].bias.zero_()
        self.log_gain = nn.Parameter(torch.zeros(steps))
        self._velocity: Tensor | None = None

    def start(self) -> None:
        self._velocity = None

    def __call__(self, k: int, g_f: Tensor, g_r: Tensor | None, theta: Tensor) -> tuple[Tensor, Tensor]:
        n = g_f.numel() ** 0.5
        u_f = _unit(g_f)
        u_r = _unit(g_r) if g_r is not None else torch.zeros_like(u_f)
        v = self._velocity if self._velocity is not None else torch.zeros_like(u_f)
        rms = theta.detach().pow(2).mean().sqrt().clamp_min(_EPS)
        feats = torch.stack([u_f * n, u_r * n, theta.detach() / rms, v * n], dim=1)
        a, b, c = torch.tanh(self.net(feats)).unbind(dim=1)
        d = _unit((1 + a) * u_f + self.lambda_r * (1 + b) * u_r + c * v)
        self._velocity = self.momentum * v + (1 - self.momentum) * d.detach()
        gain = torch.exp(self.log_gain[min(k, self.log_gain.numel() - 1)].clamp(-1.0, 1.0))
        return d, gain


def proxy_tasks(
    model: nn.Module, x: Tensor, y: Tensor, count: int, seed: int, lr: float, epochs: int = 20, max_size: int = 64
):
    """Proxy forget tasks from the server's validation set: ``(model, forget,
    reference)`` with the model fine-tuned on ``forget`` (a random half, at
    most ``max_size`` samples; the rest of the draw is the reference)."""
    if len(y) < 8:
        raise ValueError(f"the learned generator needs a server validation set of at least 8 samples, got {len(y)}")
    half = min(len(y) // 2, max_size)
    tasks = []
    for t in range(count):
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed + t))
        f, r = perm[:half], perm[half: 2 * half]
        proxy = copy.deepcopy(model)
        train_local(proxy, x[f], y[f], epochs=epochs, batch_size=16, lr=lr, seed=seed + t)
        tasks.append((proxy, (x[f], y[f]), (x[r], y[r])))
    return tasks


def _flat_grad(model, override, names, loss_fn) -> Tensor:
    with torch.enable_grad():  # model gradients are data for the generator, even under no_grad
        leaves = [override[n].detach().requires_grad_(True) for n in names]
        local = {**override, **dict(zip(names, leaves, strict=True))}
        loss = loss_fn(lambda x: functional_call(model, local, (x,)))
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, leaves)])


def unroll(
    gen, model: nn.Module, forget: tuple[Tensor, Tensor], reference: tuple[Tensor, Tensor],
    mask_fraction: float, step_size: float, lambda_r: float, steps: int,
) -> list[Tensor]:
    """Run the loop of :class:`~fedforget.unlearning.forsaken.method.Forsaken`
    centrally on one task (gradients computed here, no messages): the mask from
    the forgetting gradient's saliency, then ``steps`` generator steps. Returns
    the objective after every step (forgetting + ``lambda_r`` retention on
    ``reference``, each relative to its starting value), differentiable w.r.t.
    the generator's parameters."""
    (xf, yf), (xr, yr) = forget, reference
    model.eval()
    layers = neuron_layers(model)
    all_names = layer_parameter_names(model, layers)
    params = dict(model.named_parameters())
    phi_ref = validation_confidence(model, xr, yr)
    forget_loss = lambda f: membership_loss(f(xf), yf, phi_ref)  # noqa: E731
    retain_loss = lambda f: F.cross_entropy(f(xr), yr)  # noqa: E731
    base = {n: p.detach() for n, p in params.items()}
    g_all = _flat_grad(model, base, all_names, forget_loss)
    grads, off = {}, 0
    for n in all_names:
        grads[n] = g_all[off: off + params[n].numel()].view_as(params[n])
        off += params[n].numel()
    mask = NeuronMask.select(neuron_saliency(params, grads, layers), mask_fraction)
    names = mask.parameter_names(model)
    idx = {n: torch.as_tensor(mask.rows[n.rsplit(".", 1)[0]]) for n in names}
    rows = _row_index(model, names, idx)
    theta = torch.cat([base[n][idx[n]].reshape(-1) for n in names])
    radius = step_size * theta.norm()

    def full(flat: Tensor) -> dict[str, Tensor]:
        out, o = dict(base), 0
        for n in names:
            r = base[n][idx[n]]
            out[n] = base[n].index_copy(0, idx[n], flat[o: o + r.numel()].view_as(r))
            o += r.numel()
        return out

    gen.start()
    losses = []
    with torch.no_grad():  # relative objective: forgetting and retention weigh the same whatever their scales
        f0 = forget_loss(lambda x: functional_call(model, base, (x,))).clamp_min(1e-6)
        r0 = retain_loss(lambda x: functional_call(model, base, (x,))).clamp_min(1e-6)
    for k in range(steps):
        cur = full(theta)
        g_f = _flat_grad(model, cur, names, forget_loss)[rows]
        g_r = _flat_grad(model, cur, names, retain_loss)[rows]
        d, gain = gen(k, g_f, g_r, theta)
        theta = theta - radius * gain * d
        nxt = full(theta)
        f = lambda x: functional_call(model, nxt, (x,))  # noqa: E731
        losses.append(forget_loss(f) / f0 + lambda_r * retain_loss(f) / r0)
    gen.start()
    return losses


def meta_train(
    gen: LearnedGenerator, tasks, mask_fraction: float, step_size: float, lambda_r: float,
    steps: int, iterations: int = 30, lr: float = 0.02,
) -> list[float]:
    """Fit ``gen`` on proxy tasks: minimise the mean objective over an unrolled
    ``steps``-step loop (fast progress, not only the end point). Returns the
    meta-loss per iteration."""
    opt = torch.optim.Adam(gen.parameters(), lr=lr)
    history = []
    for it in range(iterations):
        model, forget, reference = tasks[it % len(tasks)]
        loss = torch.stack(unroll(gen, model, forget, reference, mask_fraction, step_size, lambda_r, steps)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    return history


def _row_index(model: nn.Module, names: list[str], idx: dict[str, Tensor]) -> Tensor:
    """Positions of the masked rows inside the concatenated gradients of ``names``."""
    params = dict(model.named_parameters())
    out, off = [], 0
    for n in names:
        p = params[n]
        per_row = p[0].numel()
        rows = idx[n]
        out.append((off + rows.view(-1, 1) * per_row + torch.arange(per_row).view(1, -1)).reshape(-1))
        off += p.numel()
    return torch.cat(out)
