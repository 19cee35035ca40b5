"""``blobs``: a small synthetic dataset generated from the scenario seed (offline, no download)."""

from __future__ import annotations

import numpy as np

from fedforget.data import RawDataset

SAMPLES, FEATURES, CLASSES = 1000, 128, 4


def load_blobs(seed: int) -> RawDataset:
    """1,000 samples of 4 overlapping Gaussian classes in 128 dimensions, 20% of labels redrawn (seeded)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xB10B5]))
    centers = rng.normal(0.0, 1.0, size=(CLASSES, FEATURES))
    y = rng.integers(0, CLASSES, size=SAMPLES)
    x = centers[y] + rng.normal(0.0, 3.0, size=(SAMPLES, FEATURES))
    # Few noisy samples in many dimensions, and redrawn labels that can only be
    # memorised: the model remembers its clients' samples, so the membership
    # oracle has something to find before a withdrawal.
    flip = rng.random(SAMPLES) < 0.2
    y = np.where(flip, rng.integers(0, CLASSES, size=SAMPLES), y)
    return RawDataset(x=x.astype(np.float32), y=y.astype(np.int64), num_classes=CLASSES)
