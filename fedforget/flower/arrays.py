"""ArrayRecord <-> NumPy/PyTorch without ``np.load``'s per-array header parsing.

A Flower ``Array`` of stype ``numpy.ndarray`` holds ``np.save`` bytes: a header,
then the raw C-ordered data. ``Array.numpy()`` parses the header with
``ast.literal_eval`` for every array of every message, a large share of a small
round. The data are the last ``prod(shape) * itemsize`` bytes, so they are read
straight from the buffer (anything else falls back to ``Array.numpy()``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from flwr.app import Array, ArrayRecord

from fedforget.training import weighted_mean_state

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


_HEADERS: dict[tuple[str, tuple[int, ...]], bytes] = {}


def numpy_to_array(values: np.ndarray) -> Array:
    """The Flower ``Array`` of a NumPy array: the same bytes as ``Array(values)``
    (``np.save``'s), with the header written once per dtype and shape."""
    values = np.ascontiguousarray(values)
    if values.dtype.hasobject:
        return Array(values)
    key = (values.dtype.str, values.shape)
    header = _HEADERS.get(key)
    if header is None:
        full = Array(values)
        _HEADERS[key] = full.data[: len(full.data) - values.nbytes]
        return full
    return Array(dtype=str(values.dtype), shape=tuple(values.shape), stype=_NUMPY_STYPE,
                 data=header + values.tobytes())


def state_to_record(state: Mapping[str, torch.Tensor | np.ndarray]) -> ArrayRecord:
    """A state dict (tensors) or named arrays as an ArrayRecord."""
    return ArrayRecord({k: numpy_to_array(v.detach().cpu().numpy() if torch.is_tensor(v) else np.asarray(v))
                        for k, v in state.items()})


def load_record_into(targets: Mapping[str, torch.Tensor], rec: ArrayRecord) -> None:
    """Copy a record's values into existing CPU tensors of the same names and
    shapes (a model's ``state_dict()`` views), without intermediate copies."""
    if set(targets) != set(rec.keys()):
        raise ValueError(f"the weights received do not fit the model: missing {sorted(set(targets) - set(rec.keys()))}, "
                         f"unexpected {sorted(set(rec.keys()) - set(targets))}")
    for name, tensor in targets.items():
        values = array_to_numpy(rec[name])
        if values.shape != tuple(tensor.shape):
            raise ValueError(f"the weights received for {name!r} have shape {values.shape}, the model {tuple(tensor.shape)}")
        np.copyto(tensor.numpy(), values, casting="same_kind")


def weighted_average(records: list[ArrayRecord], weights: list[float]) -> ArrayRecord:
    """FedAvg of records weighted by ``weights``, in the given order
    (:func:`fedforget.training.weighted_mean`, as Flower's ``aggregate_arrayrecords``
    computes it)."""
    arrays = [{k: array_to_numpy(v) for k, v in rec.items()} for rec in records]
    return ArrayRecord({k: numpy_to_array(np.asarray(v)) for k, v in weighted_mean_state(arrays, weights).items()})
