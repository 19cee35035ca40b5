"""One scenario run as an explicit round protocol.

:meth:`ScenarioRun.run` is the one loop; every step is a small named method, the
way Flower's ``Strategy.start`` calls ``configure_*`` and ``aggregate_*``::

    start()                           run record, data roles, arms, round-0 audit
    for each round t:
        event(t)                      at a withdrawal or deletion:
            branch_method_arms()        method arms start from original after t-1
            calibrate_oracle(t)         on original's model after round t-1
            unlearn(arm, method, ev)    each method's step, between t-1 and t
            record_yardstick(t)         retraining's cost to t, speed-ups
            audit(t - 0.5)              every arm right after the step
        train_round(t)                one regular round for every arm
        audit(t)                      accuracies and membership of every arm
        checkpoint(t)
    finish()                          tables, flags, warnings

Its parts: a :class:`~fedforget.protocol.costs.CostLedger`, a
:class:`~fedforget.protocol.references.ReferenceTrainer` for the oracle's
reference federations, checkpoints (:mod:`fedforget.protocol.checkpoint`), and
the :class:`~fedforget.protocol.federation.FederationRuntime` that carries the
messages (Flower's, or the in-process one): the protocol never imports Flower.

Fairness: at every round label every arm has had the same number of regular
rounds. Whatever a method does inside its step (gradient exchanges, its own
rounds over the remaining clients) is extra work, counted in its cost record.
The first ``unlearning.recovery_rounds`` regular rounds of a method arm follow
the method's recovery protocol (:meth:`UnlearningMethod.recovery_epochs`); for
plain FedAvg recovery, every built-in method's, that changes nothing.

The ``retrain`` arm trains in its own timed exchange, so its cost (client steps,
bytes and wall seconds) is the yardstick each method's cost is divided into.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from fedforget.config import Scenario
from fedforget.data import federated_data_for
from fedforget.data.federated import forget_ids
from fedforget.evaluation import Auditor
from fedforget.models import build_model
from fedforget.oracle.audit import MembershipAudit, over_unlearning_rows, relapse_rows
from fedforget.progress import ProgressFn
from fedforget.protocol.checkpoint import (
    load_checkpoint,
    restore_generators,
    save_checkpoint,
)
from fedforget.protocol.costs import CostLedger
from fedforget.protocol.errors import DivergenceError
from fedforget.protocol.federation import FederationRuntime, MethodHandle
from fedforget.protocol.records import (
    FailurePolicy,
    State,
    TrainOutcome,
    TrainRequest,
    clone_state,
    divergence,
)
from fedforget.protocol.references import ReferenceTrainer
from fedforget.results import CHECKPOINT, RunWriter
from fedforget.schedule import ORIGINAL, RETRAIN, Arm, derive_seed, initial_arms
from fedforget.tracking import trackers_for
from fedforget.training import evaluate
from fedforget.unlearning import (
    HistoryEntry,
    UnlearningMethod,
    get_method,
    method_params,
)

#: Connects a run to its federation: (scenario, writer, failure policy) -> runtime.
Connect = Callable[[Scenario, RunWriter, FailurePolicy], FederationRuntime]


@dataclass
class ArmState:
    """An arm, its current global model and what it keeps for its method.

    ``recovery_done``/``recovery_left``: regular rounds since the last event
    that followed / will follow the method's recovery protocol.
    """

    arm: Arm
    state: State
    history: list[HistoryEntry] = field(default_factory=list)
    recovery_done: int = 0
    recovery_left: int = 0
    diverged_at: float | None = None  # round label it diverged at (on_divergence = "mark"); frozen since

    @property
    def live(self) -> bool:
        return self.diverged_at is None


@dataclass(frozen=True)
class RunSummary:
    """What a finished run returns: its directory, what ran, and its metrics
    table (the rows ``metrics.parquet`` holds), without reading files back."""

    run_dir: Path
    scenario: str
    seed: int
    rounds: int
    arms: tuple[str, ...]
    test_accuracy: dict[str, float]  # by arm, after the last round
    metrics: pd.DataFrame


class ScenarioRun:
    """One scenario over one federation, step by step; see the module docstring.

    Parameters
    ----------
    connect : Connect
        Builds the federation runtime (at the start, and again on resume).
    scenario : Scenario
    writer : RunWriter
    progress : callable, optional
        Called after every round with (round, test accuracy by arm).
    """

    def __init__(self, connect: Connect, scenario: Scenario, writer: RunWriter,
                 progress: ProgressFn | None = None) -> None:
        self.sc = sc = scenario
        self.writer = writer
        self.progress = progress
        self._connect = connect
        self.runtime: FederationRuntime | None = None  # connected in start()
        self.fd = fd = federated_data_for(sc)
        self.methods: dict[str, UnlearningMethod] = {
            name: get_method(name, method_params(sc, name)) for name in sc.unlearning.methods
        }
        self.forget_sets = {c: forget_ids(fd, ev, c, sc.data_seed) for ev in sc.events for c in ev.client_ids}
        self.events_at: dict[int, list] = {}
        for i, ev in enumerate(sc.events):
            self.events_at.setdefault(ev.round, []).append((i, ev))
        self.first_event = min(self.events_at) if self.events_at else None
        self.history_rounds = {
            name: set(m.history_rounds(sc.train.rounds, sorted(self.events_at))) for name, m in self.methods.items()
        }
        self.auditor = Auditor(fd, forget_sets=self.forget_sets, withdrawn=sc.withdrawn_clients())
        self.membership = self._plan_membership()
        self.arms: dict[str, ArmState] = {}
        self.references = ReferenceTrainer(self.new_model)
        self.costs = CostLedger()
        self._scratch = self.new_model()
        self._server_validation = fd.server_validation()

    # -- small helpers ---------------------------------------------------------
    def new_model(self, seed: int = 0) -> torch.nn.Module:
        sc, fd = self.sc, self.fd
        return build_model(sc.model.name, fd.input_shape, fd.num_classes, sc.model.hidden, seed=seed)

    def model_of(self, state: State) -> torch.nn.Module:
        self._scratch.load_state_dict(state)
        return self._scratch

    def validation_accuracy(self, model: torch.nn.Module) -> float:
        """The server's validation set: methods' guards (never the test set)."""
        x, y = self._server_validation
        return evaluate(model, x, y)[1] if len(y) else float("nan")

    def record(self, rows) -> None:
        for row in rows:
            self.writer.metric(*row)

    def _plan_membership(self) -> MembershipAudit | None:
        """The audited clients and the reference training their attack asks for."""
        sc = self.sc
        if not sc.events:
            return None
        audit = MembershipAudit(
            fd=self.fd, seed=sc.seed, attack=sc.oracle.attack, attack_params=sc.oracle.attack_params(),
            n_boot=sc.oracle.n_boot, min_nonmembers=sc.oracle.min_nonmembers, keep_scores=sc.oracle.scores,
        )
        for ev in sc.events:
            for c in ev.client_ids:
                audit.add(c, ev.round, ev.withdraws, self.forget_sets[c])
        for c in audit.control_clients(sc.forgetting_clients(), sc.oracle.controls):
            audit.add(c, self.first_event, False, self.fd.train_ids[c])
        return audit

    # -- the loop ----------------------------------------------------------------
    def run(self, checkpoint: dict | None = None) -> RunSummary:
        """The whole run, or its continuation from a checkpoint (see :meth:`resume`)."""
        if checkpoint is None:
            self.start()
            first = 1
        else:
            first = self.resume(checkpoint) + 1
        accs: dict[str, float] = {}
        for rnd in range(first, self.sc.train.rounds + 1):
            if rnd in self.events_at:
                self.event(rnd)
            self.train_round(rnd)
            accs = self.audit(rnd)
            self.writer.track()  # before the checkpoint, which records what the trackers have
            self.checkpoint(rnd)
            if self.progress is not None:
                self.progress(rnd, accs)
        self.finish()
        return RunSummary(self.writer.dir, self.sc.name, self.sc.seed, self.sc.train.rounds, tuple(self.arms),
                          accs, self.writer.metrics_frame())

    # -- checkpoints -------------------------------------------------------------
    #: What a checkpoint holds of this object (the data, the auditor and the
    #: runtime are rebuilt from the scenario).
    CHECKPOINTED = ("arms", "references", "costs", "membership", "methods")

    def checkpoint(self, rnd: int) -> None:
        """Atomically write what is needed to continue after round ``rnd``."""
        if self.sc.runtime.checkpoints:
            save_checkpoint(self.writer.dir, rnd, {k: getattr(self, k) for k in self.CHECKPOINTED},
                            self.writer.snapshot())

    def resume(self, checkpoint: dict) -> int:
        """Restore a checkpoint's state and connect to the federation; returns
        the last complete round."""
        for key in self.CHECKPOINTED:
            setattr(self, key, checkpoint["state"][key])
        self.references.new_model = self.new_model
        if self.membership is not None:
            self.membership.fd = self.fd
        restore_generators(checkpoint)
        self.connect()
        self.writer.event("resumed", after_round=checkpoint["round"])
        return int(checkpoint["round"])

    def start(self) -> None:
        sc, fd = self.sc, self.fd
        init = self.new_model(derive_seed(sc.seed, "init"))
        self.writer.event(
            "run_start", scenario=sc.name, seed=sc.seed, num_clients=sc.data.num_clients,
            train_sizes=[len(t) for t in fd.train_ids], validation_sizes=[len(v) for v in fd.validation_ids],
            audit_sizes=[len(a) for a in fd.audit_ids], server_validation_size=len(fd.server_validation_ids),
            test_size=len(fd.test_ids), parameters=sum(p.numel() for p in init.parameters()),
        )
        self.writer.table("splits", fd.splits())
        self.connect()
        deletions = [i for i, ev in enumerate(sc.events) if not ev.withdraws]
        for a in initial_arms(list(self.methods), sc.withdrawn_clients(), bool(sc.events), deletions):
            self.arms[a.name] = ArmState(a, clone_state(init.state_dict()))
        if self.membership is not None and self.membership.reference_runs:
            self.references.start(self.membership.reference_runs)
            self.writer.event("oracle_references", count=len(self.references.models),
                              rounds_each=[r.rounds for r, _ in self.references.models.values()])
        self.audit(0)

    def connect(self) -> None:
        """Connect to the federation (discover its nodes, set up the exchange)."""
        rt = self.sc.runtime
        policy = FailurePolicy(rt.min_replies, rt.on_client_error, rt.client_retries, rt.on_divergence == "mark")
        self.runtime = self._connect(self.sc, self.writer, policy)

    # -- the event -------------------------------------------------------------------
    def event(self, rnd: int) -> None:
        if rnd == self.first_event:
            self.branch_method_arms()
        for _, ev in self.events_at[rnd]:
            self.writer.event("withdraw" if ev.withdraws else "delete", round=rnd, clients=ev.client_ids,
                              kind=ev.kind, forget_sizes=[len(self.forget_sets[c]) for c in ev.client_ids])
        self.calibrate_oracle(rnd)
        for i, ev in self.events_at[rnd]:
            for name, method in self.methods.items():
                if self.arms[name].live:
                    self.unlearn(self.arms[name], method, i, ev)
        self.record_yardstick(rnd)
        if rnd == max(self.events_at):
            # Stored client updates serve unlearning steps only: none is left.
            for st in self.arms.values():
                st.history.clear()
        self.audit(rnd - 0.5)

    def branch_method_arms(self) -> None:
        orig = self.arms[ORIGINAL]
        for name in self.methods:
            self.arms[name] = ArmState(Arm(name, method=name), clone_state(orig.state), list(orig.history))

    def calibrate_oracle(self, rnd: int) -> None:
        """Calibrate every oracle of this event on original's model after round
        rnd - 1, with the reference models that finished training by then."""
        if self.membership is None:
            return
        finished = self.references.finished_by(rnd - 1)
        before = self.model_of(self.arms[ORIGINAL].state)
        t0 = time.perf_counter()
        self.record(self.membership.calibrate(rnd, before, finished))
        clients = [t.client for t in self.membership.targets if t.event_round == rnd]
        self.writer.event("oracle_calibrated", round=rnd, clients=clients, attack=self.sc.oracle.attack,
                          wall_s=time.perf_counter() - t0)

    def method_handle(self, st: ArmState, ev, event_index: int, excluded: set[int]) -> MethodHandle:
        sc = self.sc
        return MethodHandle(
            self.runtime, arm=st.arm.name, event_round=ev.round, withdrawing=ev.client_ids, excluded=excluded,
            model_factory=self.new_model, num_classes=self.fd.num_classes, history=st.history,
            server_validation=self._server_validation, local_epochs=sc.train.local_epochs, train_lr=sc.train.lr,
            drop=tuple(sorted(st.arm.dropped)), event_index=event_index,
        )

    def unlearn(self, st: ArmState, method: UnlearningMethod, event_index: int, ev) -> None:
        """One method's unlearning step for one event, between rounds t-1 and t.

        A withdrawing client is excluded from the arm after the step (it may be
        asked for unlearning work during it); a deletion is in force from the
        step on (the client keeps training on the rest of its data). The step's
        wall time is measured here, around the whole step, for every method.
        """
        rnd = ev.round
        excluded = st.arm.excluded | set(ev.client_ids) if ev.withdraws else set(st.arm.excluded)
        if not ev.withdraws:
            st.arm.dropped.add(event_index)
        model = self.new_model()
        model.load_state_dict(st.state)
        t0 = time.perf_counter()
        model, cost = method.unlearn(model, self.method_handle(st, ev, event_index, excluded))
        cost.wall_s = time.perf_counter() - t0
        if what := divergence(model.state_dict()):
            self.mark_diverged(st, rnd - 0.5, f"its unlearning step at round {rnd}: {what}")
            return
        self.writer.event("unlearn", arm=st.arm.name, round=rnd, clients=ev.client_ids,
                          validation_accuracy_after=self.validation_accuracy(model), **cost.as_metrics())
        after = model.state_dict()
        changed = sum(int((after[k] != v).sum()) for k, v in st.state.items())
        extra = {**method.step_metrics(), "changed_fraction": changed / sum(v.numel() for v in st.state.values())}
        for key, value in {**cost.as_metrics(), **extra}.items():
            self.writer.metric(st.arm.name, rnd, None, key, value)
        self.costs.add_step(st.arm.name, rnd, cost)
        st.arm.excluded = excluded
        st.state = clone_state(model.state_dict())
        st.recovery_done, st.recovery_left = 0, self.sc.unlearning.recovery_rounds

    def mark_diverged(self, st: ArmState, label: float, what: str) -> None:
        """A non-finite arm: the run stops, or (on_divergence = "mark", method
        arms only) the arm is marked diverged and frozen from here on."""
        name = st.arm.name
        if self.sc.runtime.on_divergence != "mark" or name in (ORIGINAL, RETRAIN):
            raise DivergenceError(f"arm {name!r} diverged in {what} (is train.lr too high for this model?)")
        st.diverged_at = label
        self.writer.metric(name, label, None, "diverged", 1.0)
        self.writer.event("diverged", arm=name, round=label, what=what)

    def record_yardstick(self, rnd: int) -> None:
        """Retraining from scratch to the event redoes rounds 1..rnd-1 without
        the forgetting clients: its cost divides each method's into a speed-up."""
        if RETRAIN not in self.arms:
            return
        ref = self.costs.retrain_cost(rnd - 1)
        for key, value in (("steps", ref.steps), ("bytes", ref.bytes), ("wall_s", ref.wall_s)):
            self.writer.metric(RETRAIN, rnd, None, f"retrain_{key}_to_event", value)
        speedups = {name: self.costs.speedups(name, rnd) for name in self.methods if self.arms[name].live}
        for name, values in speedups.items():
            for key, value in values.items():
                self.writer.metric(name, rnd, None, key, value)
        self.writer.event("yardstick", round=rnd, retrain_steps=ref.steps, retrain_bytes=ref.bytes,
                          retrain_wall_s=ref.wall_s, speedups=speedups)

    # -- regular rounds ------------------------------------------------------------
    def _arm_request(self, name: str, st: ArmState, rnd: int) -> TrainRequest:
        method = self.methods.get(st.arm.method) if st.arm.method else None
        epochs = None
        if method is not None and st.recovery_left > 0:
            epochs = method.recovery_epochs(st.recovery_done)
            st.recovery_done, st.recovery_left = st.recovery_done + 1, st.recovery_left - 1
        keep = (name == ORIGINAL and self.first_event is not None and rnd < self.first_event
                and any(rnd in r for r in self.history_rounds.values())) or (
            method is not None and rnd in self.history_rounds.get(name, set()) and rnd < max(self.events_at))
        clients = self.runtime.sample(rnd, st.arm.excluded)
        return TrainRequest(arm=name, round=rnd, state=st.state, clients=clients, epochs=epochs,
                            keep_client_states=keep, drop=tuple(sorted(st.arm.dropped)))

    def train_round(self, rnd: int) -> None:
        """One regular round for every arm (and the oracle's reference training),
        in one batched exchange; ``retrain`` in its own, timed, exchange."""
        arm_requests = [self._arm_request(name, st, rnd) for name, st in self.arms.items() if st.live]
        batched = [r for r in arm_requests if r.arm != RETRAIN] + self.references.requests(rnd, self.runtime)
        alone = [r for r in arm_requests if r.arm == RETRAIN]
        outcomes = self.runtime.train(batched) + [self.runtime.train([r])[0] for r in alone]
        for request, res in zip(batched + alone, outcomes, strict=True):
            if request.arm in self.arms:
                self._apply(self.arms[request.arm], request, res, rnd)
            else:
                self.references.apply(request, res)

    def _apply(self, st: ArmState, request: TrainRequest, res: TrainOutcome, rnd: int) -> None:
        if res.diverged:
            self.mark_diverged(st, rnd, f"round {rnd}: {res.diverged}")
            return
        if request.keep_client_states:
            st.history.append(HistoryEntry(rnd, clone_state(st.state), res.client_states, res.num_examples))
        st.state = res.state
        self.costs.add_round(request.arm, rnd, res)
        if not request.clients:
            self.writer.event("empty_round", arm=request.arm, round=rnd)
        if res.failed or self.sc.runtime.client_failure_rate > 0:
            self.writer.metric(request.arm, rnd, None, "failed_clients", len(res.failed))
        if res.failed:
            self.writer.event("client_failures", arm=request.arm, round=rnd, clients=sorted(res.failed),
                              reasons=[res.failed[c] for c in sorted(res.failed)])

    # -- audit -------------------------------------------------------------------------
    def live_arms(self) -> dict[str, ArmState]:
        """Every arm but those marked diverged (frozen, no longer audited)."""
        return {name: st for name, st in self.arms.items() if st.live}

    def score_rounds(self) -> set[float]:
        return {r - 0.5 for r in self.events_at} | {float(self.sc.train.rounds)}

    def audit(self, label: float) -> dict[str, float]:
        """Accuracies, distance to retrain and membership metrics of every arm
        at a round label; returns test accuracy by arm."""
        accs = {}
        t0 = time.perf_counter()
        for name, st in self.live_arms().items():
            rows = self.auditor.rows(name, label, self.model_of(st.state))
            self.record(rows)
            accs[name] = next(r.value for r in rows if r.metric == "test_accuracy")
        if RETRAIN in self.arms and label > 0:
            ref = self.arms[RETRAIN].state
            for name, st in self.live_arms().items():
                dist = torch.sqrt(sum(((st.state[k].float() - ref[k].float()) ** 2).sum() for k in ref))
                self.writer.metric(name, label, None, "l2_to_retrain", float(dist))
        t1 = time.perf_counter()
        if self.membership is not None:
            for name, st in self.live_arms().items():
                self.record(self.membership.evaluate(name, label, self.model_of(st.state), self.score_rounds()))
        t2 = time.perf_counter()
        if label >= 1 and label == int(label):
            # Timings for simulations/benchmark.py: the auditor's accuracies, the oracle's membership audit.
            self.writer.event("round_end", round=int(label), test_accuracy=accs,
                              accuracy_audit_s=t1 - t0, oracle_s=t2 - t1)
        return accs

    def finish(self) -> None:
        sc = self.sc
        # Method arms shared original's prefix: give them its rows so every
        # arm's curve is complete in the table.
        if self.first_event is not None and self.methods:
            prefix = [r for r in self.writer.rows if r.arm == ORIGINAL and r.round <= self.first_event - 1]
            for name in self.methods:
                self.record([r._replace(arm=name) for r in prefix])
        if RETRAIN in self.arms:
            total = self.costs.retrain_cost(sc.train.rounds)
            for rnd in self.events_at:
                for key, value in (("steps", total.steps), ("bytes", total.bytes), ("wall_s", total.wall_s)):
                    self.writer.metric(RETRAIN, rnd, None, f"retrain_{key}_to_end", value)
        if self.membership is not None:
            frame = self.writer.metrics_frame()
            self.record(over_unlearning_rows(frame, list(self.methods), sc.forgetting_clients()))
            events = {c: ev.round for ev in sc.events for c in ev.client_ids}
            self.record(relapse_rows(frame, list(self.methods), events))
            for msg in self.membership.warnings:
                self.writer.event("warning", message=msg)
            for frame in self.membership.score_frames:
                self.writer.scores(frame)



def run_scenario(
    connect: Connect,
    scenario: Scenario,
    out_dir: str | Path,
    progress: ProgressFn | None = None,
    resume: bool = False,
) -> RunSummary:
    """Run a scenario over the federation ``connect`` gives and write its run
    directory; ``resume`` continues it from the directory's checkpoint instead
    (or starts it over when it was interrupted before its first complete round)."""
    checkpoint = load_checkpoint(out_dir) if resume and (Path(out_dir) / CHECKPOINT).exists() else None
    snapshot = checkpoint["writer"] if checkpoint else None
    trackers = trackers_for(scenario, out_dir, snapshot.get("trackers") if snapshot else None)
    writer = RunWriter(out_dir, scenario.to_toml(), snapshot, trackers)
    ok = False
    try:
        # Same thread count on the server as on the clients (bit-identical engines).
        torch.set_num_threads(max(1, int(scenario.runtime.num_cpus)))
        summary = ScenarioRun(connect, scenario, writer, progress).run(checkpoint)
        ok = True
    except BaseException as err:
        writer.event("error", kind=type(err).__name__, message=str(err))
        raise
    finally:
        writer.close(ok)
    if not scenario.runtime.keep_checkpoints:
        (Path(out_dir) / CHECKPOINT).unlink(missing_ok=True)
    return summary
