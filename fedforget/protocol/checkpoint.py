"""Checkpoints: what a run needs to continue after its last complete round.

A checkpoint holds the run's state (every arm's model and method state, the
oracle's calibrated state, the reference federations, costs so far), the
writer's snapshot and the random generators' states; the data, the auditor and
the federation are rebuilt from the scenario on resume.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedforget.results import CHECKPOINT, atomic_write


def save_checkpoint(run_dir: Path, rnd: int, state: dict[str, Any], writer_snapshot: dict) -> None:
    """Atomically write the checkpoint after round ``rnd``."""
    payload = {
        "round": rnd,
        "state": state,
        "writer": writer_snapshot,
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state()},
    }
    atomic_write(Path(run_dir) / CHECKPOINT, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(run_dir: str | Path) -> dict:
    """The run directory's checkpoint; ValueError naming the problem otherwise."""
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        raise ValueError(f"{run_dir}: no {CHECKPOINT} to resume from (the run wrote none, or finished)")
    try:
        ckpt = torch.load(path, weights_only=False)
    except Exception as err:  # truncated or foreign file
        raise ValueError(f"{path}: unreadable checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(ckpt, dict) or not {"round", "state", "writer", "rng"} <= set(ckpt):
        raise ValueError(f"{path}: not a fedforget checkpoint")
    return ckpt


def restore_generators(checkpoint: dict) -> None:
    torch.set_rng_state(checkpoint["rng"]["torch"])
    np.random.set_state(checkpoint["rng"]["numpy"])
