"""Witness data: memorable samples planted in a withdrawing client's train part.

``canary``: a fraction of the client's train samples get a wrong random label.
``backdoor``: a fraction get a trigger pattern and the target label; forgetting is
checked on triggered test samples (Halimi et al.'s and IBM's federated-unlearning
check). A model that never saw the client predicts the planted labels at about
chance, so the share predicted as planted is a direct memory probe.

The same procedure plants the same number of samples (as many as there are, if
fewer) in the client's ``audit`` part, which nobody trains on: the witness
non-members. Membership metrics on the witness compare planted members with
planted non-members, so a model that never saw the client scores near 0.5.
"""

from __future__ import annotations

import numpy as np


def apply_trigger(x: np.ndarray) -> np.ndarray:
    """Stamp the backdoor trigger on a batch (a copy is returned).

    Images: a 3x3 (or smaller) bright square in the bottom-right corner of every
    channel. Tabular: the last 5% of features (at least 2) set to +4 std.
    """
    x = x.copy()
    if x.ndim == 4:
        k = max(2, min(3, x.shape[-1] // 4))
        x[:, :, -k:, -k:] = 1.0
    else:
        k = max(2, x.shape[1] // 20)
        x[:, -k:] = 4.0
    return x


def _plant(fd, ids: np.ndarray, kind: str, target: int, rng: np.random.Generator) -> np.ndarray:
    """Plant the witness on ``ids`` in place; return the planted labels."""
    n = len(ids)
    if kind == "canary":
        # A label drawn uniformly among the wrong ones.
        planted = (fd.y[ids] + rng.integers(1, fd.num_classes, size=n)) % fd.num_classes
    elif kind == "backdoor":
        fd.x[ids] = apply_trigger(fd.x[ids])
        planted = np.full(n, target, dtype=np.int64)
    else:
        raise ValueError(f"unknown witness kind {kind!r}")
    fd.y[ids] = planted
    return planted.astype(np.int64)


def plant_witnesses(fd, witnesses: list[dict], seed: int) -> None:
    """Modify ``fd`` in place: plant each witness in its client's train part and,
    the same way, in as many of its audit samples (the witness non-members)."""
    for w in witnesses:
        cid, kind, frac, target = w["client"], w["kind"], w["fraction"], w["label"]
        if target >= fd.num_classes:
            raise ValueError(f"witness_label {target} >= number of classes {fd.num_classes}")
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x3177, cid]))
        train = fd.train_ids[cid]
        n = max(1, int(round(frac * len(train))))
        chosen = np.sort(rng.choice(train, size=n, replace=False))
        fd.witness_labels[cid] = _plant(fd, chosen, kind, target, rng)
        fd.witness_ids[cid] = chosen
        audit = fd.audit_ids[cid]
        rng_audit = np.random.default_rng(np.random.SeedSequence([seed, 0x3178, cid]))
        fd.witness_audit_ids[cid] = np.sort(rng_audit.choice(audit, size=min(n, len(audit)), replace=False))
        _plant(fd, fd.witness_audit_ids[cid], kind, target, rng_audit)
        if kind == "backdoor":
            keep = fd.y[fd.test_ids] != target
            fd.x_test_triggered = apply_trigger(fd.x[fd.test_ids[keep]])
            fd.test_triggered_label = target
