"""Partitioning with flwr-datasets partitioners, always seeded by the scenario.

The partitioners run on an in-memory ``datasets.Dataset`` of (global id, label)
rows, so embedded and Hub data are partitioned the same way and each partition is
returned as the global ids of its samples.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from fedforget import registry

#: A builder ``(num_partitions, seed, **scenario keys)``, registered by name in
#: :data:`fedforget.registry.partitioners`.
PartitionerBuilder = Callable[..., Any]


@registry.partitioners.register("iid")
def _iid(num_partitions: int, seed: int, **_: Any):
    """Equal-sized random parts (the pool is shuffled with the scenario seed)."""
    from flwr_datasets import partitioner as P

    # IidPartitioner takes contiguous shards and has no seed: the pool is
    # shuffled with the scenario seed before it is handed over.
    return P.IidPartitioner(num_partitions=num_partitions)


@registry.partitioners.register("dirichlet")
def _dirichlet(num_partitions: int, seed: int, *, alpha: float = 0.5, **_: Any):
    """Label skew: class shares per client drawn from Dirichlet(data.alpha)."""
    from flwr_datasets import partitioner as P

    return P.DirichletPartitioner(
        num_partitions=num_partitions, partition_by="label", alpha=alpha,
        min_partition_size=2, self_balancing=False, seed=seed,
    )


@registry.partitioners.register("pathological")
def _pathological(num_partitions: int, seed: int, *, classes_per_client: int = 2, **_: Any):
    """Each client holds data.classes_per_client labels only."""
    from flwr_datasets import partitioner as P

    return P.PathologicalPartitioner(
        num_partitions=num_partitions, partition_by="label",
        num_classes_per_partition=classes_per_client, class_assignment_mode="random", seed=seed,
    )


@registry.partitioners.register("shard")
def _shard(num_partitions: int, seed: int, *, shards_per_client: int = 2, **_: Any):
    """Label-sorted shards, data.shards_per_client per client (McMahan et al.)."""
    from flwr_datasets import partitioner as P

    return P.ShardPartitioner(
        num_partitions=num_partitions, partition_by="label",
        num_shards_per_partition=shards_per_client, seed=seed,
    )


def make_partitioner(name: str, num_partitions: int, seed: int, **kwargs: Any):
    """Build a registered flwr-datasets partitioner by scenario name."""
    return registry.partitioners.get(name)(num_partitions, seed, **kwargs)


def partition_ids(
    ids: np.ndarray,
    labels: np.ndarray,
    partitioner_name: str,
    num_partitions: int,
    seed: int,
    **kwargs,
) -> list[np.ndarray]:
    """Split ``ids`` into ``num_partitions`` parts; returns sorted global ids per part."""
    import datasets

    order = np.random.default_rng(np.random.SeedSequence([seed, 0x9A27])).permutation(len(ids))
    ds = datasets.Dataset.from_dict(
        {"id": ids[order].astype(np.int64), "label": labels[order].astype(np.int64)}
    )
    part = make_partitioner(partitioner_name, num_partitions, seed, **kwargs)
    part.dataset = ds
    out = []
    for pid in range(num_partitions):
        p = part.load_partition(pid)
        out.append(np.sort(np.asarray(p["id"], dtype=np.int64)))
    return out
