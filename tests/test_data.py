"""Partitioning and splits: deterministic, disjoint, with stable global ids."""

import numpy as np
import pytest

from fedforget.data import DataUnavailableError, build_federated_data
from fedforget.data.datasets import arrays_from_hf, load_hf


def _holdout(fd):
    """Per client, everything it never trains on (validation + audit)."""
    return [np.union1d(v, a) for v, a in zip(fd.validation_ids, fd.audit_ids, strict=True)]

def cfg(**kw):
    base = dict(
        dataset="digits", partitioner="iid", num_clients=6, holdout_fraction=0.2, test_fraction=0.2,
        alpha=0.5, classes_per_client=2, shards_per_client=2,
        synthetic=dict(samples=600, features=30, informative=10, classes=5),
    )
    base.update(kw)
    return base


def parts(fd):
    return [t.tolist() for t in fd.train_ids], [h.tolist() for h in _holdout(fd)], fd.test_ids.tolist()


@pytest.mark.parametrize("partitioner", ["iid", "dirichlet", "pathological", "shard"])
def test_partitions_deterministic_and_seed_dependent(partitioner):
    a = build_federated_data(cfg(partitioner=partitioner), seed=1)
    b = build_federated_data(cfg(partitioner=partitioner), seed=1)
    c = build_federated_data(cfg(partitioner=partitioner), seed=2)
    assert parts(a) == parts(b)
    assert parts(a) != parts(c)


@pytest.mark.parametrize("dataset", ["digits", "synthetic"])
def test_splits_disjoint_and_cover_the_pool(dataset):
    fd = build_federated_data(cfg(dataset=dataset, partitioner="dirichlet"), seed=0)
    splits = fd.splits()
    # Every sample has exactly one role (disjoint and complete).
    assert splits.sample_id.is_unique and sorted(splits.sample_id) == list(range(len(fd.y)))
    assert set(splits.role) == {"train", "validation", "audit", "server_validation", "test"}
    for c, (tr, ho) in enumerate(zip(fd.train_ids, _holdout(fd))):
        assert len(ho) >= 1
        assert abs(len(ho) / (len(tr) + len(ho)) - 0.2) < 0.1
        va, au = fd.validation_ids[c], fd.audit_ids[c]
        assert len(va) >= 1 and abs(len(au) - len(va)) <= 1  # default audit_share 0.5
        mine = splits[splits.client == c]
        assert set(mine[mine.role == "audit"].sample_id) == set(au.tolist())
    n_test = len(fd.test_ids) + len(fd.server_validation_ids)
    assert abs(len(fd.server_validation_ids) / n_test - 0.1) < 0.02


def test_audit_share_moves_samples_between_validation_and_audit_only():
    a = build_federated_data(cfg(audit_share=0.5), seed=0)
    b = build_federated_data(cfg(audit_share=0.25), seed=0)
    for c in range(a.num_clients):
        assert np.array_equal(a.train_ids[c], b.train_ids[c])  # training does not depend on it
        assert np.array_equal(_holdout(a)[c], _holdout(b)[c])
        assert len(b.audit_ids[c]) < len(a.audit_ids[c])


def test_pathological_clients_see_few_classes():
    fd = build_federated_data(cfg(partitioner="pathological", classes_per_client=2), seed=0)
    for tr, ho in zip(fd.train_ids, _holdout(fd)):
        assert len(set(fd.y[np.concatenate([tr, ho])].tolist())) <= 2


def test_global_ids_index_the_arrays():
    fd = build_federated_data(cfg(), seed=0)
    x, y = fd.client_train(2)
    assert np.array_equal(y.numpy(), fd.y[fd.train_ids[2]])
    from fedforget.data.datasets import load_digits

    raw = load_digits()
    assert np.array_equal(raw.x[fd.train_ids[2]], x.numpy())


def test_hf_path_on_in_memory_dataset():
    import datasets

    rng = np.random.default_rng(0)
    def split(n):
        return datasets.Dataset.from_dict(
            {"image": rng.integers(0, 256, size=(n, 6, 6)).tolist(), "label": rng.integers(0, 3, size=n).tolist()}
        )
    raw = arrays_from_hf(datasets.DatasetDict({"train": split(120), "test": split(30)}))
    assert raw.x.shape == (150, 1, 6, 6) and raw.x.max() <= 1.0
    fd = build_federated_data(cfg(dataset="hf:dummy", num_clients=3), seed=0, raw=raw)
    assert set(fd.test_ids.tolist()) | set(fd.server_validation_ids.tolist()) == set(range(120, 150))
    assert len(fd.server_validation_ids) == 3


def test_hf_offline_gives_clear_error(monkeypatch):
    import datasets
    import huggingface_hub

    # The Hub libraries read these at import time; patch the live flags too.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    with pytest.raises(DataUnavailableError, match="Hugging Face Hub"):
        load_hf("fedforget-test/does-not-exist", seed=0)


def test_witness_canary_relabels_only_the_client():
    clean = build_federated_data(cfg(), seed=0)
    fd = build_federated_data(cfg(), seed=0, witnesses=[{"client": 1, "kind": "canary", "fraction": 0.1, "label": 0}])
    w = fd.witness_ids[1]
    assert set(w.tolist()) <= set(fd.train_ids[1].tolist())
    assert np.all(fd.y[w] != clean.y[w])
    # The same number planted the same way on audit samples (the witness non-members).
    wa = fd.witness_audit_ids[1]
    assert len(wa) == min(len(w), len(fd.audit_ids[1])) and set(wa.tolist()) <= set(fd.audit_ids[1].tolist())
    assert np.all(fd.y[wa] != clean.y[wa])
    others = np.setdiff1d(np.arange(len(fd.y)), np.r_[w, wa])
    assert np.array_equal(fd.y[others], clean.y[others])
    assert fd.splits().query("witness").sample_id.sort_values().tolist() == sorted(np.r_[w, wa].tolist())


def test_hf_fails_fast_without_the_hub(monkeypatch):
    """No connection (and HF_HUB_OFFLINE unset): one clear error at once, not
    after the Hub client's retries."""
    import socket
    import time

    def refuse(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "create_connection", refuse)
    t0 = time.monotonic()
    with pytest.raises(DataUnavailableError, match="cannot be reached .*network is unreachable"):
        load_hf("fedforget-test/does-not-exist", seed=0)
    assert time.monotonic() - t0 < 2


def test_hf_offline_names_the_variable_and_a_local_path_never_blames_the_hub(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataUnavailableError, match="HF_HUB_OFFLINE is set"):
        load_hf("fedforget-test/does-not-exist", seed=0)
    (tmp_path / "notes.txt").write_text("not a dataset")
    with pytest.raises(DataUnavailableError) as err:
        load_hf(str(tmp_path), seed=0)
    assert f"the local dataset at {tmp_path}" in str(err.value) and "Hub" not in str(err.value)
