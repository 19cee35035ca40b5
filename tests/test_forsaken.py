"""Forsaken's parts and its one loop, through the in-process federation."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from fedforget.models import build_model
from fedforget.protocol.local import LocalFederation
from fedforget.training import train_local
from fedforget.unlearning import ClientData, get_method
from fedforget.unlearning.forsaken import (
    IdentityGenerator,
    LearnedGenerator,
    NeuronMask,
    logit_confidence,
    matched_targets,
    membership_auc,
    membership_loss,
    meta_train,
    neuron_layers,
    proxy_tasks,
)
from fedforget.unlearning.forsaken.generator import unroll
from tests.test_unlearning_cores import _data, _mlp, _train


def _clients(model_name: str, seed: int = 0):
    """Four clients; client 0 is memorised by the model trained on it."""
    g = torch.Generator().manual_seed(seed)
    shape = (1, 8, 8) if model_name == "cnn" else (20,)
    centres = 1.5 * torch.randn(4, *shape, generator=g)
    clients = {}
    for c in range(4):
        y = torch.randint(0, 4, (160,), generator=g)
        x = centres[y] + torch.randn(160, *shape, generator=g)
        y = torch.where(torch.rand(160, generator=g) < 0.2, torch.randint(0, 4, (160,), generator=g), y)
        clients[c] = ClientData(c, x[:100], y[:100], x[100:], y[100:], 4)
    x_s = centres[torch.randint(0, 4, (60,), generator=g)] + torch.randn(60, *shape, generator=g)
    return clients, (x_s, torch.randint(0, 4, (60,), generator=g)), shape


def _memorising_model(model_name: str, clients, shape):
    model = build_model(model_name, shape, 4, [64], seed=0)
    x = torch.cat([clients[c].x_train for c in clients])
    y = torch.cat([clients[c].y_train for c in clients])
    train_local(model, x, y, epochs=150, batch_size=20, lr=0.1, seed=0)
    return model


# --------------------------------------------------------------------------- objective


def test_logit_confidence_and_quantile_targets():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]])
    phi = logit_confidence(logits, torch.tensor([0, 1]))
    expected = torch.tensor([2.0 - np.log(2.0), 1.0 - np.log(np.exp(0.0) + np.exp(3.0))])
    assert torch.allclose(phi, expected.float(), atol=1e-6)
    ref = torch.arange(100, dtype=torch.float32)
    members = torch.tensor([5.0, -1.0, 7.0, 3.0])
    t = matched_targets(members, ref)
    # rank order is kept; the r-th of n gets the (r + 0.5)/n quantile of the reference
    q = np.quantile(ref.numpy(), (np.array([2, 0, 3, 1]) + 0.5) / 4)
    np.testing.assert_allclose(t.numpy(), q, rtol=1e-6)


def test_objective_lowers_per_sample_membership_on_an_overfitted_model():
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=700, n_features=100, n_informative=30, n_classes=10,
                               n_clusters_per_class=1, random_state=0)
    x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y)
    model = _train(_mlp(d_in=100, hidden=128, classes=10), x[:300], y[:300], epochs=300)
    xf, yf, xv, yv = x[:100], y[:100], x[300:400], y[300:400]
    with torch.no_grad():
        phi_v = logit_confidence(model(xv), yv)
        auc0, se = membership_auc(logit_confidence(model(xf), yf), phi_v)
    assert auc0 > 0.75  # memorised
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    for _ in range(50):
        with torch.no_grad():  # targets from the current model, as the client computes them
            phi_v = logit_confidence(model(xv), yv)
        opt.zero_grad()
        membership_loss(model(xf), yf, phi_v).backward()
        opt.step()
    with torch.no_grad():
        # judged on fresh non-members, not the validation part that set the targets
        scores = torch.cat([-F.cross_entropy(model(xf), yf, reduction="none"),
                            -F.cross_entropy(model(x[400:]), y[400:], reduction="none")])
    auc1 = roc_auc_score(np.r_[np.ones(100), np.zeros(len(y) - 400)], scores.numpy())
    assert abs(auc1 - 0.5) < 0.1 and auc1 < auc0 - 0.2


def test_self_check_chance_is_measured_on_the_clients_sizes():
    auc, se = membership_auc(torch.arange(10.0), torch.arange(10.0) - 100)
    assert auc == 1.0 and se == pytest.approx(np.sqrt(21 / 1200))


def test_a_class_deletion_takes_targets_and_self_check_from_that_class(monkeypatch):
    """delete_class: the quantile targets and the self-check AUC use the
    validation samples of the deleted class only, never the whole part."""
    import fedforget.unlearning.forsaken.method as forsaken_method
    from fedforget.unlearning import CLIENT_OPS
    from fedforget.unlearning.forsaken.objective import (
        forgetting_gradient,
        validation_confidence,
    )

    clients, _, shape = _clients("mlp")
    model = build_model("mlp", shape, 4, [64], seed=0)
    c, gone = clients[0], clients[0].y_train == 2
    data = ClientData(0, c.x_train[~gone], c.y_train[~gone], c.x_validation, c.y_validation, 4,
                      x_forget=c.x_train[gone], y_forget=c.y_train[gone], forget_label=2)
    seen = {}

    def spy(model, names, x, y, phi_reference):
        seen["reference"] = phi_reference
        return forgetting_gradient(model, names, x, y, phi_reference)

    monkeypatch.setattr(forsaken_method, "forgetting_gradient", spy)
    op = CLIENT_OPS["forsaken.gradient"]
    reply = op(model, data, {}, {})
    same = c.y_validation == 2
    phi_class = validation_confidence(model, c.x_validation[same], c.y_validation[same])
    phi_forget = validation_confidence(model, data.x_forget, data.y_forget)
    phi_whole = validation_confidence(model, c.x_validation, c.y_validation)
    torch.testing.assert_close(seen["reference"], phi_class)
    assert reply.metrics["auc"] == pytest.approx(membership_auc(phi_forget, phi_class)[0])
    assert reply.metrics["auc"] != pytest.approx(membership_auc(phi_forget, phi_whole)[0])  # the check can tell
    assert reply.metrics["steps"] == len(data.y_forget) + int(same.sum())
    assert op(model, data, {}, {"check_only": True}).metrics["auc"] == reply.metrics["auc"]
    one = int(torch.nonzero(same)[0])
    keep = ~same
    keep[one] = True
    data.x_validation, data.y_validation = c.x_validation[keep], c.y_validation[keep]
    with pytest.raises(ValueError, match="1 samples of the deleted class 2.*at least 2"):
        op(model, data, {}, {})


# ------------------------------------------------------------------------------- masks


@pytest.mark.parametrize("model_name", ["mlp", "cnn"])
def test_masks_change_only_the_selected_neurons(model_name):
    clients, server, shape = _clients(model_name)
    model = _memorising_model(model_name, clients, shape)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fed = LocalFederation(lambda: build_model(model_name, shape, 4, [64], seed=0), clients, [0], 4, server_validation=server)
    method = get_method("forsaken", {"generator": "identity", "mask_fraction": 0.25, "steps": 3,
                                     "target_se": 0.0, "max_accuracy_drop": 1.0})
    model, _ = method.unlearn(model, fed)
    layers = neuron_layers(model)
    changed_rows = {}
    for name, v in model.state_dict().items():
        layer, kind = name.rsplit(".", 1)
        diff = (v != before[name]).reshape(v.shape[0], -1).any(dim=1) if v.dim() else torch.tensor([False])
        if layer not in layers:
            assert not diff.any(), name  # no other layer moves
        else:
            changed_rows.setdefault(layer, set()).update(torch.nonzero(diff).view(-1).tolist())
    for layer in layers:
        units = before[f"{layer}.weight"].shape[0]
        assert 0 < len(changed_rows[layer]) <= int(np.ceil(0.25 * units)), (layer, changed_rows[layer])
    assert 0 < method.step_metrics()["mask_fraction"] < 0.25


def test_mask_fraction_one_is_the_all_weights_ablation():
    saliency = {"1": torch.tensor([0.1, 3.0, 2.0, 0.5]), "3": torch.tensor([1.0, 0.0])}
    m = NeuronMask.select(saliency, 0.5)
    assert m.rows["1"].tolist() == [1, 2] and m.rows["3"].tolist() == [0]
    assert NeuronMask.select(saliency, 1.0).rows["1"].tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="mask_fraction"):
        NeuronMask.select(saliency, 0.0)


# --------------------------------------------------------------------------- generator


def test_learned_generator_beats_identity_on_a_task_it_was_not_trained_on():
    """Meta-trained on proxy tasks from held-out 'server' data, the learned
    generator must reach a lower objective than the identity ablation at every
    step budget of the real task (fails if the generator stops learning)."""
    x, y = _data(n=600)
    model = _train(_mlp(), x[:300], y[:300])
    forget, reference, server = (x[:60], y[:60]), (x[450:], y[450:]), (x[300:450], y[300:450])
    gen = LearnedGenerator(1.0, 6, seed=0)
    history = meta_train(gen, proxy_tasks(model, *server, 2, 0, lr=0.05), 0.25, 0.05, 1.0, 6, 25)
    assert history[-1] < 0.7 * history[0]
    with torch.no_grad():
        ident = [float(v) for v in unroll(IdentityGenerator(1.0), model, forget, reference, 0.25, 0.05, 1.0, 6)]
        learned = [float(v) for v in unroll(gen, model, forget, reference, 0.25, 0.05, 1.0, 6)]
    assert learned[-1] < 0.8 * ident[-1], (learned, ident)
    assert sum(learned) < sum(ident)


def test_learned_generator_starts_as_identity():
    gen, ident = LearnedGenerator(1.0, 4, seed=3), IdentityGenerator(1.0)
    g_f, g_r, theta = torch.randn(50), torch.randn(50), torch.randn(50)
    d_l, gain = gen(0, g_f, g_r, theta)
    d_i, _ = ident(0, g_f, g_r, theta)
    assert torch.allclose(d_l, d_i, atol=1e-6) and float(gain.detach()) == 1.0


# ------------------------------------------------------------------------ the one loop


def test_stop_rule_is_two_sided_around_chance_and_rollback_keeps_the_closest_state():
    clients, server, shape = _clients("mlp")
    model = _memorising_model("mlp", clients, shape)
    fed = LocalFederation(lambda: build_model("mlp", shape, 4, [64], seed=0), clients, [0], 4, server_validation=server)
    method = get_method("forsaken", {"generator": "identity", "steps": 10, "step_size": 0.05})
    method.unlearn(copy.deepcopy(model), fed)
    log = fed.logs[-1]
    n_f, n_v = len(clients[0].y_train), len(clients[0].y_validation)
    se = np.sqrt((n_f + n_v + 1) / (12 * n_f * n_v))
    assert log["target_band"] == pytest.approx([0.5 - se, 0.5 + se])
    assert log["self_check_auc"][0] > log["target_band"][1]
    z_stop = log["z_stop"]
    if log["stop"] == "target":
        assert abs(log["self_check_auc"][-1] - 0.5) <= se and log["client_z"][-1] <= z_stop
    # whatever stopped it, the state kept is the one closest to chance among those seen
    dist = [max(abs(a - 0.5) / se, abs(z) / z_stop) for a, z in zip(log["self_check_auc"], log["client_z"])]
    if log["stop"] != "target":
        assert log["best_step"] == int(np.argmin(dist))


def test_an_overshooting_step_is_not_kept():
    """Two-sided: a step that throws the client below chance beyond its noise
    ends the loop at once (the one-sided rule took it as success), and the
    model kept is the state closest to chance."""
    clients, server, shape = _clients("mlp")
    model = _memorising_model("mlp", clients, shape)
    fed = LocalFederation(lambda: build_model("mlp", shape, 4, [64], seed=0), clients, [0], 4, server_validation=server)
    get_method("forsaken", {"generator": "identity", "steps": 6, "step_size": 3.0, "mask_fraction": 1.0,
                            "max_accuracy_drop": 1.0}).unlearn(copy.deepcopy(model), fed)
    log = fed.logs[-1]
    assert log["stop"] == "overshoot", log
    last = log["self_check_auc"][-1]
    assert last < log["target_band"][0] or log["client_z"][-1] < -log["z_stop"]
    se = (log["target_band"][1] - log["target_band"][0]) / 2
    dist = [max(abs(a - 0.5) / se, abs(z) / log["z_stop"]) for a, z in zip(log["self_check_auc"], log["client_z"])]
    assert log["best_step"] == int(np.argmin(dist))  # the state kept is the closest to chance, from either side


def test_client_level_z_sees_what_a_few_validation_samples_cannot():
    """A client with a 2-sample validation part: the per-sample self-check's
    band around chance is so wide that it stops before any step, while the
    client-level check against the server's validation set still sees the
    memorised client, so Forsaken keeps stepping (no silent zero-step exit)."""
    clients, _, shape = _clients("mlp")
    model = _memorising_model("mlp", clients, shape)
    c0 = clients[0]
    clients[0] = ClientData(0, c0.x_train, c0.y_train, c0.x_validation[:2], c0.y_validation[:2], 4)
    # the server's validation set: never-trained samples of the same distribution, many of them
    server = (torch.cat([clients[c].x_validation for c in (1, 2, 3)]),
              torch.cat([clients[c].y_validation for c in (1, 2, 3)]))
    runs, warned = {}, {}
    for check in (False, True):
        fed = LocalFederation(lambda: build_model("mlp", shape, 4, [64], seed=0), clients, [0], 4,
                              server_validation=server)
        # target_se 3: with 2 validation samples the AUC band around chance is wider than [0, 1]
        get_method("forsaken", {"generator": "identity", "steps": 4, "client_check": check, "target_se": 3.0,
                                "max_accuracy_drop": 1.0}).unlearn(copy.deepcopy(model), fed)
        runs[check], warned[check] = fed.logs[-1], fed.runtime.warnings
    assert runs[False]["stop"] == "target" and runs[False]["steps"] == 0
    # Without the client-level check it stops at once, and says so: a zero-step exit is never silent.
    assert any("changed nothing (stop: target)" in w for w in warned[False])
    assert runs[True]["client_z"][0] > runs[True]["z_stop"] and runs[True]["steps"] > 0
    assert not any("changed nothing" in w for w in warned[True])


def test_client_level_z_is_null_for_a_client_the_model_never_saw():
    from fedforget.unlearning.forsaken.objective import class_statistics, client_level_z

    g = torch.Generator().manual_seed(0)
    zs = []
    for _ in range(200):
        y_ref, y_f = torch.randint(0, 3, (300,), generator=g), torch.randint(0, 3, (40,), generator=g)
        ref = class_statistics(torch.randn(300, generator=g) + y_ref, y_ref, 3)
        zs.append(client_level_z(torch.randn(40, generator=g) + y_f, y_f, ref))
    zs = np.array(zs)
    assert abs(zs.mean()) < 0.25 and 0.8 < zs.std() < 1.2  # about N(0, 1) under the null
    assert np.mean(zs > 1.645) < 0.09
    y_f = torch.randint(0, 3, (40,), generator=g)
    assert client_level_z(torch.randn(40, generator=g) + y_f + 1.0, y_f, ref) > 3  # members: higher phi


def test_a_rejecting_guard_keeps_the_starting_state():
    clients, server, shape = _clients("mlp")
    model = _memorising_model("mlp", clients, shape)
    # a guard that rejects every step: the model returned is the best accepted
    # state, here the starting one, never the rejected step
    class Rejecting(LocalFederation):
        calls = 0

        def validation_accuracy(self, model):
            self.calls += 1
            return 1.0 if self.calls == 1 else 0.0

    strict = Rejecting(lambda: build_model("mlp", shape, 4, [64], seed=0), clients, [0], 4)
    out, _ = get_method("forsaken", {"generator": "identity"}).unlearn(copy.deepcopy(model), strict)
    assert strict.logs[-1]["stop"] == "accuracy_guard" and strict.logs[-1]["best_step"] == 0
    assert any("changed nothing (stop: accuracy_guard)" in w for w in strict.runtime.warnings)
    for k, v in out.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k


def test_one_exchange_per_step_and_costs_counted():
    clients, server, shape = _clients("mlp")
    model = _memorising_model("mlp", clients, shape)
    fed = LocalFederation(lambda: build_model("mlp", shape, 4, [64], seed=0), clients, [0], 4, server_validation=server)
    method = get_method("forsaken", {"generator": "identity", "steps": 4, "target_se": 0.0, "max_accuracy_drop": 1.0})
    _, cost = method.unlearn(model, fed)
    assert fed.logs[-1]["steps"] == 4 and fed.exchanges == 5  # the first exchange, then one per step
    ops = [op for _, op in fed.asked]
    assert ops.count("forsaken.gradient") == 5 and set(ops) == {"forsaken.gradient", "forsaken.retain"}
    assert cost.client_steps > 0 and cost.bytes_up > 0
