"""Behaviour tests for the pure PyTorch unlearning cores (no Flower)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fedforget.unlearning import federaser, fnn, perturb, pga

# ------------------------------------------------------------------------ helpers


def _mlp(seed: int = 0, d_in: int = 20, hidden: int = 32, classes: int = 4) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(d_in, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, classes),
    )


def _cnn(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(6 * 2 * 2, 3),
    )


def _data(n: int = 400, d: int = 20, classes: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Separable-ish Gaussian blobs with some label noise (memorisable)."""
    g = torch.Generator().manual_seed(seed)
    centres = 1.5 * torch.randn(classes, d, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    x = centres[y] + torch.randn(n, d, generator=g)
    flip = torch.rand(n, generator=g) < 0.15
    y = torch.where(flip, torch.randint(0, classes, (n,), generator=g), y)
    return x, y


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int = 200) -> nn.Module:
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(epochs):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model


@pytest.fixture(scope="module")
def trained() -> dict:
    x, y = _data(n=600)
    x_tr, y_tr = x[:300], y[:300]
    model = _train(_mlp(), x_tr, y_tr)
    return {
        "model": model,
        "forget": (x_tr[:60], y_tr[:60]),
        "retain": (x_tr[60:], y_tr[60:]),
        "nonmember": (x[300:450], y[300:450]),
        "holdout": (x[450:], y[450:]),
    }


# ---------------------------------------------------------------------------- FNN


def test_hidden_relu_layers() -> None:
    assert fnn.hidden_relu_layers(_mlp()) == ["1", "3"]
    assert fnn.hidden_relu_layers(_cnn()) == ["0", "3"]


@pytest.mark.parametrize("make, layer", [(_mlp, "3"), (_mlp, "1"), (_cnn, "3")])
def test_bake_decay_equals_scaled_activation(make, layer: str) -> None:
    model = make()
    x = torch.randn(16, 20) if make is _mlp else torch.randn(16, 1, 8, 8)
    modules = dict(model.named_children())
    n_out = modules[layer].weight.shape[0]
    phi = fnn.forgetting_factors(fnn.forgetting_taus("vfr", n_out, generator=torch.Generator().manual_seed(1)))

    # reference: unbaked network whose post-ReLU activation of `layer` is scaled by phi
    relu = list(model.children())[list(modules).index(layer) + 1]
    shape = (1, -1) if make is _mlp else (1, -1, 1, 1)
    captured: dict[str, torch.Tensor] = {}

    def capture(_m, _i, out):
        captured["act"] = out.detach().clone()

    h = relu.register_forward_hook(capture)
    with torch.no_grad():
        model(x)
    h.remove()
    act_orig = captured["act"]
    h = relu.register_forward_hook(lambda _m, _i, out: out * phi.view(shape))
    with torch.no_grad():
        expected_out = model(x)
    h.remove()

    baked = copy.deepcopy(model)
    fnn.bake_decay(baked, layer, phi)
    h = list(baked.children())[list(modules).index(layer) + 1].register_forward_hook(capture)
    with torch.no_grad():
        out = baked(x)
    h.remove()
    assert torch.allclose(captured["act"], phi.view(shape) * act_orig, atol=1e-6)
    assert torch.allclose(out, expected_out, atol=1e-6)


def test_bake_decay_rejects_non_relu_layer_and_bad_phi() -> None:
    model = _mlp()
    with pytest.raises(ValueError):
        fnn.bake_decay(model, "5", torch.ones(4))  # classifier has no ReLU after it
    with pytest.raises(ValueError):
        fnn.bake_decay(model, "3", torch.zeros(32))


def test_rank_taus_follow_activation() -> None:
    acts = torch.tensor([0.5, 3.0, 0.0, 1.0, 0.5])
    taus = fnn.forgetting_taus("rank", 5, tau_min=1.0, tau_max=20.0, activations=acts)
    assert taus[1] == 1.0  # most active forgets fastest
    assert taus[2] == 20.0  # least active forgets slowest
    assert taus[0] < taus[4]  # tie broken stably by index
    order = torch.argsort(acts, descending=True, stable=True)
    assert torch.all(taus[order][1:] > taus[order][:-1])


def test_taus_variants_and_factors() -> None:
    assert torch.equal(fnn.forgetting_taus("ffr", 3, tau=5.0), torch.full((3,), 5.0))
    v = fnn.forgetting_taus("vfr", 1000, tau_min=2.0, tau_max=4.0, generator=torch.Generator().manual_seed(0))
    assert v.min() >= 2.0 and v.max() <= 4.0 and v.std() > 0.3
    assert torch.allclose(fnn.forgetting_factors(torch.tensor([2.0]), dt=1.0), torch.exp(torch.tensor([-0.5])))
    with pytest.raises(ValueError):
        fnn.forgetting_taus("nope", 3)


def test_neuron_mean_activations_matches_manual() -> None:
    model = _mlp()
    x = torch.randn(50, 20)
    acts = fnn.neuron_mean_activations(model, x, ["1", "3"], batch_size=7)
    with torch.no_grad():
        h1 = torch.relu(model[1](x))
        h2 = torch.relu(model[3](h1))
    assert torch.allclose(acts["1"], h1.mean(0), atol=1e-6)
    assert torch.allclose(acts["3"], h2.mean(0), atol=1e-6)
    conv = fnn.neuron_mean_activations(_cnn(), torch.randn(5, 1, 8, 8), ["0"])
    assert conv["0"].shape == (4,)


# ---------------------------------------------------------------------------- PGA


def test_project_to_l2_ball() -> None:
    center = {"a": torch.zeros(2), "b": torch.zeros(1)}
    inside = {"a": torch.tensor([0.1, 0.2]), "b": torch.tensor([0.3])}
    assert all(torch.equal(v, inside[k]) for k, v in pga.project_to_l2_ball(inside, center, 1.0).items())
    outside = {"a": torch.tensor([3.0, 0.0]), "b": torch.tensor([4.0])}
    proj = pga.project_to_l2_ball(outside, center, 2.0)
    flat = torch.cat([proj["a"], proj["b"]])
    assert torch.allclose(flat.norm(), torch.tensor(2.0), atol=1e-6)
    assert torch.allclose(flat, torch.tensor([1.2, 0.0, 1.6]), atol=1e-6)  # same direction


def test_reference_model_is_mean_of_others() -> None:
    clients = [{"w": torch.randn(3, 2)} for _ in range(4)]
    glob = {"w": torch.stack([c["w"] for c in clients]).mean(0)}
    ref = pga.reference_model(glob, clients[0], 4)
    assert torch.allclose(ref["w"], torch.stack([c["w"] for c in clients[1:]]).mean(0), atol=1e-6)
    with pytest.raises(ValueError):
        pga.reference_model(glob, clients[0], 1)


def test_pga_stays_in_ball_and_raises_loss(trained) -> None:
    model = copy.deepcopy(trained["model"])
    x, y = trained["forget"]
    ref = {k: v.detach().clone() for k, v in model.named_parameters()}
    radius = 1.0
    _, info = pga.projected_gradient_ascent(
        model, x, y, ref, radius=radius, lr=0.5, epochs=5, batch_size=16, seed=0
    )
    assert info["max_distance_unprojected"] > radius  # the projection was active
    assert info["max_distance"] <= radius + 1e-6
    assert info["final_distance"] <= radius + 1e-6
    dist = torch.cat([(p.detach() - ref[k]).flatten() for k, p in model.named_parameters()]).norm()
    assert float(dist) <= radius + 1e-6
    assert info["loss_after"] > info["loss_before"] + 0.1
    assert info["steps"] == 5 * x.shape[0] and info["sgd_steps"] == 5 * 4


def test_pga_early_stop(trained) -> None:
    model = copy.deepcopy(trained["model"])
    x, y = trained["forget"]
    ref = {k: v.detach().clone() for k, v in model.named_parameters()}
    _, info = pga.projected_gradient_ascent(
        model, x, y, ref, radius=50.0, lr=0.5, epochs=50, batch_size=16, seed=0, min_accuracy=0.5
    )
    assert info["stopped_early"] and info["accuracy_after"] < 0.5
    assert info["sgd_steps"] < 50 * 4


# ---------------------------------------------------------------------- FedEraser


def test_calibrate_update_formula() -> None:
    old = {"w": torch.tensor([3.0, 4.0]), "b": torch.tensor([2.0])}
    new = {"w": torch.tensor([1.0, 0.0]), "b": torch.tensor([0.0])}
    cal = federaser.calibrate_update(old, new)
    assert torch.allclose(cal["w"], torch.tensor([5.0, 0.0]))
    assert torch.equal(cal["b"], torch.tensor([0.0]))  # zero new norm -> zeros


def test_calibrated_aggregate_weights() -> None:
    old = [{"w": torch.tensor([3.0, 4.0])}, {"w": torch.tensor([0.0, 2.0])}]
    new = [{"w": torch.tensor([2.0, 0.0])}, {"w": torch.tensor([0.0, -7.0])}]
    agg = federaser.calibrated_aggregate(old, new, [3.0, 1.0])
    # calibrated: [5, 0] and [0, -2]; weights 0.75 / 0.25
    assert torch.allclose(agg["w"], torch.tensor([3.75, -0.5]))
    assert federaser.storage_bytes(old) == 2 * 2 * 4


# ------------------------------------------------------------------------ perturb


def test_perturb_noise_scale() -> None:
    g = torch.Generator().manual_seed(0)
    params = {"big": 3.0 * torch.randn(200, 200, generator=g), "small": 0.1 * torch.randn(5000, generator=g),
              "scalar": torch.tensor([1.0]), "const": torch.ones(10)}
    beta = 0.05
    out = perturb.perturb_state(params, beta, torch.Generator().manual_seed(1))
    for k in ("big", "small"):
        noise_std = float((out[k] - params[k]).std())
        assert abs(noise_std / (beta * float(params[k].std())) - 1) < 0.1
    assert torch.equal(out["scalar"], params["scalar"]) and torch.equal(out["const"], params["const"])
    scales = perturb.noise_scales(params, beta)
    assert scales["const"] == 0.0 and scales["scalar"] == 0.0
    assert scales["big"] == pytest.approx(beta * float(params["big"].std()))


def test_perturb_beta_zero_identical() -> None:
    params = dict(_mlp().named_parameters())
    out = perturb.perturb_state(params, 0.0, torch.Generator().manual_seed(0))
    assert all(torch.equal(out[k], params[k]) and out[k] is not params[k] for k in params)
