"""The data view methods get (DESIGN "Data roles"): one client's train and
validation rows, with no path to audit parts, other clients or the test set."""

from __future__ import annotations

import dataclasses
import types

import numpy as np
import pandas as pd
import pytest
import torch

import fedforget
from fedforget.data import federated_data_for
from fedforget.data.federated import ClientDataView, FederatedData, forget_ids

ALL = ["forsaken", "perturb", "fnn", "federaser", "pga", "none"]


def _reachable(root) -> list:
    """Every object reachable from ``root`` through instance attributes,
    containers, tensors' storage and arrays' bases (not through classes,
    functions or modules, which reach everything)."""
    seen, todo, out = set(), [root], []
    while todo:
        o = todo.pop()
        if id(o) in seen or isinstance(o, (type, types.ModuleType, types.FunctionType, types.MethodType)):
            continue
        seen.add(id(o))
        out.append(o)
        if isinstance(o, torch.Tensor):
            out.append(o.detach().cpu().numpy())  # its storage (the array's base is a fresh tensor)
        elif isinstance(o, np.ndarray):
            todo += [o.base] if isinstance(o.base, np.ndarray) else []
        elif isinstance(o, dict):
            todo += [*o.keys(), *o.values()]
        elif isinstance(o, (list, tuple, set, frozenset)):
            todo += list(o)
        elif hasattr(o, "__dict__"):
            todo.append(vars(o))
    return out


@pytest.fixture(scope="module")
def fd() -> FederatedData:
    from tests.conftest import tiny

    return federated_data_for(tiny())


def test_view_reaches_only_its_clients_train_and_validation_rows(fd):
    view = ClientDataView.of(fd, 2)
    assert {f.name for f in dataclasses.fields(view)} == {
        "client", "num_classes", "train_ids", "validation_ids", "x_train", "y_train", "x_validation", "y_validation"
    }
    forbidden = [fd, fd.x, fd.y, fd.test_ids, fd.server_validation_ids, *fd.audit_ids, *fd.train_ids,
                 *fd.validation_ids]
    reached = _reachable(view)
    assert not any(o is f for o in reached for f in forbidden)
    arrays = [o for o in reached if isinstance(o, np.ndarray)]
    assert not any(np.shares_memory(a, f) for a in arrays for f in forbidden if isinstance(f, np.ndarray))
    # its ids are its own train and validation parts, and its rows are theirs
    np.testing.assert_array_equal(view.train_ids, fd.train_ids[2])
    np.testing.assert_array_equal(view.validation_ids, fd.validation_ids[2])
    n_rows = len(fd.train_ids[2]) + len(fd.validation_ids[2])
    assert sum(len(a) for a in arrays if a.ndim == len(fd.input_shape) + 1) == n_rows
    np.testing.assert_array_equal(view.x_train.numpy(), fd.x[fd.train_ids[2]])
    np.testing.assert_array_equal(view.y_validation.numpy(), fd.y[fd.validation_ids[2]])


def test_view_serves_only_its_train_ids_and_matches_forget_ids(fd):
    from tests.conftest import tiny

    sc = tiny(events=[
        {"round": 2, "client": 1, "kind": "delete_fraction", "fraction": 0.25},
        {"round": 2, "client": 2, "kind": "delete_class", "label": 3},
        {"round": 3, "client": 3},
    ])
    for ev in sc.events:
        c = ev.client_ids[0]
        view = ClientDataView.of(fd, c)
        ids = view.forget_ids(ev, sc.seed)
        np.testing.assert_array_equal(ids, forget_ids(fd, ev, c, sc.seed))
        np.testing.assert_array_equal(view.train_rows(ids)[0].numpy(), fd.x[ids])
        kept = np.setdiff1d(fd.train_ids[c], ids)
        np.testing.assert_array_equal(view.train_without(ids)[1].numpy(), fd.y[kept])
    view = ClientDataView.of(fd, 2)
    for outside in (fd.audit_ids[2][:1], fd.validation_ids[2][:1], fd.test_ids[:1], fd.train_ids[1][:1]):
        with pytest.raises(ValueError, match="outside its train part"):
            view.train_rows(outside)
    with pytest.raises(ValueError, match="out of range"):
        ClientDataView.of(fd, fd.num_clients)


def test_every_method_runs_on_views_only(tmp_path, monkeypatch, unlearning_step):
    """A run of every method, a withdrawal and a class deletion: during the
    unlearning steps every sample a ClientApp handler reads comes through a
    ClientDataView, and every view holds train or validation samples only."""
    from tests.conftest import tiny

    views: list[ClientDataView] = []
    outside: list[np.ndarray] = []
    inside = unlearning_step
    inside["view"] = 0
    tensors, of = FederatedData.tensors, ClientDataView.of.__func__

    def spy_tensors(self, ids):
        if inside["step"] and not inside["view"]:
            outside.append(np.asarray(ids))
        return tensors(self, ids)

    def spy_of(cls, fd, client):
        inside["view"] += 1
        try:
            view = of(cls, fd, client)
        finally:
            inside["view"] -= 1
        if inside["step"]:
            views.append(view)
        return view

    monkeypatch.setattr(FederatedData, "tensors", spy_tensors)
    monkeypatch.setattr(ClientDataView, "of", classmethod(spy_of))
    sc = tiny(train={"rounds": 3},
              events=[{"round": 2, "client": 1}, {"round": 3, "client": 2, "kind": "delete_class", "label": 3}],
              unlearning={"methods": ALL, "recovery_rounds": 0, "forsaken": {"steps": 2, "meta_iterations": 2}},
              oracle={"n_boot": 5})
    res = fedforget.run(sc, out=tmp_path / "views")
    assert outside == []
    assert {v.client for v in views} >= {1, 2}
    role = pd.read_parquet(res.run_dir / "splits.parquet").set_index("sample_id").role
    read = np.concatenate([np.r_[v.train_ids, v.validation_ids] for v in views])
    assert set(role[read]) <= {"train", "validation"}
    steps = res.metrics[res.metrics.metric == "cost_client_steps"]
    assert {(arm, rnd) for arm, rnd in zip(steps.arm, steps["round"])} >= {(m, r) for m in ALL for r in (2, 3)}
