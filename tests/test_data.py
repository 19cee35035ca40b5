"""Partitioning and splits: deterministic, disjoint, with stable global ids."""

import numpy as np
import pytest

from fedforget.data import DataUnavailableError, build_federated_data
from fedforget.data.datasets import arrays_from_hf, load_hf


def cfg(**kw):
    base = dict(
        dataset="digits", partitioner="iid", num_clients=6, holdout_fraction=0.2, test_fraction=0.2,
        alpha=0.5, classes_per_client=2, shards_per_client=2,
        synthetic=dict(samples=600, features=30, informative=10, classes=5),
    )
    base.update(kw)
    return base


def parts(fd):
    return [t.tolist() for t in fd.train_ids], [h.tolist() for h in fd.holdout_ids], fd.test_ids.tolist()


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
    all_ids = [fd.test_ids] + fd.train_ids + fd.holdout_ids
    flat = np.concatenate(all_ids)
    assert len(flat) == len(set(flat.tolist())) == len(fd.y)  # disjoint and complete
    for tr, ho in zip(fd.train_ids, fd.holdout_ids):
        assert not set(tr.tolist()) & set(ho.tolist())
        assert len(ho) >= 1
        assert abs(len(ho) / (len(tr) + len(ho)) - 0.2) < 0.1


def test_pathological_clients_see_few_classes():
    fd = build_federated_data(cfg(partitioner="pathological", classes_per_client=2), seed=0)
    for tr, ho in zip(fd.train_ids, fd.holdout_ids):
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
    assert len(fd.test_ids) == 30 and set(fd.test_ids.tolist()) == set(range(120, 150))


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
    others = np.setdiff1d(np.arange(len(fd.y)), w)
    assert np.array_equal(fd.y[others], clean.y[others])
