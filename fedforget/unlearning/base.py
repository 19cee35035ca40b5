"""The unlearning interface: what a method gets, what it returns, how it registers.

A method is one module in this package. It declares its parameters (a pydantic
model with documented defaults), what it needs from whom, its server-side
``unlearn`` and, where it asks the withdrawing client for something, the
client-side operations it registers (run inside the ClientApp on the client's own
data; only gradients, statistics or weights come back).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from fedforget import registry

if TYPE_CHECKING:
    from fedforget.data.federated import ClientDataView


class MethodParams(BaseModel):
    """Base of every method's parameter table (``[unlearning.<method>]``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


@dataclass
class CostRecord:
    """What an unlearning step cost.

    Attributes
    ----------
    wall_s : float
        Wall-clock seconds of the whole step (server and clients).
    client_steps : int
        Samples x passes processed by clients (forward+backward) during the step.
    bytes_up, bytes_down : int
        Array payload bytes client->server and server->client.
    server_storage_bytes : int
        Bytes the server had to keep before the request to make the step possible.
    rounds : int
        Federated rounds (message exchanges with the remaining clients) used.
    """

    wall_s: float = 0.0
    client_steps: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    server_storage_bytes: int = 0
    rounds: int = 0

    def as_metrics(self) -> dict[str, float]:
        return {f"cost_{k}": float(v) for k, v in asdict(self).items()}


@dataclass
class ClientData:
    """One client's own data, as seen inside its ClientApp.

    ``x_train``/``y_train``: what it still trains on. ``x_validation``/
    ``y_validation``: its private validation part (self-checks, reference
    statistics); it never sees the oracle's audit part. ``x_forget``/``y_forget``:
    the data the current event asks it to forget (its whole former train part
    when it withdraws, the deleted samples otherwise); defaults to the train part.
    ``forget_label``: the deleted class of a ``delete_class`` event, else None
    (see :meth:`membership_reference`). In a run it is built by
    :meth:`from_view`, from the client's :class:`~fedforget.data.federated.ClientDataView`.
    """

    partition_id: int
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_validation: torch.Tensor
    y_validation: torch.Tensor
    num_classes: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    x_forget: torch.Tensor | None = None
    y_forget: torch.Tensor | None = None
    forget_label: int | None = None

    def __post_init__(self) -> None:
        if self.x_forget is None:
            self.x_forget, self.y_forget = self.x_train, self.y_train

    @classmethod
    def from_view(
        cls,
        view: ClientDataView,
        device: torch.device,
        removed: np.ndarray | None = None,
        forget: np.ndarray | None = None,
        forget_label: int | None = None,
    ) -> ClientData:
        """A client's data from its view (nothing else is read), on ``device``.

        Parameters
        ----------
        view : ClientDataView
        device : torch.device
            Where the model computes (client ops mix data and model freely).
        removed : np.ndarray, optional
            Train ids its deletions removed (it no longer trains on them).
        forget : np.ndarray, optional
            Train ids of the current event's forget set (default: the train part).
        forget_label : int, optional
            The deleted class of a ``delete_class`` event.
        """
        def on(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        x, y = view.train_without(removed) if removed is not None else (view.x_train, view.y_train)
        xf, yf = view.train_rows(forget) if forget is not None else (None, None)
        return cls(view.client, on(x), on(y), on(view.x_validation), on(view.y_validation), view.num_classes,
                   device, on(xf), on(yf), forget_label)

    def membership_reference(self, min_samples: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """The non-members a self-check compares the forget data with.

        Its validation part; for a ``delete_class`` event only its validation
        samples of the deleted class: against the whole part, a self-check would
        measure how the class differs from the others, not membership.

        Raises
        ------
        ValueError
            For a ``delete_class`` event whose class has fewer than
            ``min_samples`` validation samples here: no like-for-like comparison
            exists, and comparing across classes would be silently wrong.
        """
        if self.forget_label is None:
            return self.x_validation, self.y_validation
        keep = self.y_validation == self.forget_label
        if int(keep.sum()) < min_samples:
            raise ValueError(
                f"client {self.partition_id}: its validation part has {int(keep.sum())} samples of the deleted "
                f"class {self.forget_label}, and a self-check on a delete_class event needs at least {min_samples} "
                f"(it compares the class with itself); raise data.holdout_fraction or lower data.audit_share"
            )
        return self.x_validation[keep], self.y_validation[keep]


@dataclass
class ClientReply:
    """What a client sends back for a custom action."""

    arrays: dict[str, np.ndarray]
    metrics: dict[str, float]


@dataclass(frozen=True)
class AskRequest:
    """One client operation a method asks for (a ``train.unlearn`` message):
    run ``op`` on ``client`` with the server's ``arrays`` and ``config``."""

    client: int
    op: str
    arrays: dict[str, np.ndarray] | None = None
    config: dict[str, Any] = field(default_factory=dict)


# Client-side operation: (global model, own data, arrays from the server, config)
#   -> (arrays, metrics). ``metrics["steps"]`` counts samples x passes.
ClientOp = Callable[[nn.Module, ClientData, dict[str, np.ndarray], dict[str, Any]], ClientReply]


@dataclass
class HistoryEntry:
    """A stored round of the federation (kept only when a method asks for it)."""

    round: int
    global_state: dict[str, torch.Tensor]
    client_states: dict[int, dict[str, torch.Tensor]]
    num_examples: dict[int, int]


class Federation(Protocol):
    """The narrow handle a method gets to the federation during one event."""

    round: int  # the event round
    withdrawing: list[int]  # clients leaving now
    remaining: list[int]  # clients that still train
    num_clients: int
    num_classes: int
    local_epochs: int  # the scenario's train.local_epochs
    train_lr: float  # the scenario's train.lr

    def build_model(self) -> nn.Module:
        """A fresh model of the scenario's architecture."""

    def ask_client(
        self, client: int, op: str, model: nn.Module, arrays: dict[str, np.ndarray] | None, config: dict[str, Any]
    ) -> ClientReply:
        """Send a ``train.unlearn`` message running client op ``op`` on ``client``."""

    def ask_remaining(
        self, op: str, model: nn.Module, arrays: dict[str, np.ndarray] | None, config: dict[str, Any], clients: list[int]
    ) -> dict[int, ClientReply]:
        """Run client op ``op`` on some remaining clients (one batched exchange)."""

    def ask_batch(self, requests: list[AskRequest], model: nn.Module) -> list[ClientReply]:
        """Several requests (to withdrawing or remaining clients) in one
        exchange; replies in request order."""

    def run_rounds(self, model: nn.Module, k: int, tag: str, *, epochs: float | None = None) -> nn.Module:
        """``k`` FedAvg rounds over the remaining clients, starting from ``model``."""

    def train_remaining(
        self, model: nn.Module, tag: str, *, epochs: float | None = None, clients: list[int] | None = None
    ) -> tuple[dict[int, dict[str, torch.Tensor]], dict[int, int]]:
        """One local training of the given remaining clients (default: the seeded
        sample) from ``model``; returns their states and example counts (not
        aggregated)."""

    def self_check(self, model: nn.Module) -> float:
        """The withdrawing clients' own loss-based membership AUC of their forget
        data against their validation part (computed and reported by the clients;
        the mean over withdrawing clients, weighted by their sizes); computed
        against the clients' validation parts (for a ``delete_class`` event their
        samples of that class), never the oracle's audit data."""

    def seed(self, *parts: int | str) -> int:
        """A seed for the method's own randomness, derived from the scenario seed."""

    def history(self) -> list[HistoryEntry]:
        """Stored rounds of this arm before the event (empty unless requested)."""

    def server_validation_data(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The server's own validation set (it holds it; never the test set or
        a client's data); None when the scenario has none."""

    def validation_accuracy(self, model: nn.Module) -> float:
        """Accuracy on the server's validation set (for stop rules and guards;
        never the test set, which is the report's)."""

    def log(self, **info: Any) -> None:
        """Write an ``unlearn_step`` line to the events log."""

    def warn(self, message: str) -> None:
        """A warning the run's report shows (a ``warning`` line in the events log)."""

    def cost(self) -> CostRecord:
        """Client steps, bytes and rounds spent through this handle so far."""


class UnlearningMethod(ABC):
    """Base class: subclasses set ``name``, ``Params``, ``summary``, ``needs``."""

    name: ClassVar[str]
    Params: ClassVar[type[MethodParams]] = MethodParams
    summary: ClassVar[str] = ""
    needs: ClassVar[str] = ""
    client_ops: ClassVar[dict[str, ClientOp]] = {}
    #: It asks the withdrawing client for self-checks on its validation part.
    uses_client_validation: ClassVar[bool] = False
    #: Values tuning may try per parameter (``simulations/tune.py``; the grid is their
    #: cartesian product); empty: nothing to tune, the defaults are the one setting.
    search_space: ClassVar[dict[str, list]] = {}

    @classmethod
    def check_scenario(cls, scenario, params: MethodParams) -> None:
        """Raise ValueError naming what the scenario lacks for this method;
        called when the scenario is loaded, before anything starts."""
        data = scenario.data
        if cls.uses_client_validation and (data.holdout_fraction == 0 or data.audit_share >= 1):
            raise ValueError(
                f"{cls.name} asks the withdrawing client for self-checks on its validation part, "
                f"which is empty (data.holdout_fraction = {data.holdout_fraction}, "
                f"data.audit_share = {data.audit_share}); use holdout_fraction > 0 and audit_share < 1"
            )

    def __init__(self, params: MethodParams | None = None) -> None:
        self.params = params if params is not None else self.Params()

    def history_rounds(self, rounds: int, event_rounds: list[int]) -> list[int]:
        """Rounds whose client updates the server must store (default none)."""
        return []

    def step_metrics(self) -> dict[str, float]:
        """Method-specific figures of the last unlearning step (written as
        metrics at the event round beside the cost record); default none."""
        return {}

    def recovery_epochs(self, k: int) -> float | None:
        """Local epochs of the arm's ``k``-th regular round after the event
        (``k`` < ``unlearning.recovery_rounds``): the method's recovery protocol.

        Regular rounds are the same for every arm and cost no method anything;
        this hook only changes how one of them is run. ``None`` (the default,
        and every built-in method's choice) is a plain FedAvg round with the
        scenario's local epochs, so ``recovery_rounds`` changes nothing for
        them. Work a method needs beyond that belongs inside its unlearning
        step, where it is counted in its cost.
        """
        return None

    @abstractmethod
    def unlearn(self, model: nn.Module, fed: Federation) -> tuple[nn.Module, CostRecord]:
        """Return the unlearned global model and the step's cost."""


#: ``<method>.<op>`` -> client-side operation, read by the ClientApp.
CLIENT_OPS: dict[str, ClientOp] = {}


def register_method(cls: type[UnlearningMethod]) -> type[UnlearningMethod]:
    """Class decorator: register a method in :data:`fedforget.registry.methods`
    (by its ``name``; a duplicate name is a ValueError) and its client-side
    operations in :data:`CLIENT_OPS`."""
    registry.methods.register()(cls)
    for op, fn in cls.client_ops.items():
        CLIENT_OPS[f"{cls.name}.{op}"] = fn
    return cls


def self_check_op(model: nn.Module, data: ClientData, arrays: dict[str, np.ndarray], config: dict[str, Any]) -> ClientReply:
    """Client op ``self_check``: loss-based membership AUC of the client's forget
    data (members) against its validation part (its samples of the deleted class
    for a ``delete_class`` event; :meth:`ClientData.membership_reference`). Only
    the AUC leaves the client."""
    from sklearn.metrics import roc_auc_score
    from torch.nn import functional as F

    x_ref, y_ref = data.membership_reference()
    with torch.no_grad():
        model.eval()
        s_in = -F.cross_entropy(model(data.x_forget.to(data.device)), data.y_forget.to(data.device), reduction="none")
        s_out = -F.cross_entropy(model(x_ref.to(data.device)), y_ref.to(data.device), reduction="none")
    scores = torch.cat([s_in, s_out]).cpu().numpy()
    labels = np.r_[np.ones(len(s_in)), np.zeros(len(s_out))]
    auc = float(roc_auc_score(labels, scores)) if len(s_out) and len(s_in) else float("nan")
    return ClientReply({}, {"auc": auc, "n": float(len(s_in)), "steps": 0.0})


CLIENT_OPS["self_check"] = self_check_op
