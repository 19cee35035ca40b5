"""The federated view of a dataset: a global test set and, per client, a train
part and a held-out part it never trains on.

Everything is derived from the scenario's data section and seed, so every process
(the server, each Ray actor, the oracle) rebuilds identical splits locally and only
ids ever need to be exchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch

from fedforget.data.datasets import RawDataset, load_raw
from fedforget.data.partition import partition_ids


@dataclass
class FederatedData:
    """Arrays of one scenario's data and the index sets that split them.

    Attributes
    ----------
    x, y : np.ndarray
        All samples; position = global sample id.
    num_classes : int
    test_ids : np.ndarray
        Global test set (never trained on by anyone).
    train_ids, holdout_ids : list[np.ndarray]
        Per client: what it trains on, and its held-out part (the oracle's
        class-matched non-members).
    witness_ids : dict[int, np.ndarray]
        Per withdrawing client with a witness: its planted samples.
    """

    x: np.ndarray
    y: np.ndarray
    num_classes: int
    test_ids: np.ndarray
    train_ids: list[np.ndarray]
    holdout_ids: list[np.ndarray]
    witness_ids: dict[int, np.ndarray] = field(default_factory=dict)
    witness_labels: dict[int, np.ndarray] = field(default_factory=dict)
    x_test_triggered: np.ndarray | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def num_clients(self) -> int:
        return len(self.train_ids)

    def tensors(self, ids: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Features and labels of the given global ids as CPU tensors."""
        ids = np.asarray(ids, dtype=np.int64)
        return torch.from_numpy(self.x[ids]), torch.from_numpy(self.y[ids])

    def client_train(self, cid: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tensors(self.train_ids[cid])

    def client_holdout(self, cid: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tensors(self.holdout_ids[cid])

    def test(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tensors(self.test_ids)


def _split_test(raw: RawDataset, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    ids = np.arange(len(raw.y), dtype=np.int64)
    if raw.test_mask is not None:
        return ids[~raw.test_mask], ids[raw.test_mask]
    counts = np.bincount(raw.y)
    stratify = raw.y if counts[counts > 0].min() >= 2 else None
    pool, test = train_test_split(
        ids, test_size=test_fraction, random_state=seed, stratify=stratify
    )
    return np.sort(pool), np.sort(test)


def _split_holdout(ids: np.ndarray, fraction: float, seed: int, cid: int) -> tuple[np.ndarray, np.ndarray]:
    if fraction <= 0 or len(ids) < 2:
        return ids, ids[:0]
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x401D, cid]))
    perm = rng.permutation(ids)
    n_hold = min(max(1, int(round(fraction * len(ids)))), len(ids) - 1)
    return np.sort(perm[n_hold:]), np.sort(perm[:n_hold])


def build_federated_data(
    data_cfg: dict,
    seed: int,
    witnesses: list[dict] | None = None,
    raw: RawDataset | None = None,
) -> FederatedData:
    """Split a dataset for a federation.

    Parameters
    ----------
    data_cfg : dict
        The scenario's ``[data]`` table (``DataConfig.model_dump()``).
    seed : int
        Scenario seed: test split, partitioning and held-out splits derive from it.
    witnesses : list of dict, optional
        ``{"client", "kind", "fraction", "label"}`` per withdrawing client with a
        witness (see :mod:`fedforget.data.witness`).
    raw : RawDataset, optional
        Pre-loaded data (tests pass in-memory data here).
    """
    if raw is None:
        raw = load_raw(data_cfg["dataset"], seed, data_cfg.get("synthetic"))
    pool, test_ids = _split_test(raw, data_cfg["test_fraction"], seed)
    n_clients = data_cfg["num_clients"]
    if len(pool) < 2 * n_clients:
        raise ValueError(
            f"data.num_clients = {n_clients} is too many for {len(pool)} training samples"
        )
    parts = partition_ids(
        pool,
        raw.y[pool],
        data_cfg["partitioner"],
        n_clients,
        seed,
        alpha=data_cfg.get("alpha", 0.5),
        classes_per_client=data_cfg.get("classes_per_client", 2),
        shards_per_client=data_cfg.get("shards_per_client", 2),
    )
    train_ids, holdout_ids = [], []
    for cid, part in enumerate(parts):
        if len(part) == 0:
            raise ValueError(
                f"partitioner {data_cfg['partitioner']!r} gave client {cid} no data; "
                "use fewer clients or a larger alpha"
            )
        tr, ho = _split_holdout(part, data_cfg["holdout_fraction"], seed, cid)
        train_ids.append(tr)
        holdout_ids.append(ho)
    fd = FederatedData(
        x=raw.x.copy(),
        y=raw.y.copy(),
        num_classes=raw.num_classes,
        test_ids=test_ids,
        train_ids=train_ids,
        holdout_ids=holdout_ids,
    )
    if witnesses:
        from fedforget.data.witness import plant_witnesses

        plant_witnesses(fd, witnesses, seed)
    return fd


@lru_cache(maxsize=4)
def _cached(key: str) -> FederatedData:
    spec = json.loads(key)
    return build_federated_data(spec["data"], spec["seed"], spec["witnesses"])


def federated_data_for(scenario) -> FederatedData:
    """The (per-process cached) federated data of a scenario."""
    witnesses = [
        {
            "client": c,
            "kind": ev.witness,
            "fraction": ev.witness_fraction,
            "label": ev.witness_label,
        }
        for ev in scenario.events
        if ev.witness
        for c in ev.client_ids
    ]
    key = json.dumps(
        {"data": scenario.data.model_dump(mode="json"), "seed": scenario.seed, "witnesses": witnesses},
        sort_keys=True,
    )
    return _cached(key)


def forget_ids(fd: FederatedData, event, client: int, seed: int) -> np.ndarray:
    """Global ids of the data ``client`` must have forgotten after ``event``.

    ``withdraw``: its whole train part. ``delete_fraction``: a seeded fraction of
    it (at least one sample). ``delete_class``: its train samples of ``label``.
    """
    train = fd.train_ids[client]
    if event.kind == "withdraw":
        return train
    if event.kind == "delete_fraction":
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0xDE1E, client, event.round]))
        n = min(len(train) - 1, max(1, int(round(event.fraction * len(train)))))
        return np.sort(rng.choice(train, size=n, replace=False))
    if event.kind == "delete_class":
        if event.label >= fd.num_classes:
            raise ValueError(f"delete_class label {event.label} >= number of classes {fd.num_classes}")
        ids = train[fd.y[train] == event.label]
        if len(ids) == 0:
            raise ValueError(f"client {client} has no train samples of class {event.label} to delete")
        if len(ids) == len(train):
            raise ValueError(f"client {client} holds only class {event.label}: use kind = 'withdraw'")
        return ids
    raise ValueError(f"unknown event kind {event.kind!r}")
