"""Withdrawal events and arms on the inline engine, checked from the message log
and the metrics table; each method once through a local (Flower-free) handle."""

from collections import defaultdict

import numpy as np
import pandas as pd
import pytest
import torch

import fedforget
from fedforget import registry
from fedforget.protocol.local import LocalFederation
from fedforget.results import read_events
from fedforget.unlearning import ClientData, get_method

ALL = ["forsaken", "perturb", "fnn", "federaser", "pga", "none"]


@pytest.fixture(scope="module")
def withdrawal_run(tmp_path_factory):
    from tests.conftest import tiny

    sc = tiny(
        train={"rounds": 5, "fraction": 0.75},
        events=[{"round": 3, "client": 1, "witness": "backdoor", "witness_fraction": 0.3}],
        unlearning={"methods": ALL, "recovery_rounds": 1, "forsaken": {"steps": 4, "meta_iterations": 4}},
    )
    res = fedforget.run(sc, out=tmp_path_factory.mktemp("w") / "run")
    return sc, res, read_events(res.run_dir)


def train_messages(events):
    return [e for e in events if e["event"] == "message" and e["type"] == "train"]


def test_withdrawn_client_never_trains_after_withdrawal(withdrawal_run):
    _, _, events = withdrawal_run
    msgs = train_messages(events)
    for m in msgs:
        if m["client"] != 1:
            continue
        assert m["arm"] != "retrain", m
        if m["arm"] != "original":
            # method arms only exist from the event on, and never train client 1
            pytest.fail(f"withdrawn client got a training message: {m}")
    # ... while in the original arm it keeps training
    assert any(m["client"] == 1 and m["arm"] == "original" and int(m["round"]) > 3 for m in msgs)
    # it was asked for unlearning work through the custom action
    assert any(e["event"] == "message" and e["type"] == "train.unlearn" and e["client"] == 1 for e in events)


def test_retrain_and_method_arms_sample_original_minus_withdrawn(withdrawal_run):
    sc, _, events = withdrawal_run
    by = defaultdict(set)
    for m in train_messages(events):
        if not m["tag"]:
            by[(m["arm"], int(m["round"]))].add(m["client"])
    for r in range(1, sc.train.rounds + 1):
        orig = by[("original", r)]
        assert len(orig) == 3  # fraction 0.75 of 4
        assert by[("retrain", r)] == orig - {1}
        if r > 3:
            for name in ALL:
                assert by[(name, r)] == orig - {1}, (name, r)
    # some round did sample client 1 in original, so the check above has teeth
    assert any(1 in by[("original", r)] for r in range(1, sc.train.rounds + 1))


def test_metrics_cover_every_arm_round_and_client(withdrawal_run):
    sc, res, _ = withdrawal_run
    df = res.metrics
    assert set(df.arm) == {"original", "retrain", *ALL}
    for arm in set(df.arm):
        sel = df[(df.arm == arm) & (df.metric == "test_accuracy")]
        # whole rounds, plus t - 0.5: every arm right after the unlearning step
        assert sorted(sel["round"]) == [0, 1, 2, 2.5, 3, 4, 5], arm
        for metric in ("forget_accuracy", "retain_accuracy", "witness_accuracy"):
            s = df[(df.arm == arm) & (df.metric == metric)]
            assert set(s.client) == {1} and len(s) == sc.train.rounds + 2, (arm, metric)
    l2 = df[df.metric == "l2_to_retrain"].set_index(["arm", "round"]).value
    assert (l2.loc["retrain"] == 0).all() and (l2.loc["original"] > 0).all()
    # method arms share original's prefix exactly
    pre = df[df["round"] <= 2].set_index(["arm", "round", "client", "metric"]).value
    for name in ALL:
        np.testing.assert_array_equal(pre.loc[name].sort_index().to_numpy(), pre.loc["original"].sort_index().to_numpy())


def test_every_arm_has_the_same_number_of_regular_rounds(withdrawal_run):
    """Fair contest: at every round label, every arm has had the same number of
    regular rounds (method arms share original's prefix, then train each round
    once; work inside their unlearning step is tagged e<t>, not a round)."""
    sc, _, events = withdrawal_run
    rounds = defaultdict(set)
    for m in train_messages(events):
        if not m["tag"]:
            rounds[m["arm"]].add(int(m["round"]))
    assert rounds["original"] == rounds["retrain"] == set(range(1, sc.train.rounds + 1))
    for name in ALL:
        assert rounds[name] == set(range(3, sc.train.rounds + 1)), name  # 1..2 are original's prefix
    # work inside a step is never labelled as a regular round
    inside = [m for m in train_messages(events) if m["tag"]]
    assert inside and all(":e3:" in m["tag"] and m["round"] == 2.5 for m in inside)


def test_unlearned_audit_sits_between_the_event_rounds(withdrawal_run):
    _, res, _ = withdrawal_run
    df = res.metrics
    v = df[(df.metric == "forget_accuracy") & (df.client == 1)].set_index(["arm", "round"]).value
    # original and retrain are unchanged between t-1 and t-0.5; none too (it does nothing)
    for arm in ("original", "retrain", "none"):
        assert v[(arm, 2.5)] == v[(arm, 2.0)], arm
    # a method that does something shows its step alone at t - 0.5
    assert v[("pga", 2.5)] != v[("pga", 2.0)]
    fr = df[(df.metric == "fr") & (df.client == 1)].set_index(["arm", "round"]).value
    assert fr[("none", 2.5)] == 0.0 and fr[("original", 2.5)] == 0.0


def test_speedups_divide_retraining_to_the_event(withdrawal_run):
    _, res, events = withdrawal_run
    g = res.metrics[res.metrics.client.isna() & (res.metrics["round"] == 3)].pivot_table(
        index="arm", columns="metric", values="value")
    ref_steps = g.loc["retrain", "retrain_steps_to_event"]
    # rounds 1..2 of retrain: 3 clients sampled of 4, minus client 1 when sampled
    steps = sum(m["round"] <= 2 for m in train_messages(events) if m["arm"] == "retrain")
    assert ref_steps > 0 and steps > 0
    assert g.loc["retrain", "retrain_steps_to_end"] > ref_steps
    for name in ALL:
        cost = g.loc[name]
        expected = np.inf if cost["cost_client_steps"] == 0 else ref_steps / cost["cost_client_steps"]
        assert cost["speedup_steps"] == pytest.approx(expected), name
        bytes_ = cost["cost_bytes_up"] + cost["cost_bytes_down"]
        assert cost["speedup_bytes"] == pytest.approx(np.inf if bytes_ == 0 else g.loc["retrain", "retrain_bytes_to_event"] / bytes_)
        assert cost["speedup_wall"] > 0
    assert g.loc["none", "speedup_steps"] == np.inf and g.loc["none", "speedup_wall"] == np.inf
    assert any(e["event"] == "yardstick" for e in events)


@pytest.mark.slow  # two full runs
def test_none_does_not_depend_on_recovery_rounds(tmp_path):
    """recovery_rounds only says how many regular rounds follow a method's
    recovery protocol; for plain FedAvg recovery (``none``'s) nothing changes."""
    from tests.conftest import tiny

    frames = []
    for k in (0, 1, 3):
        sc = tiny(train={"rounds": 5}, events=[{"round": 3, "client": 1}],
                  unlearning={"methods": ["none"], "recovery_rounds": k}, oracle={"n_boot": 10})
        df = fedforget.run(sc, out=tmp_path / f"r{k}").metrics
        df = df[(df.arm == "none") & ~df.metric.str.startswith(("cost_wall", "speedup_wall"))]
        frames.append(df.sort_values(["round", "client", "metric"]).reset_index(drop=True))
    pd.testing.assert_frame_equal(frames[0], frames[1])
    pd.testing.assert_frame_equal(frames[0], frames[2])
    assert (frames[0].metric == "fr").any()


def test_cost_records(withdrawal_run):
    _, res, _ = withdrawal_run
    df = res.metrics
    cost = df[df.metric.str.startswith("cost_")].pivot_table(index="arm", columns="metric", values="value")
    assert set(cost.index) == set(ALL)
    assert (cost["cost_wall_s"] > 0).all()
    for name in ["forsaken", "perturb", "fnn", "federaser", "pga"]:
        assert cost.loc[name, "cost_client_steps"] > 0, name
        assert cost.loc[name, "cost_bytes_down"] > 0 and cost.loc[name, "cost_bytes_up"] > 0, name
    assert cost.loc["federaser", "cost_server_storage_bytes"] > 0
    assert cost.loc["pga", "cost_server_storage_bytes"] > 0
    assert cost.loc["none", "cost_client_steps"] == 0 and cost.loc["none", "cost_bytes_up"] == 0
    assert cost.loc["forsaken", "cost_server_storage_bytes"] == 0  # needs no stored history


def test_witness_is_memorised_by_original_not_by_retrain(withdrawal_run):
    _, res, _ = withdrawal_run
    df = res.metrics
    w = df[(df.metric == "witness_accuracy") & (df["round"] == 5)].set_index("arm").value
    assert w["original"] > 0.2 and w["retrain"] < 0.05


def test_two_events_exclude_both_clients(tiny_scenario, tmp_path):
    sc = tiny_scenario(
        train={"rounds": 4},
        events=[{"round": 2, "client": 1}, {"round": 3, "clients": [2]}],
        unlearning={"methods": ["none", "perturb"], "recovery_rounds": 0},
    )
    res = fedforget.run(sc, out=tmp_path / "r")
    msgs = train_messages(read_events(res.run_dir))
    for m in msgs:
        if m["arm"] in ("none", "perturb") and not m["tag"]:
            r = int(m["round"])
            assert not (r >= 2 and m["client"] == 1) and not (r >= 3 and m["client"] == 2), m
        if m["arm"] == "retrain":
            assert m["client"] not in (1, 2)
    withdraws = [e for e in read_events(res.run_dir) if e["event"] == "withdraw"]
    assert [(w["round"], w["clients"]) for w in withdraws] == [(2, [1]), (3, [2])]
    df = res.metrics
    assert set(df[df.metric == "forget_accuracy"].client) == {1, 2}
    assert {1, 2} < set(df[df.metric == "fr"].client)  # plus two controls


# --- methods through a local handle (no Flower): behaviour of one unlearning step


def _clients(num=3, n=120, d=20, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for c in range(num):
        x = torch.randn(n, d, generator=g)
        y = torch.randint(0, classes, (n,), generator=g)
        out[c] = ClientData(c, x[:100], y[:100], x[100:], y[100:], classes)
    return out


def _trained_mlp(clients):
    from fedforget.models import build_model
    from fedforget.training import train_local

    m = build_model("mlp", (20,), 4, [32, 16], seed=0)
    train_local(m, clients[0].x_train, clients[0].y_train, epochs=30, batch_size=20, lr=0.1, seed=0)
    return m


def test_fnn_method_rank_decays_most_active_neurons_most():
    clients = _clients()
    model = _trained_mlp(clients)
    w_before = model[3].weight.detach().clone()
    # lr 0: its learn round leaves the weights as the decay made them
    fed = LocalFederation(lambda: _trained_mlp(clients), clients, [0], 4, round=3, lr=0.0)
    method = get_method("fnn", {"variant": "rank", "iterations": 1})
    from fedforget.unlearning.fnn import neuron_mean_activations

    acts = neuron_mean_activations(model, clients[0].x_train, ["3"])["3"]
    model, _ = method.unlearn(model, fed)
    ratio = (model[3].weight.detach().norm(dim=1) / w_before.norm(dim=1))
    assert torch.isclose(ratio[acts.argmax()], torch.tensor(np.exp(-1.0), dtype=ratio.dtype), atol=1e-5)
    assert torch.isclose(ratio[acts.argmin()], torch.tensor(np.exp(-1 / 20), dtype=ratio.dtype), atol=1e-5)
    assert (0, "fnn.activations") in fed.asked


def test_registry_lists_every_method_with_defaults():
    assert set(ALL) <= set(registry.methods)
    for name in ALL:
        m = get_method(name)
        assert m.params == registry.methods[name].Params()
        assert registry.methods[name].summary and registry.methods[name].needs
    with pytest.raises(ValueError, match="unknown method 'magic'; expected one of"):
        get_method("magic")


def test_oracle_nonmembers_method_inputs_and_training_data_are_disjoint(tmp_path, monkeypatch, unlearning_step):
    """Data roles: record every sample the unlearning steps read (client ops and
    server guards, through FederatedData.tensors in this one-process engine) and
    check it against splits.parquet: never an audit or test sample; and the
    oracle's non-members are never trained on nor read by a method."""
    from fedforget.data.federated import FederatedData
    from fedforget.protocol import ScenarioRun
    from tests.conftest import tiny

    read: list[np.ndarray] = []
    inside = unlearning_step
    tensors, init = FederatedData.tensors, ScenarioRun.__init__

    def spy_tensors(self, ids):
        if inside["step"]:
            read.append(np.asarray(ids, dtype=np.int64))
        return tensors(self, ids)

    def spy_init(self, *a, **k):
        init(self, *a, **k)
        # the guard's data: what validation_accuracy evaluates on
        read.append(self.fd.server_validation_ids)
        assert torch.equal(self._server_validation[1], torch.from_numpy(self.fd.y[self.fd.server_validation_ids]))

    monkeypatch.setattr(FederatedData, "tensors", spy_tensors)
    monkeypatch.setattr(ScenarioRun, "__init__", spy_init)
    sc = tiny(train={"rounds": 3}, events=[{"round": 2, "client": 1, "witness": "canary"}],
              unlearning={"methods": ALL, "recovery_rounds": 0, "forsaken": {"steps": 2, "meta_iterations": 2}},
              oracle={"n_boot": 5})
    res = fedforget.run(sc, out=tmp_path / "roles")
    splits = pd.read_parquet(res.run_dir / "splits.parquet")
    role = dict(zip(splits.sample_id, splits.role))
    method_inputs = np.unique(np.concatenate(read))
    assert len(method_inputs) > 0
    assert {role[i] for i in method_inputs} <= {"train", "validation", "server_validation"}
    scores = pd.read_parquet(res.run_dir / "scores.parquet")
    nonmembers = set(scores[~scores.member].sample_id)
    assert {role[i] for i in nonmembers} <= {"audit", "test"}
    assert not nonmembers & set(method_inputs.tolist())
    assert not nonmembers & set(splits[splits.role == "train"].sample_id)
