"""Projected gradient ascent (PGA) client removal of Halimi et al.

Pure PyTorch core of Halimi, Kadhe, Rawat & Baracaldo, "Federated Unlearning: How to
Efficiently Erase a Client in FL?" (arXiv 2207.05521). Confirmed (METHODS.md 4.2): the
withdrawing client maximises its local loss by projected gradient ascent inside an L2
ball of radius ``delta`` around a reference model, the average of the other clients'
models ``w_ref = (N * w_global - w_client) / (N - 1)``, and stops early once validation
accuracy falls below ``tau``; a few FL rounds without it follow (not in this module).

The defaults follow the authors' released notebook where the paper is silent:
SGD ascent with momentum 0.9 and gradient-norm clipping at 5 on mean cross-entropy,
starting at the reference model; a radius from squared distances (``delta**2 =
radius_fraction * d**2``, ``d`` the distance from a random model to the reference);
and, as an option (``distance_stop``), the notebook's stop once the squared
distance to the withdrawing client's own last model exceeds an absolute bound.
The default stop is the paper's early stop on validation accuracy, read relative
to the reference model's accuracy. Our earlier scheme (plain SGD, ``delta = d / 3`` on the
plain norm, an absolute accuracy floor) stays available through the parameters.

Our choices where the paper is silent:

* Projection onto the ball after *every* step, with the ball taken over the flattened
  concatenation of all parameters.
* The stop tests run after every step; the model that crossed a threshold is kept
  (no rollback). Default validation data is the ascent data itself.
* Mini-batch order comes from a ``torch.Generator`` seeded with ``seed``.
* Only the model's parameters are taken from the reference; buffers are untouched.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
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

__all__ = ["project_to_l2_ball", "projected_gradient_ascent", "reference_model"]


def reference_model(
    global_params: dict[str, Tensor], client_params: dict[str, Tensor], num_clients: int
) -> dict[str, Tensor]:
    """Average of the other clients' models, computed locally by the withdrawing client.

    Parameters
    ----------
    global_params : dict of str to Tensor
        Last global model (the FedAvg mean of all ``num_clients`` client models).
    client_params : dict of str to Tensor
        The withdrawing client's own last local model.
    num_clients : int
        ``N`` clients in the last aggregation; must be ``>= 2``.

    Returns
    -------
    dict of str to Tensor
        ``(N * w_global - w_client) / (N - 1)``; non-floating tensors copied from global.
    """
    if num_clients < 2:
        raise ValueError("reference_model needs num_clients >= 2")
    if global_params.keys() != client_params.keys():
        raise ValueError("global and client parameters must have the same keys")
    out: dict[str, Tensor] = {}
    for name, g in global_params.items():
        g = g.detach()
        if not torch.is_floating_point(g):
            out[name] = g.clone()
            continue
        c = client_params[name].detach().to(g.dtype)
        out[name] = (num_clients * g - c) / (num_clients - 1)
    return out


def _flat_distance(params: dict[str, Tensor], center: dict[str, Tensor]) -> Tensor:
    """L2 norm of the concatenated difference ``params - center``."""
    sq = sum(((params[k].detach().double() - center[k].detach().double()) ** 2).sum() for k in center)
    return torch.sqrt(torch.as_tensor(sq, dtype=torch.float64))


def project_to_l2_ball(
    params: dict[str, Tensor], center: dict[str, Tensor], radius: float
) -> dict[str, Tensor]:
    """Euclidean projection onto ``{w : ||w - center||_2 <= radius}``.

    Parameters
    ----------
    params, center : dict of str to Tensor
        Same keys; the norm is over the flattened concatenation of all tensors.
    radius : float
        Ball radius, ``>= 0``.

    Returns
    -------
    dict of str to Tensor
        New tensors: exact copies if inside, else ``center + radius * d / ||d||``.
    """
    if radius < 0:
        raise ValueError("radius must be >= 0")
    if params.keys() != center.keys():
        raise ValueError("params and center must have the same keys")
    dist = float(_flat_distance(params, center))
    if dist <= radius:
        return {k: v.detach().clone() for k, v in params.items()}
    scale = radius / dist
    return {
        k: (center[k].detach() + scale * (params[k].detach() - center[k].detach())).to(params[k].dtype)
        for k in params
    }


@torch.no_grad()
def _loss_acc(model: nn.Module, x: Tensor, y: Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on ``(x, y)``."""
    logits = model(x)
    return float(F.cross_entropy(logits, y)), float((logits.argmax(dim=1) == y).float().mean())


def _projected_ascent_step(model, opt, params, center, radius, xb, yb, clip: float = 0.0) -> tuple[float, float]:
    """One ascent step (gradient norm clipped to ``clip`` when > 0), then the
    projection back into the ball; returns the distances to the centre before
    and after the projection."""
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(xb), yb).backward()
    if clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    with torch.no_grad():
        current = {k: p.detach() for k, p in params.items()}
        before = float(_flat_distance(current, center))
        projected = project_to_l2_ball(current, center, radius)
        after = float(_flat_distance(projected, center))
        for k, p in params.items():
            p.copy_(projected[k])
    return before, after


def projected_gradient_ascent(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    reference: dict[str, Tensor],
    *,
    radius: float,
    lr: float,
    epochs: int,
    batch_size: int,
    seed: int,
    min_accuracy: float | None = None,
    x_val: Tensor | None = None,
    y_val: Tensor | None = None,
    momentum: float = 0.0,
    clip_grad_norm: float = 0.0,
    away_from: dict[str, Tensor] | None = None,
    distance_stop: float | None = None,
) -> tuple[nn.Module, dict]:
    """Maximise cross-entropy on ``(x, y)`` inside an L2 ball around ``reference``.

    Parameters
    ----------
    model : nn.Module
        Model to overwrite in place; its parameters are first set to ``reference``.
    x, y : Tensor
        The withdrawing client's data.
    reference : dict of str to Tensor
        Ball centre and starting point (from :func:`reference_model`), keyed like
        ``model.named_parameters()``.
    radius : float
        Ball radius ``delta``.
    lr : float
        SGD step size.
    epochs : int
        Maximum passes over ``(x, y)``.
    batch_size : int
        Mini-batch size.
    seed : int
        Seed of the mini-batch shuffling.
    min_accuracy : float, optional
        Early stop once accuracy on the validation data drops below this.
    x_val, y_val : Tensor, optional
        Validation data for early stopping (default: ``x, y``).
    momentum : float
        SGD momentum of the ascent (the authors' notebook: 0.9).
    clip_grad_norm : float
        Clip the gradient's global L2 norm to this before each step (0: off;
        the authors' notebook: 5).
    away_from : dict of str to Tensor, optional
        The withdrawing client's own last model; with ``distance_stop``, the
        ascent stops once its squared distance from this exceeds ``distance_stop``.
    distance_stop : float, optional
        The squared distance from ``away_from`` that ends the ascent.

    Returns
    -------
    tuple of (nn.Module, dict)
        The same model and ``info`` with ``steps`` (samples processed, summed over
        passes), ``sgd_steps``, ``stopped_early``, ``final_distance``, ``max_distance``
        (max over all steps after projection), ``max_distance_unprojected``,
        ``loss_before``, ``loss_after``, ``accuracy_after``.
    """
    if batch_size < 1 or epochs < 0:
        raise ValueError("need batch_size >= 1 and epochs >= 0")
    x_val = x if x_val is None else x_val
    y_val = y if y_val is None else y_val
    params = dict(model.named_parameters())
    center = {k: reference[k].detach().to(device=p.device, dtype=p.dtype) for k, p in params.items()}
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(center[k])
    loss_before, _ = _loss_acc(model, x, y)

    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, maximize=True)
    stops = []
    if min_accuracy is not None:
        stops.append(("accuracy", lambda: _loss_acc(model, x_val, y_val)[1] < min_accuracy))
    if away_from is not None and distance_stop is not None:
        target = {k: away_from[k].detach().to(device=p.device, dtype=p.dtype) for k, p in params.items()}
        stops.append(("distance", lambda: float(_flat_distance(
            {k: p.detach() for k, p in params.items()}, target)) ** 2 > distance_stop))
    info = _ascend(model, opt, params, center, x, y, radius=radius, epochs=epochs, batch_size=batch_size,
                   seed=seed, stops=stops, clip_grad_norm=clip_grad_norm)
    opt.zero_grad(set_to_none=True)
    loss_after, acc_after = _loss_acc(model, x, y)
    info["final_distance"] = float(_flat_distance({k: p.detach() for k, p in params.items()}, center))
    info.update(loss_before=loss_before, loss_after=loss_after, accuracy_after=acc_after)
    return model, info


def _ascend(model, opt, params, center, x, y, *, radius, epochs, batch_size, seed, stops, clip_grad_norm) -> dict:
    """The projected mini-batch passes; ``stops``: (name, test) pairs checked
    after every step, the first that holds ends the ascent."""
    gen = torch.Generator().manual_seed(seed)
    info = {"steps": 0, "sgd_steps": 0, "stopped_early": False, "max_distance": 0.0,
            "max_distance_unprojected": 0.0, "stopped_by_distance": False}
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0], generator=gen)
        for start in range(0, x.shape[0], batch_size):
            idx = perm[start : start + batch_size].to(x.device)
            unprojected, projected = _projected_ascent_step(model, opt, params, center, radius, x[idx], y[idx],
                                                            clip_grad_norm)
            info["max_distance_unprojected"] = max(info["max_distance_unprojected"], unprojected)
            info["max_distance"] = max(info["max_distance"], projected)
            info["steps"] += int(idx.numel())
            info["sgd_steps"] += 1
            fired = next((name for name, test in stops if test()), None)
            if fired is not None:
                info["stopped_early"] = True
                info["stopped_by_distance"] = fired == "distance"
                return info
    return info


# ------------------------------------------------------------- the federated method


class PGAParams(MethodParams):
    radius_fraction: float = Field(1 / 3, gt=0, description="the ball's radius from d = ||random model - reference||: "
                                   "delta**2 = this x d**2 (radius_rule squared) or delta = this x d (norm)")
    radius_rule: Literal["squared", "norm"] = Field(
        "squared", description="squared: the authors' notebook (squared distances, delta = sqrt(fraction) x d); "
                               "norm: our earlier rule (delta = fraction x d)")
    lr: float = Field(0.01, gt=0, description="gradient-ascent step size")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum of the ascent (authors' notebook: 0.9)")
    clip_grad_norm: float = Field(5.0, ge=0, description="clip the ascent gradient's L2 norm to this; 0 = off "
                                                         "(authors' notebook: 5)")
    epochs: int = Field(5, ge=1, description="maximum passes over the client's data")
    batch_size: int = Field(32, ge=1, description="mini-batch size of the client's gradient ascent")
    distance_stop: float | None = Field(
        None, gt=0, description="stop once the squared distance to the client's own last model exceeds this "
                               "(authors' notebook: 2.5; its scale depends on the model); none = off")
    min_accuracy: float | None = Field(
        0.5, ge=0, le=1, description="stop once accuracy on the client's validation part falls below this; "
                                      "with accuracy_stop = relative, a fraction of the reference model's accuracy")
    accuracy_stop: Literal["relative", "absolute"] = Field(
        "relative", description="relative: min_accuracy x the reference's validation accuracy; absolute: min_accuracy")


def _op_ascent(model: nn.Module, data: ClientData, arrays: dict, config: dict[str, Any]) -> ClientReply:
    """Client: projected gradient ascent on its own data around the reference
    (the received model), inside an L2 ball of radius delta."""
    reference = {k: v.detach().clone() for k, v in model.named_parameters()}
    # Halimi et al.: delta is a fraction of the distance from a random model to the reference.
    rand = _fresh_like(model, int(config["seed"]))
    flat = torch.nn.utils.parameters_to_vector
    with torch.no_grad():
        dist = float(torch.linalg.vector_norm(flat(rand.parameters()) - flat(model.parameters())))
    fraction = float(config["radius_fraction"])
    radius = (fraction ** 0.5 if config["radius_rule"] == "squared" else fraction) * dist
    x_val, y_val = (data.x_validation, data.y_validation) if len(data.y_validation) else (data.x_forget, data.y_forget)
    min_accuracy = config.get("min_accuracy")
    if min_accuracy is not None and config["accuracy_stop"] == "relative":
        min_accuracy = float(min_accuracy) * _loss_acc(model, x_val, y_val)[1]  # the reference's accuracy
    own = {k: torch.as_tensor(v) for k, v in arrays.items()} or None  # its own last model, when the server has it
    model, info = projected_gradient_ascent(
        model, data.x_forget, data.y_forget, reference, radius=radius, lr=float(config["lr"]),
        epochs=int(config["epochs"]), batch_size=int(config["batch_size"]), seed=int(config["seed"]),
        min_accuracy=None if min_accuracy is None else float(min_accuracy), x_val=x_val, y_val=y_val,
        momentum=float(config["momentum"]), clip_grad_norm=float(config["clip_grad_norm"]),
        away_from=own, distance_stop=config.get("distance_stop"),
    )
    arrays_out = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    metrics = {k: float(v) for k, v in info.items() if isinstance(v, (int, float, bool))}
    metrics.update(radius=radius, ball_binds=float(info["max_distance_unprojected"] > radius),
                   distance_stop_used=float(own is not None and config.get("distance_stop") is not None))
    return ClientReply(arrays_out, metrics)


def _own_model(state: dict[str, Tensor] | None, model: nn.Module) -> dict | None:
    """The withdrawing client's stored last model as arrays (its parameters),
    for the distance stop; None when it did not train in the last round."""
    if state is None:
        return None
    return {k: state[k].detach().cpu().numpy() for k, _ in model.named_parameters()}


def _fresh_like(model: nn.Module, seed: int) -> nn.Module:
    """A freshly initialised copy of ``model``'s architecture (seeded)."""
    import copy

    fresh = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in fresh.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
    return fresh


@register_method
class PGA(UnlearningMethod):
    """Halimi et al. (2022): the withdrawing client maximises its loss with
    projected gradient ascent inside an L2 ball around the reference model (the
    average of the other clients' last local models), then the federation
    post-trains without it (the scenario's ``recovery_rounds``).

    The reference is computed by the server from the last round's stored client
    models (our choice: the client need not keep state between rounds) and sent to
    the withdrawing client; only the unlearned model comes back.
    """

    name = "pga"
    Params = PGAParams
    search_space = {"lr": [0.003, 0.01, 0.03], "epochs": [1, 2, 5], "radius_fraction": [1 / 9, 1 / 3],
                    "radius_rule": ["squared", "norm"], "distance_stop": [2.5, None]}
    summary = "Projected gradient ascent by the withdrawing client in an L2 ball around the reference model."
    needs = "server: the other clients' models of the last round; withdrawing client: local gradient ascent on its data"
    client_ops = {"ascent": _op_ascent}

    def history_rounds(self, rounds: int, event_rounds: list[int]) -> list[int]:
        return [r - 1 for r in event_rounds if r > 1]

    def unlearn(self, model: nn.Module, fed: Federation) -> tuple[nn.Module, CostRecord]:
        p = self.params
        last = [e for e in fed.history() if e.round == fed.round - 1]
        others = (
            {}
            if not last
            else {c: s for c, s in last[0].client_states.items() if c in fed.remaining and c not in fed.withdrawing}
        )
        storage = 0
        if others:
            counts = last[0].num_examples
            ref = weighted_mean_state(list(others.values()), [counts[c] for c in others])
            storage = sum(v.numel() * v.element_size() for s in others.values() for v in s.values())
            model.load_state_dict(ref)
        # else: no stored round (event at round 1 or none of the others trained):
        # fall back to the current global model as the reference.
        cfg = {k: v for k, v in p.model_dump().items() if v is not None} | {"seed": fed.seed("pga")}
        own = {c: _own_model((last[0].client_states if last else {}).get(c), model) for c in fed.withdrawing}
        # The server keeps the client's own last model too (the distance stop needs it).
        storage += sum(a.nbytes for arrays in own.values() if arrays for a in arrays.values())
        results = {c: fed.ask_client(c, "pga.ascent", model, own[c], cfg) for c in fed.withdrawing}
        if not any(r.metrics["ball_binds"] for r in results.values()):
            fed.warn(f"pga at round {fed.round}: the L2 ball never bound (largest distance "
                     f"{max(r.metrics['max_distance_unprojected'] for r in results.values()):.3g} inside radius "
                     f"{min(r.metrics['radius'] for r in results.values()):.3g}): the step size, the passes and the "
                     "stops decided the result, not the projection")
        # Several withdrawing clients: average their unlearned models.
        states = [{k: torch.as_tensor(v) for k, v in r.arrays.items()} for r in results.values()]
        model.load_state_dict({k: sum(s[k] for s in states) / len(states) for k in states[0]})
        cost = fed.cost()
        cost.server_storage_bytes = storage
        fed.log(
            method=self.name, reference="others' last models" if others else "global model",
            **{f"client{c}_{k}": v for c, r in results.items() for k, v in r.metrics.items()},
        )
        return model, cost
