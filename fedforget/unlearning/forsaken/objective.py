"""Forsaken's objective: remove per-sample membership, keep the task.

Membership shows per sample: a member's logit-scaled confidence
``phi = z_y - logsumexp_{k != y} z_k`` (LiRA's statistic; the loss is
``log(1 + exp(-phi))``, so a loss attack ranks samples by it too) sits above
what non-members of the same distribution get. The forgetting objective moves
each forget sample's ``phi`` to a target drawn from the client's own
**validation** part (never trained on; for a ``delete_class`` event only its
samples of the deleted class, so the target is that class's non-member
confidence, not a mixture of all classes'): the forget samples are ranked by
``phi`` and the ``r``-th of ``n`` gets the ``(r + 0.5) / n`` quantile of the
validation ``phi`` (optimal transport between the two one-dimensional
distributions). The objective is ``mean((phi_i - target_i)^2) / var(phi_val)``,
scale-free. When the two distributions match, a loss or confidence attack is at
chance on the client's data, and class means match as a consequence.

Retention is the cross-entropy of remaining clients' data; its gradient enters
the update itself (see :mod:`.generator`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import Tensor, nn
from torch.func import functional_call


def logit_confidence(logits: Tensor, y: Tensor) -> Tensor:
    """``phi_i = z_{i,y_i} - logsumexp_{k != y_i} z_{i,k}`` (finite for any logits)."""
    z = logits.float()
    zy = z.gather(1, y.long().view(-1, 1)).squeeze(1)
    others = z.scatter(1, y.long().view(-1, 1), float("-inf"))
    return zy - torch.logsumexp(others, dim=1)


def matched_targets(phi: Tensor, phi_reference: Tensor) -> Tensor:
    """Quantile-matched targets: the sample of rank r of n gets the
    ``(r + 0.5) / n`` quantile of ``phi_reference``."""
    ranks = torch.argsort(torch.argsort(phi.detach()))
    q = (ranks.double() + 0.5) / phi.numel()
    return torch.quantile(phi_reference.detach().double(), q).to(phi.dtype)


def membership_loss(logits: Tensor, y: Tensor, phi_reference: Tensor) -> Tensor:
    """``mean((phi - target)^2) / var(phi_reference)`` (see the module docstring)."""
    phi = logit_confidence(logits, y)
    scale = phi_reference.float().var().clamp_min(1e-6)
    return ((phi - matched_targets(phi, phi_reference)) ** 2).mean() / scale


def _grads(model: nn.Module, names: list[str], loss_fn) -> tuple[dict[str, Tensor], Tensor]:
    params = dict(model.named_parameters())
    override = {n: p.detach() for n, p in params.items()}
    for n in names:
        override[n] = params[n].detach().clone().requires_grad_(True)
    loss = loss_fn(lambda x: functional_call(model, override, (x,)))
    grads = torch.autograd.grad(loss, [override[n] for n in names])
    return {n: g.detach() for n, g in zip(names, grads, strict=True)}, loss.detach()


@torch.no_grad()
def validation_confidence(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    model.eval()
    return logit_confidence(model(x), y)


def forgetting_gradient(
    model: nn.Module, names: list[str], x_forget: Tensor, y_forget: Tensor, phi_reference: Tensor
) -> tuple[dict[str, Tensor], float, Tensor]:
    """Gradient of :func:`membership_loss` w.r.t. the named parameters, with
    targets from ``phi_reference`` (the current model's ``phi`` on validation
    data); also the loss and the forget samples' ``phi`` (for the self-check)."""
    if len(y_forget) == 0 or len(phi_reference) < 2:
        raise ValueError("the forgetting objective needs forget data and at least two validation samples")
    model.eval()
    seen = {}

    def loss_fn(f):
        logits = f(x_forget)
        seen["phi"] = logit_confidence(logits, y_forget).detach()
        return membership_loss(logits, y_forget, phi_reference)

    grads, loss = _grads(model, names, loss_fn)
    return grads, float(loss), seen["phi"]


def retention_gradient(model: nn.Module, names: list[str], x: Tensor, y: Tensor) -> tuple[dict[str, Tensor], float]:
    """Gradient of the mean cross-entropy on retained data."""
    model.eval()
    grads, loss = _grads(model, names, lambda f: F.cross_entropy(f(x), y))
    return grads, float(loss)


def membership_auc(phi_forget: Tensor, phi_validation: Tensor) -> tuple[float, float]:
    """The client's own membership check: AUC of ``phi`` on its forget data
    (label 1) against its validation part (label 0), and the AUC's standard
    error under "no membership" for these sizes, ``sqrt((n+m+1) / (12 n m))``:
    chance measured on its own data."""
    n, m = len(phi_forget), len(phi_validation)
    if n == 0 or m == 0:
        raise ValueError("self-check needs forget and validation samples")
    s = torch.cat([phi_forget, phi_validation]).cpu().numpy()
    auc = float(roc_auc_score(np.r_[np.ones(n), np.zeros(m)], s))
    return auc, float(np.sqrt((n + m + 1) / (12 * n * m)))


def class_statistics(phi: Tensor, y: Tensor, num_classes: int) -> dict[str, np.ndarray]:
    """Per class: the mean and variance of ``phi`` and the count (the server's
    reference for :func:`client_level_z`; statistics only travel)."""
    phi, y = phi.detach().double().cpu().numpy(), y.cpu().numpy()
    n = np.bincount(y, minlength=num_classes).astype(np.float64)
    mean = np.bincount(y, weights=phi, minlength=num_classes) / np.maximum(n, 1)
    sq = np.bincount(y, weights=phi ** 2, minlength=num_classes) / np.maximum(n, 1)
    var = np.maximum(sq - mean ** 2, 0.0) * n / np.maximum(n - 1, 1)  # unbiased
    return {"mean": mean, "var": var, "n": n}


def client_level_z(phi_forget: Tensor, y_forget: Tensor, reference: dict[str, np.ndarray]) -> float:
    """How far the forget data's mean ``phi`` sits above the reference's, class
    by class: ``D = sum_c (k_c / k) (mean_c(forget) - mean_c(reference))`` over
    the classes both have (at least two reference samples), divided by its
    standard error ``sqrt(sum_c (k_c / k)^2 (s_c^2 / k_c + r_c^2 / n_c))``.

    One statistic over all of the client's samples against a reference much
    larger than its own validation part: where the per-sample AUC against a
    few validation samples sees chance, a membership the whole client still
    carries shows here (a member's ``phi`` is higher). NaN when no class is shared.
    """
    phi, y = phi_forget.detach().double().cpu().numpy(), y_forget.cpu().numpy()
    classes = [c for c in np.unique(y) if c < len(reference["n"]) and reference["n"][c] >= 2]
    k = sum(int((y == c).sum()) for c in classes)
    if not classes or k == 0:
        return float("nan")
    d, var = 0.0, 0.0
    for c in classes:
        mine = phi[y == c]
        w = len(mine) / k
        d += w * (mine.mean() - reference["mean"][c])
        s2 = mine.var(ddof=1) if len(mine) > 1 else reference["var"][c]
        var += w ** 2 * (s2 / len(mine) + reference["var"][c] / reference["n"][c])
    return float(d / np.sqrt(var)) if var > 0 else float("nan")
