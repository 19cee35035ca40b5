"""Forsaken: mask-gradient unlearning with a learned, coordinate-wise optimizer.

Pure PyTorch core of Ma, Liu, Liu, Liu, Ma & Ren, "Learn to Forget: Machine Unlearning
via Neuron Masking" (arXiv 2003.10933, IEEE TDSC 2022).

Confirmed by the sources (METHODS.md section 1): a trainable "mask / dummy gradient
generator" produces updates that stimulate neurons so that the model forgets the data;
no retraining; in FL the result travels as an ordinary update.

Everything below that is more concrete is *our* design (METHODS.md implementation
notes 3 and 4), because the method section of the paper could not be read:

* Mask neurons: by default the last hidden layer and the classifier (``scope="last2"``);
  a model with a single Linear falls back to the classifier only.
* Forgetting objective: class-conditional ``KL(P_n[c] || mean softmax on forget class c)``
  with ``P_n`` the original model's class-conditional mean softmax on non-member
  reference data (probabilities, not logits); weighted by forget-class counts. Classes
  missing from the reference use the overall mean softmax of the reference set.
* Generator: coordinate-wise MLP (4 -> 32 -> 32, tanh) shared by all masked
  coordinates, input ``[theta_j, g_j / (rms(g)+eps), |theta_j|, g^r_j / (rms(g)+eps)]``
  (``g^r`` the retention gradient, zeros without one), output
  ``m_j = rms(g) * (s_j * g_j / (rms(g)+eps) + r_j)`` with ``s_j = softplus(.)`` started
  at 1 and ``r_j`` started at exactly 0, so the first steps are plain (normalised)
  descent on the KL and the generator learns corrections from there.
* Training of the generator ("learning to learn"): truncated to one step and delayed by
  one call. With ``theta_s = theta_{s-1} - alpha * m_{s-1}(phi)`` kept as a graph, the
  surrogate ``sum_j stopgrad(dKL/dtheta_j + lambda_r dCE/dtheta_j) * theta_s,j(phi) +
  lambda_1 ||m_{s-1}||_1`` has exactly the phi-gradient of
  ``KL(theta_s) + lambda_r CE(theta_s) + lambda_1 ||m_{s-1}||_1``.
  This needs only gradients at the current parameters, which is what the withdrawing
  client can send; it never needs second derivatives of the model.
* Defaults: ``alpha = 0.01``, ``lambda_r = 1``, ``lambda_1 = 1e-4`` (METHODS suggestions);
  generator Adam learning rate ``1e-3`` instead of the third-party ``1e-4``: Adam steps
  are scale-free, so with at most ~200 unlearning steps ``1e-4`` moves each generator
  weight by at most ~0.02 and the generator would stay at its initialisation.
* ``l1_mode="retain_weighted"`` is the third-party form ``lambda_1 * omega * ||m||_1`` with
  ``omega`` the retain loss at the updated parameters; its phi-gradient includes the
  product-rule term through ``omega`` when the retain gradient is given. The additive
  ``lambda_r`` retain term is kept in both modes (set ``lambda_r=0`` for the pure
  third-party objective).
* No acceptance / rollback rule (the third-party code's "keep only improving steps" is
  not reproduced); stopping is by step budget or, in :func:`forsaken_unlearn_local`,
  by the loss-based membership AUC of the withdrawing client's self-check.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from sklearn.metrics import roc_auc_score
from torch import Tensor, nn
from torch.func import functional_call

from fedforget.unlearning.base import (
    ClientData,
    ClientReply,
    CostRecord,
    Federation,
    MethodParams,
    UnlearningMethod,
    register_method,
)

from .fnn import hidden_relu_layers

__all__ = [
    "mask_parameter_names",
    "class_reference_distribution",
    "forgetting_kl",
    "forgetting_gradient",
    "retention_gradient",
    "self_check_auc",
    "CoordinateGenerator",
    "MaskGradientOptimizer",
    "forsaken_unlearn_local",
]

_PROB_FLOOR = 1e-12  # clamp for log of probabilities
_SCOPES = ("classifier", "last2", "all")


# --------------------------------------------------------------------------- masks


def _classifier_index(children: list[tuple[str, nn.Module]]) -> int:
    """Index of the last ``nn.Linear`` child (the logits layer)."""
    idx = [i for i, (_, m) in enumerate(children) if isinstance(m, nn.Linear)]
    if not idx:
        raise ValueError("model has no nn.Linear classifier")
    return idx[-1]


def mask_parameter_names(model: nn.Module, scope: str = "last2") -> list[str]:
    """Names of the parameters the generator may change ("mask neurons").

    Parameters
    ----------
    model : nn.Module
        Flat Sequential model ending in a Linear classifier.
    scope : {"classifier", "last2", "all"}
        ``classifier``: the last Linear. ``last2``: the last hidden layer (the
        Linear/Conv2d feeding the final ReLU before the classifier) plus the classifier;
        falls back to the classifier when there is no hidden layer. ``all``: everything.

    Returns
    -------
    list of str
        Parameter names such as ``["3.weight", "3.bias", "5.weight", "5.bias"]``, in
        ``model.named_parameters()`` order.
    """
    if scope not in _SCOPES:
        raise ValueError(f"unknown mask scope {scope!r}; expected one of {_SCOPES}")
    if scope == "all":
        return [n for n, _ in model.named_parameters()]
    children = list(model.named_children())
    cls_i = _classifier_index(children)
    order = {name: i for i, (name, _) in enumerate(children)}
    modules = [children[cls_i][0]]
    if scope == "last2":
        hidden = [n for n in hidden_relu_layers(model) if order[n] < cls_i]
        if hidden:
            modules.insert(0, hidden[-1])
    wanted = {f"{m}.{p}" for m in modules for p, _ in dict(children)[m].named_parameters()}
    return [n for n, _ in model.named_parameters() if n in wanted]


# ------------------------------------------------------------------ distributions


def _forward(model: nn.Module, x: Tensor, override: dict[str, Tensor] | None = None) -> Tensor:
    """Logits, optionally with parameters substituted (model left untouched)."""
    return model(x) if override is None else functional_call(model, override, (x,))


@torch.no_grad()
def class_reference_distribution(
    model: nn.Module, x_ref: Tensor, y_ref: Tensor, num_classes: int
) -> Tensor:
    """Class-conditional mean softmax ``P_n`` of the model on non-member data.

    Parameters
    ----------
    model : nn.Module
        The model before unlearning.
    x_ref, y_ref : Tensor
        Non-member reference data (never trained on).
    num_classes : int
        Number of classes ``C``.

    Returns
    -------
    Tensor
        ``Tensor[C, C]``; row ``c`` is the mean predicted distribution over reference
        samples of true class ``c``; rows of absent classes are the overall mean.
    """
    if x_ref.shape[0] == 0:
        raise ValueError("reference set is empty")
    probs = F.softmax(model(x_ref).float(), dim=1)
    if probs.shape[1] != num_classes:
        raise ValueError(f"model outputs {probs.shape[1]} classes, expected {num_classes}")
    onehot = F.one_hot(y_ref.long(), num_classes).to(probs.dtype)
    counts = onehot.sum(dim=0)
    sums = onehot.T @ probs
    overall = probs.mean(dim=0, keepdim=True).expand(num_classes, -1)
    present = (counts > 0).unsqueeze(1)
    return torch.where(present, sums / counts.clamp_min(1).unsqueeze(1), overall).clone()


def _kl_from_probs(probs: Tensor, y: Tensor, reference: Tensor) -> Tensor:
    """Count-weighted mean over forget classes of ``KL(reference[c] || mean probs[c])``."""
    num_classes = reference.shape[0]
    onehot = F.one_hot(y.long(), num_classes).to(probs.dtype)
    counts = onehot.sum(dim=0)
    present = counts > 0
    mean_p = (onehot.T @ probs)[present] / counts[present].unsqueeze(1)
    ref = reference.to(probs)[present]
    # xlogy gives 0 for zero reference mass; clamp keeps log finite for vanishing p
    kl_c = (torch.xlogy(ref, ref) - ref * torch.log(mean_p.clamp_min(_PROB_FLOOR))).sum(dim=1)
    w = counts[present]
    return (w * kl_c).sum() / w.sum()


def _kl_per_sample(probs: Tensor, y: Tensor, reference: Tensor) -> Tensor:
    """Mean over forget samples of ``KL(reference[y_i] || p_i)``."""
    ref = reference.to(probs)[y.long()]
    return (torch.xlogy(ref, ref) - ref * torch.log(probs.clamp_min(_PROB_FLOOR))).sum(dim=1).mean()


_OBJECTIVES = {"class_mean": _kl_from_probs, "per_sample": _kl_per_sample}


def _objective(name: str):
    if name not in _OBJECTIVES:
        raise ValueError(f"unknown forgetting objective {name!r}; expected one of {sorted(_OBJECTIVES)}")
    return _OBJECTIVES[name]


def forgetting_kl(
    model: nn.Module, x_forget: Tensor, y_forget: Tensor, reference: Tensor, objective: str = "class_mean"
) -> Tensor:
    """Differentiable forgetting objective on the forget data.

    Parameters
    ----------
    model : nn.Module
        Current model.
    x_forget, y_forget : Tensor
        Forget data (non-empty).
    reference : Tensor
        ``Tensor[C, C]`` from :func:`class_reference_distribution`.
    objective : {"class_mean", "per_sample"}
        ``class_mean``: for each class ``c`` present in the forget data,
        ``KL(reference[c] || mean softmax on forget samples of class c)``, averaged
        with the class counts as weights. ``per_sample``: the mean over forget
        samples of ``KL(reference[y_i] || softmax_i)``: every sample, not only its
        class average, must look like a non-member of its class (a per-sample loss
        attack sees samples, not class means).

    Returns
    -------
    Tensor
        Scalar objective.
    """
    if x_forget.shape[0] == 0:
        raise ValueError("forget set is empty")
    return _objective(objective)(F.softmax(model(x_forget).float(), dim=1), y_forget, reference)


def _masked_override(model: nn.Module, mask_names: list[str]) -> tuple[dict[str, Tensor], list[str]]:
    """Detached parameter copies; only the masked ones require grad (leaves)."""
    params = dict(model.named_parameters())
    missing = [n for n in mask_names if n not in params]
    if missing:
        raise KeyError(f"unknown parameter names {missing}")
    override = {n: p.detach() for n, p in params.items()}
    for n in mask_names:
        override[n] = params[n].detach().clone().requires_grad_(True)
    return override, list(mask_names)


def forgetting_gradient(
    model: nn.Module,
    mask_names: list[str],
    x_forget: Tensor,
    y_forget: Tensor,
    reference: Tensor,
    objective: str = "class_mean",
) -> tuple[dict[str, Tensor], float]:
    """Gradient of :func:`forgetting_kl` w.r.t. the masked parameters only.

    Parameters
    ----------
    model : nn.Module
        Current model (not modified; its ``.grad`` fields are not touched).
    mask_names : list of str
        From :func:`mask_parameter_names`.
    x_forget, y_forget : Tensor
        Forget data.
    reference : Tensor
        ``Tensor[C, C]`` reference distribution.

    Returns
    -------
    tuple of (dict of str to Tensor, float)
        ``{name: dKL/dparam}`` for the masked names and the KL value.
    """
    override, names = _masked_override(model, mask_names)
    probs = F.softmax(_forward(model, x_forget, override).float(), dim=1)
    kl = _objective(objective)(probs, y_forget, reference)
    grads = torch.autograd.grad(kl, [override[n] for n in names])
    return {n: g.detach() for n, g in zip(names, grads)}, float(kl.detach())


def retention_gradient(
    model: nn.Module, mask_names: list[str], x: Tensor, y: Tensor
) -> tuple[dict[str, Tensor], float]:
    """Gradient of mean cross-entropy on retained data w.r.t. the masked parameters.

    Parameters
    ----------
    model : nn.Module
        Current model (not modified).
    mask_names : list of str
        Masked parameter names.
    x, y : Tensor
        Retained data (non-empty).

    Returns
    -------
    tuple of (dict of str to Tensor, float)
        ``{name: dCE/dparam}`` and the loss value.
    """
    override, names = _masked_override(model, mask_names)
    loss = F.cross_entropy(_forward(model, x, override), y)
    grads = torch.autograd.grad(loss, [override[n] for n in names])
    return {n: g.detach() for n, g in zip(names, grads)}, float(loss.detach())


@torch.no_grad()
def self_check_auc(
    model: nn.Module, x_forget: Tensor, y_forget: Tensor, x_validation: Tensor, y_validation: Tensor
) -> float:
    """Loss-based membership AUC of forget data (label 1) vs validation data (label 0).

    The withdrawing client computes and reports this; 0.5 means its data looks like
    unseen data to a population loss attack.

    Parameters
    ----------
    model : nn.Module
        Current model.
    x_forget, y_forget : Tensor
        The client's forget data (members before unlearning).
    x_validation, y_validation : Tensor
        The client's never-trained-on hold-out data.

    Returns
    -------
    float
        ROC AUC with score ``-CE`` per sample.
    """
    if x_forget.shape[0] == 0 or x_validation.shape[0] == 0:
        raise ValueError("self_check_auc needs non-empty forget and hold-out sets")
    s_f = -F.cross_entropy(model(x_forget), y_forget, reduction="none")
    s_h = -F.cross_entropy(model(x_validation), y_validation, reduction="none")
    scores = torch.cat([s_f, s_h]).float().cpu().numpy()
    labels = np.concatenate([np.ones(s_f.numel()), np.zeros(s_h.numel())])
    return float(roc_auc_score(labels, scores))


# ------------------------------------------------------------------ the generator


class CoordinateGenerator(nn.Module):
    """Coordinate-wise learned optimizer producing mask gradients.

    One small MLP is shared by all masked coordinates, so its size does not depend on
    the model (unlike the third-party design over the flattened parameter vector).

    Parameters
    ----------
    hidden : int
        Width of the two tanh hidden layers.
    seed : int
        Seed of the deterministic initialisation (ignored if ``generator`` is given).
    generator : torch.Generator, optional
        Randomness source for the initialisation; the global RNG is never used.
    eps : float
        Stabiliser of the gradient normalisation.
    """

    def __init__(
        self,
        hidden: int = 32,
        seed: int = 0,
        generator: torch.Generator | None = None,
        eps: float = 1e-8,
    ) -> None:
        super().__init__()
        self.eps = eps
        # skip_init: no draws from the global RNG; we initialise from our own generator
        self.body = nn.Sequential(
            nn.utils.skip_init(nn.Linear, 4, hidden),
            nn.Tanh(),
            nn.utils.skip_init(nn.Linear, hidden, hidden),
            nn.Tanh(),
        )
        self.scale_head = nn.utils.skip_init(nn.Linear, hidden, 1)
        self.residual_head = nn.utils.skip_init(nn.Linear, hidden, 1)
        gen = generator if generator is not None else torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for layer in (self.body[0], self.body[2]):
                nn.init.xavier_uniform_(layer.weight, gain=nn.init.calculate_gain("tanh"), generator=gen)
                layer.bias.zero_()
            # s = softplus(b) = 1 at init, with a little weight noise so that the body
            # receives gradient from the first generator update on
            nn.init.normal_(self.scale_head.weight, std=5e-3, generator=gen)
            self.scale_head.bias.fill_(math.log(math.expm1(1.0)))
            # residual exactly 0 at init: the first step is a descent direction for the KL
            self.residual_head.weight.zero_()
            self.residual_head.bias.zero_()

    def features(
        self, theta: Tensor, grad: Tensor, retain: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Per-coordinate features ``[theta, g/(rms(g)+eps), |theta|, g_r/(rms(g)+eps)]``.

        Parameters
        ----------
        theta, grad : Tensor
            Flat masked parameters and forgetting gradient (same length).
        retain : Tensor, optional
            Flat retention gradient; zeros when absent. Scaled by the forgetting
            gradient's rms so both directions are comparable inputs, which lets the
            residual head learn to move along the retention descent direction.

        Returns
        -------
        tuple of Tensor
            ``(features[N, 4], normalised gradient[N], rms(g) scalar)``; all detached.
        """
        theta = theta.detach().flatten()
        grad = grad.detach().flatten()
        rms = grad.pow(2).mean().sqrt()
        g_n = grad / (rms + self.eps)
        r_n = torch.zeros_like(g_n) if retain is None else retain.detach().flatten() / (rms + self.eps)
        return torch.stack([theta, g_n, theta.abs(), r_n], dim=1), g_n, rms

    def forward(self, theta: Tensor, grad: Tensor, retain: Tensor | None = None) -> Tensor:
        """Mask gradient ``m = rms(g) * (s * g/(rms(g)+eps) + r)`` per coordinate.

        Parameters
        ----------
        theta, grad : Tensor
            Flat masked parameters and forgetting gradient.
        retain : Tensor, optional
            Flat retention gradient (an input feature only).

        Returns
        -------
        Tensor
            Flat mask gradient, differentiable w.r.t. the generator parameters.
        """
        feats, g_n, rms = self.features(theta, grad, retain)
        h = self.body(feats)
        s = F.softplus(self.scale_head(h)).squeeze(1)
        r = self.residual_head(h).squeeze(1)
        return rms * (s * g_n + r)


def _flatten(d: dict[str, Tensor], names: list[str], device: torch.device) -> Tensor:
    """Concatenate the named tensors as a flat float32 vector on ``device``."""
    return torch.cat([d[n].detach().reshape(-1).to(device=device, dtype=torch.float32) for n in names])


def _unflatten(flat: Tensor, like: dict[str, Tensor], names: list[str]) -> dict[str, Tensor]:
    """Split a flat vector back into tensors shaped, typed and placed like ``like``."""
    out, pos = {}, 0
    for n in names:
        t = like[n]
        out[n] = flat[pos : pos + t.numel()].reshape(t.shape).to(device=t.device, dtype=t.dtype).clone()
        pos += t.numel()
    return out


class MaskGradientOptimizer:
    """Server-side Forsaken step: generate mask gradients and train the generator.

    Parameters
    ----------
    alpha : float
        Step size: ``theta <- theta - alpha * m``.
    lr : float
        Adam learning rate of the generator (see module docstring for why 1e-3).
    lambda_r : float
        Weight of the retain cross-entropy in the generator objective.
    lambda_1 : float
        Weight of the L1 sparsity penalty on the mask gradient.
    l1_mode : {"additive", "retain_weighted"}
        ``additive``: ``lambda_1 ||m||_1``; ``retain_weighted``: ``lambda_1 * omega *
        ||m||_1`` with ``omega = retain_loss`` (third-party form).
    hidden : int
        Generator width.
    seed : int
        Generator initialisation seed.
    zero_tol : float
        A coordinate counts as "near zero" (not masked in) if
        ``|m_j| < zero_tol * rms(g)``.
    device : str or torch.device
        Where the generator lives.

    Attributes
    ----------
    history : list of dict
        One entry per :meth:`step`: ``step``, ``l1`` (``||m_s||_1``), ``zero_frac``,
        ``step_norm`` (``alpha * ||m_s||_2``), ``generator_loss`` (surrogate value of the
        generator update made in that call, ``None`` on the first call).
    """

    def __init__(
        self,
        *,
        alpha: float = 0.01,
        lr: float = 1e-3,
        lambda_r: float = 1.0,
        lambda_1: float = 1e-4,
        l1_mode: str = "additive",
        hidden: int = 32,
        seed: int = 0,
        zero_tol: float = 1e-2,
        device: str | torch.device = "cpu",
    ) -> None:
        if l1_mode not in ("additive", "retain_weighted"):
            raise ValueError(f"unknown l1_mode {l1_mode!r}")
        self.alpha = alpha
        self.lambda_r = lambda_r
        self.lambda_1 = lambda_1
        self.l1_mode = l1_mode
        self.zero_tol = zero_tol
        self.device = torch.device(device)
        self.generator = CoordinateGenerator(hidden=hidden, seed=seed).to(self.device)
        self.optimizer = torch.optim.Adam(self.generator.parameters(), lr=lr)
        self.history: list[dict] = []
        self._prev_m: Tensor | None = None  # m_{s-1}(phi), graph kept for one call
        self._prev_names: list[str] | None = None

    def reset(self) -> None:
        """Drop the pending graph (next step will not update the generator)."""
        self._prev_m = None
        self._prev_names = None

    def _generator_update(self, g_forget: Tensor, g_retain: Tensor | None, retain_loss: float | None) -> float:
        """Update phi through the previous step; returns the surrogate value."""
        assert self._prev_m is not None
        # theta_s(phi) = theta_{s-1} - alpha * m_{s-1}(phi); theta_{s-1} is a constant for phi
        dtheta = -self.alpha * self._prev_m
        coeff = g_forget if g_retain is None else g_forget + self.lambda_r * g_retain
        loss = (coeff * dtheta).sum()
        l1 = self._prev_m.abs().sum()
        if self.l1_mode == "additive":
            loss = loss + self.lambda_1 * l1
        else:
            if retain_loss is None:
                raise ValueError("l1_mode='retain_weighted' needs retain_loss")
            loss = loss + self.lambda_1 * retain_loss * l1
            if g_retain is not None:
                # product rule: d(omega)/d(phi) = g_retain . d(theta_s)/d(phi)
                loss = loss + self.lambda_1 * l1.detach() * (g_retain * dtheta).sum()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def step(
        self,
        theta: dict[str, Tensor],
        grad_forget: dict[str, Tensor],
        grad_retain: dict[str, Tensor] | None,
        retain_loss: float | None = None,
    ) -> dict[str, Tensor]:
        """One Forsaken step at ``theta_s``.

        First trains the generator through the previous step using the gradients at
        ``theta_s`` (skipped on the first call), then generates ``m_s`` and returns
        ``theta_{s+1} = theta_s - alpha * m_s``.

        Parameters
        ----------
        theta : dict of str to Tensor
            Current masked parameters ``theta_s`` (normally the previous return value).
        grad_forget : dict of str to Tensor
            ``dKL/dtheta`` at ``theta_s`` (same keys as ``theta``).
        grad_retain : dict of str to Tensor, optional
            ``dCE_retain/dtheta`` at ``theta_s``.
        retain_loss : float, optional
            ``CE_retain(theta_s)``; required for ``l1_mode="retain_weighted"``.

        Returns
        -------
        dict of str to Tensor
            New masked parameters, detached, shaped/typed like ``theta``.
        """
        names = list(theta.keys())
        if set(grad_forget) != set(names) or (grad_retain is not None and set(grad_retain) != set(names)):
            raise ValueError("theta and gradient dicts must have the same keys")
        flat_theta = _flatten(theta, names, self.device)
        g_f = _flatten(grad_forget, names, self.device)
        g_r = None if grad_retain is None else _flatten(grad_retain, names, self.device)

        gen_loss = None
        if self._prev_m is not None:
            if self._prev_names != names or self._prev_m.numel() != flat_theta.numel():
                raise ValueError("masked parameters changed between steps; call reset()")
            gen_loss = self._generator_update(g_f, g_r, retain_loss)

        m = self.generator(flat_theta, g_f, g_r)
        self._prev_m, self._prev_names = m, names
        m_d = m.detach()
        rms = g_f.pow(2).mean().sqrt()
        self.history.append(
            {
                "step": len(self.history),
                "l1": float(m_d.abs().sum()),
                "zero_frac": float((m_d.abs() < self.zero_tol * rms).float().mean()),
                "step_norm": float(self.alpha * torch.linalg.vector_norm(m_d)),
                "generator_loss": gen_loss,
            }
        )
        return _unflatten(flat_theta - self.alpha * m_d, theta, names)


# ------------------------------------------------------------ central reference loop


def forsaken_unlearn_local(
    model: nn.Module,
    forget: tuple[Tensor, Tensor],
    nonmember: tuple[Tensor, Tensor],
    retain: tuple[Tensor, Tensor] | None = None,
    *,
    steps: int = 100,
    alpha: float = 0.01,
    scope: str = "last2",
    seed: int = 0,
    lr: float = 1e-3,
    lambda_r: float = 1.0,
    lambda_1: float = 1e-4,
    l1_mode: str = "additive",
    num_classes: int | None = None,
    holdout: tuple[Tensor, Tensor] | None = None,
    target_auc: float | None = None,
    check_every: int = 10,
    objective: str = "class_mean",
) -> tuple[nn.Module, dict]:
    """Run the Forsaken loop centrally (gradients computed locally, no messages).

    Only the masked parameters are written (``no_grad`` ``copy_``); all other
    parameters stay bit-identical.

    Parameters
    ----------
    model : nn.Module
        Trained model, modified in place.
    forget : tuple of Tensor
        ``(x, y)`` data to forget.
    nonmember : tuple of Tensor
        ``(x, y)`` never-trained-on reference data for ``P_n`` (computed once, before
        any change).
    retain : tuple of Tensor, optional
        ``(x, y)`` retained sample for the utility term; omitted -> no retain term.
    steps : int
        Maximum number of generator steps.
    alpha, lr, lambda_r, lambda_1, l1_mode, seed
        See :class:`MaskGradientOptimizer`.
    scope : str
        See :func:`mask_parameter_names`.
    num_classes : int, optional
        Defaults to the classifier's ``out_features``.
    holdout : tuple of Tensor, optional
        ``(x, y)`` client hold-out for :func:`self_check_auc` (every ``check_every``
        steps and at the end).
    target_auc : float, optional
        Stop once the self-check AUC is ``<= target_auc`` (needs ``holdout``).
    check_every : int
        Self-check period in steps.
    objective : {"class_mean", "per_sample"}
        See :func:`forgetting_kl`.

    Returns
    -------
    tuple of (nn.Module, dict)
        The model and ``info``: ``mask_names``, ``kl`` (per step, before the update),
        ``retain_loss`` (per step or empty), ``final_kl``, ``steps_run``,
        ``stopped_early``, ``auc`` (list of ``(step, auc)``), ``history``.
    """
    if target_auc is not None and holdout is None:
        raise ValueError("target_auc needs holdout data")
    children = list(model.named_children())
    if num_classes is None:
        num_classes = children[_classifier_index(children)][1].out_features
    names = mask_parameter_names(model, scope)
    params = dict(model.named_parameters())
    xf, yf = forget
    reference = class_reference_distribution(model, nonmember[0], nonmember[1], num_classes)
    opt = MaskGradientOptimizer(
        alpha=alpha, lr=lr, lambda_r=lambda_r, lambda_1=lambda_1, l1_mode=l1_mode, seed=seed
    )
    kls: list[float] = []
    retain_losses: list[float] = []
    aucs: list[tuple[int, float]] = []
    stopped = False
    done = 0
    for s in range(steps):
        g_f, kl = forgetting_gradient(model, names, xf, yf, reference, objective)
        g_r, r_loss = (None, None) if retain is None else retention_gradient(model, names, *retain)
        kls.append(kl)
        if r_loss is not None:
            retain_losses.append(r_loss)
        theta = {n: params[n].detach().clone() for n in names}
        new = opt.step(theta, g_f, g_r, r_loss)
        with torch.no_grad():
            for n in names:
                params[n].copy_(new[n])
        done = s + 1
        if holdout is not None and done % check_every == 0:
            auc = self_check_auc(model, xf, yf, *holdout)
            aucs.append((done, auc))
            if target_auc is not None and auc <= target_auc:
                stopped = True
                break
    if holdout is not None and (not aucs or aucs[-1][0] != done):
        aucs.append((done, self_check_auc(model, xf, yf, *holdout)))
    with torch.no_grad():
        final_kl = float(forgetting_kl(model, xf, yf, reference, objective))
    info = {
        "mask_names": names,
        "kl": kls,
        "retain_loss": retain_losses,
        "final_kl": final_kl,
        "steps_run": done,
        "stopped_early": stopped,
        "auc": aucs,
        "history": opt.history,
    }
    return model, info


# ------------------------------------------------------------- the federated method
# Server side: the server owns the generator and the mask; each step the
# withdrawing client sends the forgetting gradient of the masked parameters,
# computed on its own data; a few remaining clients send retention gradients.



class ForsakenParams(MethodParams):
    scope: str = Field("last2", description="mask: 'last2' (last hidden layer + classifier), 'classifier' or 'all'")
    steps: int = Field(60, ge=1, description="step budget (one client exchange per step)")
    alpha: float = Field(0.3, gt=0, description="step size: theta <- theta - alpha * m")
    lr: float = Field(1e-3, gt=0, description="generator Adam learning rate")
    lambda_r: float = Field(1.0, ge=0, description="weight of the retention cross-entropy")
    lambda_1: float = Field(1e-4, ge=0, description="weight of the L1 sparsity penalty on the mask gradient")
    l1_mode: str = Field("additive", pattern="^(additive|retain_weighted)$", description="'additive' or the third-party 'retain_weighted'")
    objective: str = Field("class_mean", pattern="^(class_mean|per_sample)$", description="forgetting KL on class means or per sample")
    retain_clients: int = Field(2, ge=0, description="remaining clients asked for retention gradients each step (0: none)")
    retain_samples: int = Field(256, ge=1, description="samples per retention gradient")
    target_auc: float = Field(0.55, ge=0, le=1, description="stop when the client's self-check AUC is <= this")
    check_every: int = Field(5, ge=1, description="self-check period in steps")
    max_accuracy_drop: float = Field(0.05, ge=0, description="stop (undoing the last step) when accuracy on the server validation set drops more")
    hidden: int = Field(32, ge=1, description="generator width")


def _op_reference(model: nn.Module, data: ClientData, arrays: dict, config: dict[str, Any]) -> ClientReply:
    """Client: class-conditional non-member reference from its validation part."""
    if len(data.y_validation) == 0:
        raise ValueError("forsaken needs a validation part on the withdrawing client (data.holdout_fraction > 0 and data.audit_share < 1)")
    ref = class_reference_distribution(model, data.x_validation, data.y_validation, data.num_classes)
    auc = self_check_auc(model, data.x_forget, data.y_forget, data.x_validation, data.y_validation)
    return ClientReply({"reference": ref.cpu().numpy()}, {"auc": auc, "n": float(len(data.y_forget)), "steps": 0.0})


def _op_gradient(model: nn.Module, data: ClientData, arrays: dict, config: dict[str, Any]) -> ClientReply:
    """Client: gradient of the forgetting KL for the masked parameters on its data."""
    names = str(config["mask"]).split(",")
    ref = torch.as_tensor(arrays["reference"])
    grads, kl = forgetting_gradient(model, names, data.x_forget, data.y_forget, ref, str(config["objective"]))
    metrics = {"kl": kl, "steps": float(len(data.y_forget)), "n": float(len(data.y_forget))}
    if bool(config.get("self_check", False)):
        metrics["auc"] = self_check_auc(model, data.x_forget, data.y_forget, data.x_validation, data.y_validation)
    return ClientReply({n: g.cpu().numpy() for n, g in grads.items()}, metrics)


def _op_retain(model: nn.Module, data: ClientData, arrays: dict, config: dict[str, Any]) -> ClientReply:
    """Remaining client: retention (cross-entropy) gradient on a seeded subsample."""
    names = str(config["mask"]).split(",")
    n = min(int(config["samples"]), len(data.y_train))
    idx = torch.randperm(len(data.y_train), generator=torch.Generator().manual_seed(int(config["seed"])))[:n]
    grads, loss = retention_gradient(model, names, data.x_train[idx], data.y_train[idx])
    return ClientReply({k: g.cpu().numpy() for k, g in grads.items()}, {"loss": loss, "steps": float(n), "n": float(n)})


def _weighted_mean(replies: dict[int, ClientReply], names: list[str]) -> tuple[dict[str, Tensor], float]:
    total = sum(r.metrics["n"] for r in replies.values())
    out = {n: sum(torch.as_tensor(r.arrays[n]) * (r.metrics["n"] / total) for r in replies.values()) for n in names}
    return out, total


@register_method
class Forsaken(UnlearningMethod):
    """Forsaken mask-gradient unlearning, server side (METHODS.md §1, notes 3-4).

    Our choices where the paper is silent: the server (not the client) owns the
    generator, so the client only ever sends gradients of the masked parameters;
    the generator is trained by the one-step-delayed chain rule of
    :class:`MaskGradientOptimizer`; retention comes from ``retain_clients``
    remaining clients' cross-entropy gradients (seeded sample each step); the stop
    rule is the withdrawing client's self-check AUC (every ``check_every`` steps),
    the step budget, or an accuracy drop on the server validation set (the offending step is undone).
    """

    name = "forsaken"
    Params = ForsakenParams
    summary = "Server-side mask-gradient unlearning with a learned coordinate-wise generator (Forsaken)."
    needs = (
        "withdrawing client: forgetting-KL gradients of the masked parameters each step, its class "
        "reference distribution and self-check AUC; a few remaining clients: retention gradients"
    )
    client_ops = {"reference": _op_reference, "gradient": _op_gradient, "retain": _op_retain}

    def unlearn(self, model: nn.Module, fed: Federation) -> tuple[nn.Module, CostRecord]:
        p = self.params
        t0 = time.perf_counter()
        names = mask_parameter_names(model, p.scope)
        params = dict(model.named_parameters())
        # The reference distribution is fixed on the model before unlearning.
        refs = {c: fed.ask_client(c, "forsaken.reference", model, None, {}) for c in fed.withdrawing}
        total = sum(r.metrics["n"] for r in refs.values())
        reference = sum(torch.as_tensor(r.arrays["reference"]) * (r.metrics["n"] / total) for r in refs.values())
        auc0 = sum(r.metrics["auc"] * r.metrics["n"] for r in refs.values()) / total
        acc0 = fed.validation_accuracy(model)
        opt = MaskGradientOptimizer(
            alpha=p.alpha, lr=p.lr, lambda_r=p.lambda_r, lambda_1=p.lambda_1, l1_mode=p.l1_mode,
            hidden=p.hidden, seed=fed.seed("generator"),
        )
        cfg = {"mask": ",".join(names), "objective": p.objective}
        stop, auc, steps = "budget", auc0, 0
        for s in range(p.steps):
            check = (s + 1) % p.check_every == 0
            # One exchange per step: the withdrawing clients' forgetting gradients
            # and (seeded sample of) remaining clients' retention gradients.
            requests = [
                (c, "forsaken.gradient", {"reference": reference.numpy()},
                 {**cfg, "self_check": s > 0 and s % p.check_every == 0})
                for c in fed.withdrawing
            ]
            if p.retain_clients and p.lambda_r > 0 and fed.remaining:
                rng = np.random.default_rng(fed.seed("retain", s))
                k = min(p.retain_clients, len(fed.remaining))
                chosen = sorted(rng.choice(fed.remaining, size=k, replace=False).tolist())
                r_cfg = {**cfg, "samples": p.retain_samples, "seed": fed.seed("retain-data", s)}
                requests += [(c, "forsaken.retain", None, r_cfg) for c in chosen]
            replies = fed.ask_batch(requests, model)
            n_w = len(fed.withdrawing)
            g_rep = dict(zip(fed.withdrawing, replies[:n_w], strict=True))
            r_rep = dict(enumerate(replies[n_w:]))
            if "auc" in next(iter(g_rep.values())).metrics:
                auc = sum(r.metrics["auc"] * r.metrics["n"] for r in g_rep.values()) / total
                if auc <= p.target_auc:
                    stop = "target_auc"
                    break
            g_forget, _ = _weighted_mean(g_rep, names)
            g_retain, retain_loss = None, None
            if r_rep:
                g_retain, _ = _weighted_mean(r_rep, names)
                retain_loss = sum(r.metrics["loss"] * r.metrics["n"] for r in r_rep.values()) / sum(
                    r.metrics["n"] for r in r_rep.values()
                )
            theta = {n: params[n].detach().clone() for n in names}
            new = opt.step(theta, g_forget, g_retain, retain_loss)
            with torch.no_grad():
                for n in names:
                    params[n].copy_(new[n])
            steps = s + 1
            if check and acc0 - fed.validation_accuracy(model) > p.max_accuracy_drop:
                with torch.no_grad():
                    for n in names:
                        params[n].copy_(theta[n])
                stop = "accuracy_drop"
                break
        last = opt.history[-1] if opt.history else {}
        fed.log(
            method=self.name, steps=steps, stop=stop, self_check_auc_before=auc0, self_check_auc=auc,
            mask=names, mask_zero_frac=last.get("zero_frac"), wall_s=time.perf_counter() - t0,
        )
        return model, fed.cost()
