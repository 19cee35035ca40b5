"""ArrayRecord <-> NumPy/PyTorch without ``np.load``'s per-array header parsing.

A Flower ``Array`` of stype ``numpy.ndarray`` holds ``np.save`` bytes: a header,
then the raw C-ordered data. ``Array.numpy()`` parses the header with
``ast.literal_eval`` for every array of every message, a large share of a small
round. The data are the last ``prod(shape) * itemsize`` bytes, so they are read
straight from the buffer (anything else falls back to ``Array.numpy()``).
"""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import Array, ArrayRecord

_NUMPY_STYPE = "numpy.ndarray"


def array_to_numpy(arr: Array) -> np.ndarray:
    """The array's values (a read-only view of its buffer where possible)."""
    if arr.stype != _NUMPY_STYPE:
        return arr.numpy()
    dtype = np.dtype(arr.dtype)
    nbytes = int(np.prod(arr.shape, dtype=np.int64)) * dtype.itemsize
    data = arr.data
    offset = len(data) - nbytes
    if offset <= 0 or dtype.hasobject or b"'fortran_order': False" not in data[:offset]:
        return arr.numpy()
    return np.frombuffer(data, dtype=dtype, count=nbytes // dtype.itemsize if dtype.itemsize else 0,
                         offset=offset).reshape(arr.shape)


def record_to_state(rec: ArrayRecord) -> dict[str, torch.Tensor]:
    """A state dict of writable tensors (copies)."""
    return {k: torch.from_numpy(np.array(array_to_numpy(v), copy=True)) for k, v in rec.items()}


def weighted_average(records: list[ArrayRecord], weights: list[float]) -> ArrayRecord:
    """FedAvg of records weighted by ``weights``, in the given order: the same
    operations, in the same order, as Flower's ``aggregate_arrayrecords``."""
    total = sum(weights)
    factors = [w / total for w in weights]
    out: dict[str, np.ndarray] = {}
    for rec, f in zip(records, factors, strict=True):
        for key, value in rec.items():
            if key not in out:
                out[key] = array_to_numpy(value) * f
            else:
                out[key] += array_to_numpy(value) * f
    return ArrayRecord({k: Array(np.asarray(v)) for k, v in out.items()})
