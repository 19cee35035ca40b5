"""Partitioning with flwr-datasets partitioners, always seeded by the scenario.

The partitioners run on an in-memory ``datasets.Dataset`` of (global id, label)
rows, so embedded and Hub data are partitioned the same way and each partition is
returned as the global ids of its samples.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


PartitionerBuilder = Callable[..., Any]
#: Partitioner name -> builder ``(num_partitions, seed, **scenario keys)``.
PARTITIONERS: dict[str, PartitionerBuilder] = {}


def register_partitioner(name: str) -> Callable[[PartitionerBuilder], PartitionerBuilder]:
    def deco(fn: PartitionerBuilder) -> PartitionerBuilder:
        if name in PARTITIONERS:
            raise ValueError(f"partitioner {name!r} registered twice")
        PARTITIONERS[name] = fn
        return fn

    return deco


@register_partitioner("iid")
def _iid(num_partitions: int, seed: int, **_: Any):
    from flwr_datasets import partitioner as P

    # IidPartitioner takes contiguous shards and has no seed: the pool is
    # shuffled with the scenario seed before it is handed over.
    return P.IidPartitioner(num_partitions=num_partitions)


@register_partitioner("dirichlet")
def _dirichlet(num_partitions: int, seed: int, *, alpha: float = 0.5, **_: Any):
    from flwr_datasets import partitioner as P

    return P.DirichletPartitioner(
        num_partitions=num_partitions, partition_by="label", alpha=alpha,
        min_partition_size=2, self_balancing=False, seed=seed,
    )


@register_partitioner("pathological")
def _pathological(num_partitions: int, seed: int, *, classes_per_client: int = 2, **_: Any):
    from flwr_datasets import partitioner as P

    return P.PathologicalPartitioner(
        num_partitions=num_partitions, partition_by="label",
        num_classes_per_partition=classes_per_client, class_assignment_mode="random", seed=seed,
    )


@register_partitioner("shard")
def _shard(num_partitions: int, seed: int, *, shards_per_client: int = 2, **_: Any):
    from flwr_datasets import partitioner as P

    return P.ShardPartitioner(
        num_partitions=num_partitions, partition_by="label",
        num_shards_per_partition=shards_per_client, seed=seed,
    )


def make_partitioner(name: str, num_partitions: int, seed: int, **kwargs: Any):
    """Build a registered flwr-datasets partitioner by scenario name."""
    if name not in PARTITIONERS:
        raise ValueError(f"unknown partitioner {name!r}; known: {', '.join(sorted(PARTITIONERS))}")
    return PARTITIONERS[name](num_partitions, seed, **kwargs)


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
