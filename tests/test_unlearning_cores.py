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


def test_pga_clipping_bounds_each_step(trained) -> None:
    """Gradient clipping (the authors' 5): with a tiny clip the plain-SGD step
    (no momentum, one step) moves the parameters by at most lr x clip."""
    x, y = trained["forget"]
    ref = {k: v.detach().clone() for k, v in trained["model"].named_parameters()}
    moved = {}
    for clip in (0.0, 1e-3):
        model = copy.deepcopy(trained["model"])
        pga.projected_gradient_ascent(model, x[:16], y[:16], ref, radius=1e9, lr=1.0, epochs=1, batch_size=16,
                                      seed=0, clip_grad_norm=clip)
        moved[clip] = float(torch.cat([(p.detach() - ref[k]).flatten() for k, p in model.named_parameters()]).norm())
    assert moved[1e-3] <= 1e-3 * (1 + 1e-4) < moved[0.0]


def test_pga_distance_stop_ends_the_ascent(trained) -> None:
    """The authors' stop: once the squared distance to the client's own model exceeds the bound."""
    model = copy.deepcopy(trained["model"])
    x, y = trained["forget"]
    ref = {k: v.detach().clone() for k, v in model.named_parameters()}
    _, info = pga.projected_gradient_ascent(model, x, y, ref, radius=50.0, lr=0.5, epochs=5, batch_size=16, seed=0,
                                            momentum=0.9, away_from=ref, distance_stop=1e-6)
    assert info["stopped_early"] and info["stopped_by_distance"] and info["sgd_steps"] == 1


def _pga_on_local_federation(params):
    from fedforget.models import build_model
    from fedforget.protocol.local import LocalFederation
    from fedforget.unlearning import ClientData, HistoryEntry, get_method

    g = torch.Generator().manual_seed(0)
    clients = {}
    for c in range(3):
        x, y = torch.randn(120, 20, generator=g), torch.randint(0, 4, (120,), generator=g)
        clients[c] = ClientData(c, x[:100], y[:100], x[100:], y[100:], 4)
    model = build_model("mlp", (20,), 4, [16], seed=0)
    states = {c: {k: v + 0.01 * c for k, v in model.state_dict().items()} for c in clients}
    history = [HistoryEntry(2, model.state_dict(), states, {c: 100 for c in clients})]
    fed = LocalFederation(lambda: build_model("mlp", (20,), 4, [16], seed=0), clients, [0], 4, history=history,
                          round=3)
    _, cost = get_method("pga", params).unlearn(model, fed)
    return fed, cost


def test_pga_radius_rules_and_the_never_binding_warning() -> None:
    squared, _ = _pga_on_local_federation({"epochs": 1, "radius_fraction": 0.25, "distance_stop": None})
    norm, _ = _pga_on_local_federation({"epochs": 1, "radius_fraction": 0.25, "radius_rule": "norm",
                                        "distance_stop": None})
    r_sq, r_norm = squared.logs[-1]["client0_radius"], norm.logs[-1]["client0_radius"]
    assert r_sq == pytest.approx(2 * r_norm)  # sqrt(0.25) d against 0.25 d
    # a huge ball with one pass at lr 0.01 never binds: the run says so
    loose, _ = _pga_on_local_federation({"epochs": 1, "radius_fraction": 100.0, "distance_stop": None})
    assert any("never bound" in w for w in loose.warnings) and loose.logs[-1]["client0_ball_binds"] == 0
    tight, _ = _pga_on_local_federation({"epochs": 1, "radius_fraction": 1e-8, "distance_stop": None})
    assert not tight.warnings and tight.logs[-1]["client0_ball_binds"] == 1


def test_pga_relative_accuracy_stop_reads_the_reference() -> None:
    """min_accuracy relative: a fraction of the reference model's accuracy on
    the client's validation part; 1.0 stops at the first step that lowers it."""
    fed, _ = _pga_on_local_federation({"epochs": 3, "lr": 0.5, "min_accuracy": 1.0, "distance_stop": None})
    log = fed.logs[-1]
    assert log["client0_stopped_early"] == 1 and log["client0_sgd_steps"] < 3 * 4


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


def _federaser_run(params):
    from fedforget.models import build_model
    from fedforget.protocol.local import LocalFederation
    from fedforget.unlearning import ClientData, HistoryEntry, get_method

    g = torch.Generator().manual_seed(1)
    clients = {c: ClientData(c, torch.randn(40, 20, generator=g), torch.randint(0, 4, (40,), generator=g),
                             torch.randn(10, 20, generator=g), torch.randint(0, 4, (10,), generator=g), 4)
               for c in range(3)}
    init = build_model("mlp", (20,), 4, [16], seed=0).state_dict()
    history = []
    for rnd in (1, 3):
        states = {c: {k: v + 0.01 * (c + rnd) for k, v in init.items()} for c in clients}
        history.append(HistoryEntry(rnd, {k: v + 0.001 * rnd for k, v in init.items()}, states,
                                    {c: 10 * (c + 1) for c in clients}))
    fed = LocalFederation(lambda: build_model("mlp", (20,), 4, [16], seed=0), clients, [0], 4, history=history,
                          round=4, local_epochs=3)
    epochs_asked = []
    train_remaining = fed.train_remaining

    def spy(model, tag, *, epochs=None, clients=None):
        epochs_asked.append(epochs)
        return train_remaining(model, tag, epochs=epochs, clients=clients)

    fed.train_remaining = spy
    model, cost = get_method("federaser", {"interval": 2, **params}).unlearn(build_model("mlp", (20,), 4, [16],
                                                                                          seed=0), fed)
    return history, model, cost, epochs_asked


def test_federaser_replays_its_first_stored_round_exactly() -> None:
    """The paper's scheme: the first stored round starts from the model it was
    trained from, so its remaining clients' stored updates apply unchanged (no
    client work there); calibrating it too costs a training exchange more."""
    history, model, cost, asked = _federaser_run({"first_round": "replay", "calibration_ratio": 0.5})
    _, _, cost_cal, asked_cal = _federaser_run({"first_round": "calibrate", "calibration_ratio": 0.5})
    assert len(asked) == 1 and len(asked_cal) == 2 and cost.client_steps < cost_cal.client_steps
    assert asked == [1.5]  # r x E, fractional as in the paper
    _, _, _, asked_int = _federaser_run({"integer_epochs": True, "calibration_ratio": 0.5})
    assert asked_int == [2.0]  # rounded up, as the released code does


def test_federaser_first_replay_is_the_stored_weighted_mean() -> None:
    """With one stored round, the result is its global model plus the
    example-weighted mean of the remaining clients' stored updates."""
    from fedforget.models import build_model
    from fedforget.protocol.local import LocalFederation
    from fedforget.unlearning import ClientData, HistoryEntry, get_method

    g = torch.Generator().manual_seed(2)
    clients = {c: ClientData(c, torch.randn(8, 20, generator=g), torch.randint(0, 4, (8,), generator=g),
                             torch.randn(4, 20, generator=g), torch.randint(0, 4, (4,), generator=g), 4)
               for c in range(3)}
    init = build_model("mlp", (20,), 4, [16], seed=0).state_dict()
    states = {c: {k: v + 0.1 * (c + 1) for k, v in init.items()} for c in clients}
    counts = {0: 5, 1: 10, 2: 30}
    fed = LocalFederation(lambda: build_model("mlp", (20,), 4, [16], seed=0), clients, [0], 4,
                          history=[HistoryEntry(1, init, states, counts)], round=2)
    model, cost = get_method("federaser", {}).unlearn(build_model("mlp", (20,), 4, [16], seed=0), fed)
    expected = {k: init[k] + (10 * 0.2 + 30 * 0.3) / 40 for k in init}
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, expected[k])
    assert cost.client_steps == 0 and fed.exchanges == 0
