"""Datasets, partitioning and per-client splits."""

from fedforget.data.datasets import DataUnavailableError, RawDataset, load_raw
from fedforget.data.federated import (
    FederatedData,
    build_federated_data,
    federated_data_for,
)

__all__ = [
    "DataUnavailableError",
    "FederatedData",
    "RawDataset",
    "build_federated_data",
    "federated_data_for",
    "load_raw",
]
