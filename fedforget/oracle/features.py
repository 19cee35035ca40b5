"""Per-sample output statistics of a classifier, the raw material of every attack.

All statistics are computed from the logits in float64 on the CPU, so that the
same model gives bit-identical values on every call (the oracle's "same model
-> FR == 0" guarantee relies on it) and extreme logits stay finite.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["SampleStats", "sample_statistics", "stats_from_logits"]


@dataclass(frozen=True)
class SampleStats:
    """Per-sample statistics of a model's prediction (one float64 value each).

    Attributes
    ----------
    loss : np.ndarray
        Cross-entropy ``-log p_y``.
    confidence : np.ndarray
        Probability of the true label ``p_y``.
    max_confidence : np.ndarray
        Largest class probability.
    entropy : np.ndarray
        Shannon entropy of the predicted distribution (nats).
    modified_entropy : np.ndarray
        Song & Mittal (2021) Mentr:
        ``-(1 - p_y) log p_y - sum_{i != y} p_i log(1 - p_i)``; low for members.
    logit_scaled : np.ndarray
        ``log p_y - log(1 - p_y)``, the LiRA statistic (Carlini et al. 2022).
    """

    loss: np.ndarray
    confidence: np.ndarray
    max_confidence: np.ndarray
    entropy: np.ndarray
    modified_entropy: np.ndarray
    logit_scaled: np.ndarray

    def __post_init__(self) -> None:
        n = None
        for f in fields(self):
            arr = np.asarray(getattr(self, f.name), dtype=np.float64).reshape(-1)
            if n is None:
                n = arr.shape[0]
            elif arr.shape[0] != n:
                raise ValueError(f"SampleStats.{f.name} has {arr.shape[0]} values, expected {n}")
            # Frozen dataclass: bypass the guard once, to normalise dtype/shape.
            object.__setattr__(self, f.name, arr)

    def __len__(self) -> int:
        return int(self.loss.shape[0])

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Names of the per-sample statistics, in declaration order."""
        return tuple(f.name for f in fields(cls))

    def subset(self, idx: np.ndarray) -> SampleStats:
        """Statistics of the samples selected by ``idx`` (indices or boolean mask)."""
        idx = np.asarray(idx)
        return SampleStats(**{name: getattr(self, name)[idx] for name in self.field_names()})

    @staticmethod
    def concat(*parts: SampleStats) -> SampleStats:
        """Concatenate statistics sample-wise, in argument order (``concat(a, b)``)."""
        if not parts:
            raise ValueError("SampleStats.concat needs at least one argument")
        return SampleStats(
            **{
                name: np.concatenate([getattr(p, name) for p in parts])
                for name in SampleStats.field_names()
            }
        )

    def features(self, names: tuple[str, ...] | list[str]) -> np.ndarray:
        """Stack the named statistics into an ``(n_samples, len(names))`` matrix."""
        return np.column_stack([getattr(self, name) for name in names])


def _log_one_minus_softmax(logits: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    """``log(1 - p_i)`` for every class, accurate even when ``p_i`` rounds to 1.

    ``log(-expm1(log p))`` is accurate while ``p <= 1/2``. At most one class per
    row (the arg-max) can exceed 1/2; for it we use the exact form
    ``logsumexp_{j != i} z_j - logsumexp_j z_j``, which costs O(C) per row.
    """
    out = torch.log(-torch.expm1(logp))
    rows = torch.arange(logits.shape[0])
    top = logits.argmax(dim=1)
    masked = logits.clone()
    masked[rows, top] = -torch.inf
    out[rows, top] = torch.logsumexp(masked, dim=1) - torch.logsumexp(logits, dim=1)
    return out


def stats_from_logits(logits: torch.Tensor, y: torch.Tensor) -> SampleStats:
    """Compute :class:`SampleStats` from a batch of logits and integer labels.

    Parameters
    ----------
    logits : torch.Tensor
        Shape ``(n, n_classes)``; any device and float dtype.
    y : torch.Tensor
        Integer labels, shape ``(n,)``.
    """
    z = logits.detach().to("cpu", torch.float64)
    y = torch.as_tensor(y).detach().to("cpu", torch.int64).reshape(-1)
    if z.ndim != 2 or z.shape[0] != y.shape[0]:
        raise ValueError(f"logits of shape {tuple(z.shape)} do not match {y.shape[0]} labels")
    rows = torch.arange(z.shape[0])
    logp = F.log_softmax(z, dim=1)
    p = logp.exp()
    logp_y = logp[rows, y]

    # log(1 - p_y) = logsumexp over the other classes - logsumexp over all:
    # exact even when p_y rounds to 1 (where log(1 - p_y) would be -inf).
    others = z.clone()
    others[rows, y] = -torch.inf
    log_rest = torch.logsumexp(others, dim=1)
    log1m_py = log_rest - torch.logsumexp(z, dim=1)

    log1m_p = _log_one_minus_softmax(z, logp)
    other_mask = torch.ones_like(z, dtype=torch.bool)
    other_mask[rows, y] = False
    mentr = -log1m_py.exp() * logp_y - torch.where(other_mask, p * log1m_p, 0.0).sum(dim=1)

    return SampleStats(
        loss=(-logp_y).numpy(),
        confidence=logp_y.exp().numpy(),
        max_confidence=p.max(dim=1).values.numpy(),
        entropy=(-(p * logp).sum(dim=1)).numpy(),
        modified_entropy=mentr.numpy(),
        logit_scaled=(z[rows, y] - log_rest).numpy(),
    )


def _model_device(model: torch.nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def sample_statistics(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int = 1024,
) -> SampleStats:
    """Evaluate ``model`` on ``(x, y)`` and return per-sample statistics.

    Runs under ``torch.no_grad()`` in eval mode on the model's device, batch by
    batch; every module's train/eval flag is restored afterwards (module by
    module, so mixed modes survive).

    Parameters
    ----------
    model : torch.nn.Module
        Maps a batch of inputs to logits of shape ``(batch, n_classes)``.
    x, y : torch.Tensor
        Inputs and integer labels (numpy arrays are accepted too).
    batch_size : int
        Samples per forward pass.

    Returns
    -------
    SampleStats
        One value per sample, in input order.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    x = torch.as_tensor(x)
    y = torch.as_tensor(y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} samples but y has {y.shape[0]}")
    device = _model_device(model)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        parts = []
        with torch.no_grad():
            for i in range(0, x.shape[0], batch_size):
                logits = model(x[i : i + batch_size].to(device))
                parts.append(stats_from_logits(logits, y[i : i + batch_size]))
    finally:
        for m, was_training in modes:
            m.training = was_training
    if not parts:
        empty = np.zeros(0, dtype=np.float64)
        return SampleStats(*(empty for _ in SampleStats.field_names()))
    return SampleStats.concat(*parts)
