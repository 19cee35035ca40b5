"""Seeds, client sampling and arm definitions: the pure rules of a scenario's
timeline (no Flower).

Matched seeds (DESIGN rule 2): every random choice derives from the scenario seed
and a tuple of names/numbers through ``numpy.random.SeedSequence``. Client sampling
depends on (seed, round) only, never on the arm, so the retrain arm and every
unlearning arm sample exactly the clients the original run sampled, minus the ones
they exclude. Local data order depends on (seed, round, client), so a client
trains on the same batches in every arm.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

ORIGINAL = "original"
RETRAIN = "retrain"


def _key(part: int | str) -> int:
    if isinstance(part, str):
        return zlib.crc32(part.encode())
    return int(part) & 0xFFFFFFFF


def derive_seed(seed: int, *parts: int | str) -> int:
    """A 31-bit seed derived from the scenario seed and a path of names/numbers."""
    ss = np.random.SeedSequence([int(seed)] + [_key(p) for p in parts])
    return int(ss.generate_state(1)[0] & 0x7FFFFFFF)


def rng_for(seed: int, *parts: int | str) -> np.random.Generator:
    return np.random.default_rng(derive_seed(seed, *parts))


def sample_clients(
    seed: int,
    round_tag: int | str,
    num_clients: int,
    fraction: float,
    exclude: set[int] | frozenset[int] = frozenset(),
) -> list[int]:
    """Clients (partition ids) that train in a round.

    The sample is drawn from *all* clients with a generator seeded by
    (seed, round), then the excluded clients are removed: an arm that excludes
    clients trains the same others as the original run.
    """
    k = max(1, int(round(fraction * num_clients)))
    rng = rng_for(seed, "sample", round_tag)
    chosen = np.sort(rng.choice(num_clients, size=k, replace=False))
    return [int(c) for c in chosen if int(c) not in exclude]


def client_fails(seed: int, round_tag: int, client: int, rate: float) -> bool:
    """Whether ``client``'s train reply fails in regular round ``round_tag``
    (``runtime.client_failure_rate``): a draw from (seed, round, client) only,
    so every arm sees the same failures."""
    return rate > 0 and float(rng_for(seed, "failure", round_tag, client).random()) < rate


def local_seed(seed: int, round_tag: int | str, client: int) -> int:
    """Seed of a client's local data order in a round (independent of the arm)."""
    return derive_seed(seed, "local", round_tag, client)


@dataclass
class Arm:
    """One trajectory of the global model.

    Attributes
    ----------
    name : str
        ``original``, ``retrain`` or a method name.
    method : str or None
        The unlearning method the arm applies at each withdrawal event.
    excluded : set of int
        Clients that no longer receive training messages in this arm.
    dropped : set of int
        Indices of the deletion events in force: the clients concerned train
        without the deleted samples.
    """

    name: str
    method: str | None = None
    excluded: set[int] = field(default_factory=set)
    dropped: set[int] = field(default_factory=set)


def initial_arms(
    methods: list[str], withdrawn: list[int], has_events: bool, deletions: list[int] | None = None
) -> list[Arm]:
    """The arms that exist from round 1: ``original`` and, with events, ``retrain``
    (never trained on withdrawn clients nor on deleted samples).

    Method arms branch from ``original`` at the first event, so they are not
    created here.
    """
    arms = [Arm(ORIGINAL)]
    if has_events:
        arms.append(Arm(RETRAIN, excluded=set(withdrawn), dropped=set(deletions or [])))
    return arms
