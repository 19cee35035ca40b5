"""``reset_head``: forget by re-initialising the classifier, then relearning it
from the remaining clients.

The last linear layer (the classifier) holds much of what a model memorised of
individual samples. This method re-initialises it (seeded), then runs
``rounds`` FedAvg rounds over the remaining clients, so the head is relearnt
without the withdrawing client. Before and after, it asks each withdrawing
client for one number computed on its own forget data (its mean loss there,
the client op ``reset_head.forget_loss``): the withdrawing client never trains,
and only that loss leaves it. Everything goes through the ``fed`` handle, so
its cost (rounds, client steps, bytes, wall time) is counted by fedforget.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from fedforget.unlearning import (
    ClientData,
    ClientReply,
    CostRecord,
    Federation,
    MethodParams,
    UnlearningMethod,
)


def _forget_loss(model: nn.Module, data: ClientData, arrays: dict[str, np.ndarray], config: dict[str, Any]) -> ClientReply:
    """Client op ``forget_loss``: the client's mean loss on its forget data (runs in its ClientApp)."""
    with torch.no_grad():
        model.eval()
        loss = F.cross_entropy(model(data.x_forget.to(data.device)), data.y_forget.to(data.device))
    # A forward pass only: no training step to count.
    return ClientReply({}, {"loss": float(loss), "n": float(len(data.y_forget)), "steps": 0.0})


class ResetHeadParams(MethodParams):
    rounds: int = Field(2, ge=1, description="FedAvg rounds over the remaining clients after the reset")
    epochs: float = Field(1.0, gt=0, description="local epochs of each of those rounds")


class ResetHead(UnlearningMethod):
    """Re-initialise the classifier, then relearn it from the remaining clients."""

    name = "reset_head"
    Params = ResetHeadParams
    summary = "Re-initialise the last linear layer, then FedAvg rounds over the remaining clients."
    needs = "remaining clients: ordinary training rounds; withdrawing client: its forget-data loss before and after"
    client_ops = {"forget_loss": _forget_loss}

    def __init__(self, params: ResetHeadParams | None = None) -> None:
        super().__init__(params)
        self._last: dict[str, float] = {}

    def _forget_loss(self, model: nn.Module, fed: Federation) -> float:
        replies = [fed.ask_client(c, f"{self.name}.forget_loss", model, None, {}) for c in fed.withdrawing]
        n = sum(r.metrics["n"] for r in replies)
        return sum(r.metrics["loss"] * r.metrics["n"] for r in replies) / n if n else math.nan

    def unlearn(self, model: nn.Module, fed: Federation) -> tuple[nn.Module, CostRecord]:
        before = self._forget_loss(model, fed)
        head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        gen = torch.Generator().manual_seed(fed.seed("reset_head"))
        with torch.no_grad():
            bound = 1.0 / math.sqrt(head.in_features)  # nn.Linear's own initialisation range
            for tensor in (head.weight, head.bias):
                if tensor is not None:
                    tensor.copy_(torch.empty(tensor.shape).uniform_(-bound, bound, generator=gen))
        model = fed.run_rounds(model, self.params.rounds, "reset_head", epochs=self.params.epochs)
        after = self._forget_loss(model, fed)
        self._last = {"forget_loss_before": before, "forget_loss_after": after,
                      "reset_parameters": float(sum(p.numel() for p in head.parameters()))}
        fed.log(method=self.name, **self._last)
        return model, fed.cost()

    def step_metrics(self) -> dict[str, float]:
        return dict(self._last)
