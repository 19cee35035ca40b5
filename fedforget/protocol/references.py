"""The reference trainer: federations the oracle asks for (LiRA's shadows, and
any later attack's), trained beside the arms in the same exchanges.

The round loop provides training and never names what the federations are for;
their requests come from the oracle (:class:`~fedforget.oracle.reference.ReferenceRun`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from torch import nn

from fedforget.oracle.reference import ReferenceRun
from fedforget.protocol.errors import DivergenceError
from fedforget.protocol.federation import FederationRuntime
from fedforget.protocol.records import State, TrainOutcome, TrainRequest
from fedforget.schedule import derive_seed


class ReferenceTrainer:
    """Every reference federation's current model, by its opaque key."""

    def __init__(self, new_model: Callable[..., nn.Module]) -> None:
        self.new_model = new_model
        self.models: dict[str, tuple[ReferenceRun, State]] = {}

    def __getstate__(self) -> dict:
        # A checkpoint keeps the models; the model factory is the run's, rebuilt on resume.
        return {"models": self.models}

    def __setstate__(self, state: dict) -> None:
        self.models = state["models"]
        self.new_model = None

    def start(self, runs: Iterable[ReferenceRun]) -> None:
        for run in runs:
            self.models[run.key] = (run, self.new_model(derive_seed(run.seed, "init")).state_dict())

    def __contains__(self, key: str) -> bool:
        return key in self.models

    def requests(self, rnd: int, runtime: FederationRuntime) -> list[TrainRequest]:
        """This round's training of every federation still training."""
        out = []
        for key, (run, state) in self.models.items():
            if rnd <= run.rounds:
                clients = runtime.sample(rnd, set(run.excluded), seed=run.seed)
                out.append(TrainRequest(arm=key, round=rnd, state=state, clients=clients, seed=run.seed,
                                        train_ids=run.train_ids))
        return out

    def apply(self, request: TrainRequest, outcome: TrainOutcome) -> None:
        if outcome.diverged:  # the oracle's own model: nothing to mark, the audit would be void
            raise DivergenceError(f"the oracle's reference training {request.arm!r} diverged in round "
                                  f"{int(request.round)}: {outcome.diverged}")
        run, _ = self.models[request.arm]
        self.models[request.arm] = (run, outcome.state)

    def finished_by(self, rnd: int) -> dict[str, nn.Module]:
        """The models of the federations that finished training by round ``rnd``."""
        out = {}
        for key, (run, state) in self.models.items():
            if run.rounds <= rnd:
                out[key] = self.new_model()
                out[key].load_state_dict(state)
        return out
