"""Events that delete part of a client's data (delete_fraction, delete_class):
the client keeps training on the rest, every arm forgets the deleted samples."""

import numpy as np
import pandas as pd
import pytest

import fedforget
from fedforget.config import ConfigError, scenario_from_dict
from fedforget.data.federated import forget_ids
from fedforget.results import read_events


def base(**over):
    d = {"name": "d", "data": {"dataset": "digits", "num_clients": 4}, "train": {"rounds": 4}}
    d.update(over)
    return d


@pytest.mark.parametrize(
    "event, needle",
    [
        ({"round": 2, "client": 1, "kind": "delete_fraction"}, "'fraction' is required"),
        ({"round": 2, "client": 1, "kind": "delete_class"}, "'label' is required"),
        ({"round": 2, "client": 1, "kind": "withdraw", "fraction": 0.2}, "only allowed with"),
        ({"round": 2, "client": 1, "kind": "delete_fraction", "fraction": 1.5}, "fraction"),
        ({"round": 2, "client": 1, "kind": "delete_class", "label": 3, "witness": "canary"}, "witness"),
    ],
)
def test_deletion_event_validation(event, needle):
    with pytest.raises(ConfigError, match=needle):
        scenario_from_dict(base(events=[event]))


def test_lira_refuses_deletions_and_a_client_in_two_events():
    ev = {"round": 2, "client": 1, "kind": "delete_class", "label": 3}
    with pytest.raises(ConfigError, match="withdraw events only"):
        scenario_from_dict(base(events=[ev], oracle={"attack": "lira"}))
    with pytest.raises(ConfigError, match="appears in two events"):
        scenario_from_dict(base(events=[ev, {"round": 3, "client": 1, "kind": "delete_fraction", "fraction": 0.1}]))


def test_forget_ids_of_each_kind():
    from tests.conftest import tiny

    sc = tiny(events=[
        {"round": 2, "client": 1, "kind": "delete_fraction", "fraction": 0.25},
        {"round": 2, "client": 2, "kind": "delete_class", "label": 3},
        {"round": 3, "client": 3},
    ])
    from fedforget.data import federated_data_for

    fd = federated_data_for(sc)
    f = forget_ids(fd, sc.events[0], 1, sc.seed)
    assert set(f) < set(fd.train_ids[1]) and abs(len(f) - 0.25 * len(fd.train_ids[1])) <= 1
    assert np.array_equal(f, forget_ids(fd, sc.events[0], 1, sc.seed))  # seeded
    c = forget_ids(fd, sc.events[1], 2, sc.seed)
    assert (fd.y[c] == 3).all() and set(c) == set(fd.train_ids[2][fd.y[fd.train_ids[2]] == 3])
    assert np.array_equal(forget_ids(fd, sc.events[2], 3, sc.seed), fd.train_ids[3])


def test_client_trains_without_deleted_samples_and_forgets_them():
    from fedforget.data import federated_data_for
    from fedforget.flower.client_app import resolved
    from tests.conftest import tiny

    sc = tiny(events=[{"round": 2, "client": 1, "kind": "delete_class", "label": 3}])
    fd = federated_data_for(sc)
    deleted = forget_ids(fd, sc.events[0], 1, sc.seed)
    rs = resolved(sc)
    full = rs.data(1)
    assert len(full.y_train) == len(fd.train_ids[1])
    kept = rs.data(1, drop=(0,), forget_event=0)
    assert len(kept.y_train) == len(fd.train_ids[1]) - len(deleted) and not (kept.y_train == 3).any()
    assert len(kept.y_forget) == len(deleted) and (kept.y_forget == 3).all()
    other = rs.data(2, drop=(0,))  # the event does not concern client 2
    assert len(other.y_train) == len(fd.train_ids[2])
    # the self-checks' non-members: the validation samples of the deleted class
    assert kept.forget_label == 3 and full.forget_label is None
    val = fd.validation_ids[1]
    np.testing.assert_array_equal(kept.membership_reference()[1].numpy(), fd.y[val][fd.y[val] == 3])
    assert len(full.membership_reference()[1]) == len(val)


def _label_only_model():
    """Logits that ignore the input and favour class 0: a sample's loss depends
    on its label only, so class 0 looks like a member to a loss attack."""
    import torch

    model = torch.nn.Linear(6, 4)
    torch.nn.init.zeros_(model.weight)
    with torch.no_grad():
        model.bias.copy_(torch.tensor([4.0, 0.0, 0.0, 0.0]))
    return model


def _deleting_client(forget_label, val_labels):
    """Forget set: 10 class-0 samples; validation of the given labels."""
    import torch

    from fedforget.unlearning import ClientData

    g = torch.Generator().manual_seed(0)
    y_val = torch.tensor(val_labels)
    x_f, x_v = torch.randn(10, 6, generator=g), torch.randn(len(y_val), 6, generator=g)
    y_f = torch.zeros(10, dtype=torch.long)
    return ClientData(1, x_f, y_f, x_v, y_val, 4, x_forget=x_f, y_forget=y_f, forget_label=forget_label)


def test_self_check_of_a_class_deletion_compares_the_class_with_itself():
    from fedforget.unlearning import CLIENT_OPS

    val = [0] * 5 + [1, 2, 3] * 5
    check = CLIENT_OPS["self_check"]
    # Same class, same loss: nothing to tell members from non-members.
    assert check(_label_only_model(), _deleting_client(0, val), {}, {}).metrics["auc"] == 0.5
    # Against the whole validation part the class difference reads as membership.
    whole = check(_label_only_model(), _deleting_client(None, val), {}, {}).metrics["auc"]
    assert whole == pytest.approx((5 * 0.5 + 15 * 1.0) / 20)
    with pytest.raises(ValueError, match="0 samples of the deleted class 0"):
        check(_label_only_model(), _deleting_client(0, [1, 2, 3] * 5), {}, {})


@pytest.fixture(scope="module")
def deletion_run(tmp_path_factory):
    from tests.test_membership import memorising

    sc = memorising(
        events=[{"round": 4, "client": 1, "kind": "delete_fraction", "fraction": 0.5}],
        unlearning={"methods": ["none", "forsaken", "perturb"], "recovery_rounds": 1, "forsaken": {"steps": 6}},
    )
    return sc, fedforget.run(sc, out=tmp_path_factory.mktemp("d") / "run")


def test_deleting_client_keeps_training_on_the_rest(deletion_run):
    sc, res = deletion_run
    msgs = [e for e in read_events(res.run_dir) if e["event"] == "message" and e["type"] == "train"]
    to1 = [m for m in msgs if m["client"] == 1]
    assert {tuple(m["drop"]) for m in to1 if m["arm"] == "original"} == {()}
    assert {tuple(m["drop"]) for m in to1 if m["arm"] == "retrain"} == {(0,)}  # from round 1
    for arm in ("none", "forsaken", "perturb"):
        after = [m for m in to1 if m["arm"] == arm]
        assert after and {tuple(m["drop"]) for m in after} == {(0,)}  # still trains, without the deleted half
    assert [e for e in read_events(res.run_dir) if e["event"] == "delete"][0]["forget_sizes"][0] > 0


def test_oracle_members_are_the_deleted_samples(deletion_run):
    sc, res = deletion_run
    from fedforget.data import federated_data_for

    fd = federated_data_for(sc)
    deleted = set(forget_ids(fd, sc.events[0], 1, sc.seed).tolist())
    scores = pd.read_parquet(res.run_dir / "scores.parquet")
    one = scores[(scores.client == 1) & (scores.arm == "original") & (scores["round"] == 3)]
    assert set(one[one.member].sample_id) == deleted
    df = res.metrics
    auc = df[(df.metric == "mia_auc") & (df.client == 1)].set_index(["arm", "round"]).value
    assert auc[("original", 3)] > 0.6 and auc[("retrain", 5)] < auc[("original", 5)] - 0.1
    n = df[(df.metric == "n_forget") & (df.client == 1)].value
    assert (n == len(deleted)).all()


def test_report_covers_the_deleting_client(deletion_run):
    _, res = deletion_run
    html = (res.run_dir / "report.html").read_text()
    assert "Client 1 (delete_fraction at round 4" in html and "forgetting rate (FR) vs round" in html
