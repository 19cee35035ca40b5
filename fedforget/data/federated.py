"""The federated view of a dataset and every sample's role (DESIGN "Data roles").

Per client: ``train`` (what it trains on), ``validation`` (client-private: its
own checks and reference statistics) and ``audit`` (read by the oracle only:
class-matched non-members and witness non-members). Globally: a small server
``validation`` set (methods' accuracy guards) and the ``test`` set (reported
accuracy and oracle top-ups). ``data.holdout_fraction`` of each client's data is
never trained on; ``data.audit_share`` of that goes to ``audit``, the rest to
``validation``. ``data.server_validation_fraction`` of the test split becomes the
server's validation set.

Methods and the ClientApp handlers they use see one client at a time through a
:class:`ClientDataView`: copies of that client's train and validation rows only,
with no path back to :class:`FederatedData`, the audit parts or the test set.

Everything is derived from the scenario's data section and seed, so every process
(the server, each Ray actor, the oracle) rebuilds identical splits locally and only
ids ever need to be exchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pandas as pd
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
        Global test set (never trained on by anyone; reported accuracy and the
        oracle's top-ups only).
    train_ids, validation_ids, audit_ids : list[np.ndarray]
        Per client: what it trains on, its private validation part, and its
        audit part (the oracle's only).
    server_validation_ids : np.ndarray
        The server's validation set (methods' accuracy guards).
    witness_ids : dict[int, np.ndarray]
        Per withdrawing client with a witness: its planted train samples.
    witness_audit_ids : dict[int, np.ndarray]
        The same number of its audit samples, planted the same way and never
        trained on: the witness non-members.
    """

    x: np.ndarray
    y: np.ndarray
    num_classes: int
    test_ids: np.ndarray
    train_ids: list[np.ndarray]
    validation_ids: list[np.ndarray]
    audit_ids: list[np.ndarray]
    server_validation_ids: np.ndarray
    witness_ids: dict[int, np.ndarray] = field(default_factory=dict)
    witness_labels: dict[int, np.ndarray] = field(default_factory=dict)
    witness_audit_ids: dict[int, np.ndarray] = field(default_factory=dict)
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

    def client_validation(self, cid: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tensors(self.validation_ids[cid])

    def server_validation(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tensors(self.server_validation_ids)

    def test(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tensors(self.test_ids)

    def splits(self) -> pd.DataFrame:
        """Every sample's role: ``sample_id, client, role`` (client NA for the
        global sets); written to the run directory as ``splits.parquet``."""
        parts = [(self.test_ids, None, "test"), (self.server_validation_ids, None, "server_validation")]
        for c in range(self.num_clients):
            parts += [(self.train_ids[c], c, "train"), (self.validation_ids[c], c, "validation"),
                      (self.audit_ids[c], c, "audit")]
        df = pd.DataFrame({
            "sample_id": np.concatenate([ids for ids, _, _ in parts]).astype(np.int64),
            "client": pd.array([c for ids, c, _ in parts for _ in range(len(ids))], dtype="Int64"),
            "role": [r for ids, _, r in parts for _ in range(len(ids))],
        })
        planted = np.concatenate([*self.witness_ids.values(), *self.witness_audit_ids.values(), np.zeros(0, np.int64)])
        df["witness"] = np.isin(df["sample_id"].to_numpy(), planted)
        return df


@dataclass(frozen=True, eq=False)
class ClientDataView:
    """What one client's ClientApp handlers and unlearning operations may read
    (DESIGN "Data roles"): its ``train`` and ``validation`` parts.

    The rows are copies made by :meth:`of`; the view keeps no reference to the
    :class:`FederatedData` it came from, so nothing handed a view can reach an
    audit part, another client's data or the test set.

    Attributes
    ----------
    client, num_classes : int
    train_ids, validation_ids : np.ndarray
        Global ids of the client's train and validation parts (sorted).
    x_train, y_train, x_validation, y_validation : torch.Tensor
        Their rows, on the CPU, in id order.
    """

    client: int
    num_classes: int
    train_ids: np.ndarray
    validation_ids: np.ndarray
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_validation: torch.Tensor
    y_validation: torch.Tensor

    @classmethod
    def of(cls, fd: FederatedData, client: int) -> ClientDataView:
        """The view of ``client``: reads ``fd`` for its train and validation ids only."""
        if not 0 <= client < fd.num_clients:
            raise ValueError(f"partition-id {client} out of range (num_clients = {fd.num_clients})")
        train, validation = fd.train_ids[client].copy(), fd.validation_ids[client].copy()
        return cls(client, fd.num_classes, train, validation, *fd.tensors(train), *fd.tensors(validation))

    def forget_ids(self, event, seed: int) -> np.ndarray:
        """The ids this client must forget after ``event`` (as :func:`forget_ids`)."""
        return _forget_ids(self.train_ids, self.y_train.numpy(), self.num_classes, event, self.client, seed)

    def train_rows(self, ids: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Features and labels of ``ids``, which must all be in its train part."""
        ids = np.asarray(ids, dtype=np.int64)
        pos = np.searchsorted(self.train_ids, ids)
        if ids.size and (pos.max() >= len(self.train_ids) or not np.array_equal(self.train_ids[pos], ids)):
            raise ValueError(f"client {self.client}: ids outside its train part")
        pos = torch.from_numpy(pos)
        return self.x_train[pos], self.y_train[pos]

    def train_without(self, ids: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Its train part minus ``ids`` (the samples its deletions removed)."""
        keep = torch.from_numpy(~np.isin(self.train_ids, ids))
        return self.x_train[keep], self.y_train[keep]


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


def _split_holdout(
    ids: np.ndarray, fraction: float, audit_share: float, seed: int, cid: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(train, validation, audit)`` of one client's partition.

    The train part is the same as before the audit role existed (same
    permutation), so training trajectories do not depend on ``audit_share``.
    Validation keeps at least one sample when there are two or more held out:
    the oracle can top up audit non-members from the test set, a client cannot
    top up its validation part.
    """
    if fraction <= 0 or len(ids) < 2:
        return ids, ids[:0], ids[:0]
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x401D, cid]))
    perm = rng.permutation(ids)
    n_hold = min(max(1, int(round(fraction * len(ids)))), len(ids) - 1)
    held = perm[:n_hold]
    n_audit = min(n_hold - 1, int(round(audit_share * n_hold))) if n_hold >= 2 else 0
    return np.sort(perm[n_hold:]), np.sort(held[n_audit:]), np.sort(held[:n_audit])


def _split_server_validation(test_ids: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(test, server_validation)``: a seeded share of the test split."""
    if fraction <= 0 or len(test_ids) < 2:
        return test_ids, test_ids[:0]
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5E7A]))
    n = min(len(test_ids) - 1, max(1, int(round(fraction * len(test_ids)))))
    chosen = rng.choice(len(test_ids), size=n, replace=False)
    mask = np.zeros(len(test_ids), bool)
    mask[chosen] = True
    return test_ids[~mask], test_ids[mask]


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
        # A dataset's options are the [data] table of its name ([data.synthetic]).
        raw = load_raw(data_cfg["dataset"], seed, data_cfg.get(data_cfg["dataset"]), label=data_cfg.get("label", "label"))
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
    train_ids, validation_ids, audit_ids = [], [], []
    for cid, part in enumerate(parts):
        if len(part) == 0:
            raise ValueError(
                f"partitioner {data_cfg['partitioner']!r} gave client {cid} no data; "
                "use fewer clients or a larger alpha"
            )
        tr, va, au = _split_holdout(part, data_cfg["holdout_fraction"], data_cfg.get("audit_share", 0.5), seed, cid)
        train_ids.append(tr)
        validation_ids.append(va)
        audit_ids.append(au)
    test_ids, server_val = _split_server_validation(test_ids, data_cfg.get("server_validation_fraction", 0.1), seed)
    fd = FederatedData(
        x=raw.x.copy(),
        y=raw.y.copy(),
        num_classes=raw.num_classes,
        test_ids=test_ids,
        train_ids=train_ids,
        validation_ids=validation_ids,
        audit_ids=audit_ids,
        server_validation_ids=server_val,
    )
    if witnesses:
        from fedforget.data.witness import plant_witnesses

        plant_witnesses(fd, witnesses, seed)
    return fd


@lru_cache(maxsize=4)
def _cached(key: str) -> FederatedData:
    spec = json.loads(key)
    return build_federated_data(spec["data"], spec["seed"], spec["witnesses"])


def data_key(scenario) -> str:
    """A stable key of everything a scenario's federated data depends on (data
    settings, data seed, witnesses): equal keys, equal data. It serialises the data
    settings: compute it once per scenario."""
    witnesses = [
        {"client": c, "kind": ev.witness, "fraction": ev.witness_fraction, "label": ev.witness_label}
        for ev in scenario.events
        if ev.witness
        for c in ev.client_ids
    ]
    return json.dumps(
        {"data": scenario.data.model_dump(mode="json"), "seed": scenario.data_seed, "witnesses": witnesses},
        sort_keys=True,
    )


def federated_data_for(scenario, key: str | None = None) -> FederatedData:
    """The (per-process cached) federated data of a scenario; ``key``: its
    :func:`data_key`, when the caller has it already."""
    return _cached(key if key is not None else data_key(scenario))


def forget_ids(fd: FederatedData, event, client: int, seed: int) -> np.ndarray:
    """Global ids of the data ``client`` must have forgotten after ``event``.

    ``withdraw``: its whole train part. ``delete_fraction``: a seeded fraction of
    it (at least one sample). ``delete_class``: its train samples of ``label``.
    """
    train = fd.train_ids[client]
    return _forget_ids(train, fd.y[train], fd.num_classes, event, client, seed)


def _forget_ids(
    train: np.ndarray, train_labels: np.ndarray, num_classes: int, event, client: int, seed: int
) -> np.ndarray:
    """:func:`forget_ids` from the client's own train ids and labels only."""
    if event.kind == "withdraw":
        return train
    if event.kind == "delete_fraction":
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0xDE1E, client, event.round]))
        n = min(len(train) - 1, max(1, int(round(event.fraction * len(train)))))
        return np.sort(rng.choice(train, size=n, replace=False))
    if event.kind == "delete_class":
        if event.label >= num_classes:
            raise ValueError(f"delete_class label {event.label} >= number of classes {num_classes}")
        ids = train[train_labels == event.label]
        if len(ids) == 0:
            raise ValueError(f"client {client} has no train samples of class {event.label} to delete")
        if len(ids) == len(train):
            raise ValueError(f"client {client} holds only class {event.label}: use kind = 'withdraw'")
        return ids
    raise ValueError(f"unknown event kind {event.kind!r}")
