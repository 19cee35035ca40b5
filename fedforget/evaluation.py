"""Accuracy-type metrics of a global model, computed by the auditor (the
simulator's ground truth), never by the federation protocol.

Rows are ``(client, metric, value)``; ``client`` is None for global metrics.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fedforget.data.federated import FederatedData
from fedforget.results import MetricRow
from fedforget.training import accuracy_on_labels, evaluate


class Auditor:
    """Pre-assembled evaluation sets for one scenario.

    Parameters
    ----------
    fd : FederatedData
    forget_sets : dict of int to np.ndarray
        Per client with data to forget (the watched clients): the global ids of
        that data (its whole train part when it withdraws).
    withdrawn : list of int
        Clients that leave. The retain set is every other client's train part
        minus any forget set.
    """

    def __init__(self, fd: FederatedData, forget_sets: dict[int, np.ndarray], withdrawn: list[int]) -> None:
        self.fd = fd
        self.watched = list(forget_sets)
        self.test = fd.test()
        self.forget = {c: fd.tensors(ids) for c, ids in forget_sets.items()}
        kept = [fd.train_ids[c] for c in range(fd.num_clients) if c not in withdrawn]
        retain_ids = np.concatenate(kept) if kept else np.array([], dtype=np.int64)
        if forget_sets:
            retain_ids = np.setdiff1d(retain_ids, np.concatenate(list(forget_sets.values())))
        self.retain = fd.tensors(retain_ids)
        self.witness = {
            c: (torch.from_numpy(fd.x[fd.witness_ids[c]]), torch.from_numpy(fd.witness_labels[c]))
            for c in self.watched
            if c in fd.witness_ids
        }
        self.triggered = None
        if fd.x_test_triggered is not None:
            x = torch.from_numpy(fd.x_test_triggered)
            self.triggered = (x, torch.full((len(x),), fd.test_triggered_label, dtype=torch.long))

    def rows(self, arm: str, label: float, model: nn.Module) -> list[MetricRow]:
        """Global ``test_loss``/``test_accuracy``; per watched client
        ``forget_accuracy``, ``retain_accuracy`` and ``witness_accuracy``: an
        arm's rows at a round label."""
        loss, acc = evaluate(model, *self.test)
        out = [MetricRow(arm, label, None, "test_loss", loss), MetricRow(arm, label, None, "test_accuracy", acc)]
        if not self.watched:  # the retain set (every client's train part) is only reported per watched client
            return out
        retain_acc = evaluate(model, *self.retain)[1] if len(self.retain[1]) else float("nan")
        for c in self.watched:
            out.append(MetricRow(arm, label, c, "forget_accuracy", evaluate(model, *self.forget[c])[1]))
            out.append(MetricRow(arm, label, c, "retain_accuracy", retain_acc))
            if c in self.witness:
                if self.triggered is not None:
                    # Backdoor: the trigger's effect on clean test images.
                    w_acc = accuracy_on_labels(model, *self.triggered)
                else:
                    w_acc = accuracy_on_labels(model, *self.witness[c])
                out.append(MetricRow(arm, label, c, "witness_accuracy", w_acc))
        return out
