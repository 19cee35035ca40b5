"""One scenario run as an explicit round protocol (DESIGN "Round protocol").

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
    finish()                          tables, flags, warnings

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

import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from flwr.serverapp import Grid

from fedforget.config import Scenario
from fedforget.data import federated_data_for
from fedforget.data.federated import forget_ids
from fedforget.evaluation import Auditor
from fedforget.flower.federation import (
    FailurePolicy, FederationHandle, FederationRuntime, TrainJob, TrainOutcome, divergence,
)
from fedforget.flower.strategy import DivergenceError
from fedforget.models import build_model
from fedforget.oracle.audit import MembershipAudit, over_unlearning_rows, relapse_rows
from fedforget.oracle.reference import ReferenceRun
from fedforget.progress import ProgressFn
from fedforget.results import CHECKPOINT, RunWriter
from fedforget.schedule import ORIGINAL, RETRAIN, Arm, derive_seed, initial_arms
from fedforget.training import evaluate
from fedforget.unlearning import CostRecord, HistoryEntry, UnlearningMethod, get_method, method_params

State = dict[str, torch.Tensor]


def clone_state(state: State) -> State:
    return {k: v.detach().clone() for k, v in state.items()}


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


@dataclass
class RoundCost:
    """What one regular round of one arm cost the federation."""

    round: int
    steps: int
    bytes: int
    wall_s: float


#: Steps shorter than this are timer noise (``none`` takes microseconds): their
#: wall-clock speed-up is reported as infinite, like their zero steps and bytes.
WALL_RESOLUTION_S = 1e-3


def _speedup(reference: float, cost: float, resolution: float = 0.0) -> float:
    return float("inf") if cost <= resolution else reference / cost


class ScenarioRun:
    """One scenario over one Grid, step by step; see the module docstring."""

    def __init__(
        self,
        grid: Grid,
        scenario: Scenario,
        writer: RunWriter,
        progress: ProgressFn | None = None,
        scenario_index: int = 0,
    ) -> None:
        self.sc = sc = scenario
        self.writer = writer
        self.progress = progress
        self.grid = grid
        self.scenario_index = scenario_index
        self.runtime: FederationRuntime | None = None  # connected in start()
        self.fd = fd = federated_data_for(sc)
        self.methods: dict[str, UnlearningMethod] = {
            name: get_method(name, method_params(sc, name)) for name in sc.unlearning.methods
        }
        self.forget_sets = {c: forget_ids(fd, ev, c, sc.seed) for ev in sc.events for c in ev.client_ids}
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
        self.references: dict[str, tuple[ReferenceRun, State]] = {}
        self.round_costs: dict[str, list[RoundCost]] = {}
        self.step_costs: dict[tuple[str, int], CostRecord] = {}
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
        for arm, rnd, client, metric, value in rows:
            self.writer.metric(arm, rnd, client, metric, value)

    def _plan_membership(self) -> MembershipAudit | None:
        """The audited clients and the reference training their attack asks for."""
        sc = self.sc
        if not sc.events:
            return None
        audit = MembershipAudit(
            self.fd, sc.seed, sc.oracle.attack, sc.oracle.attack_params(), sc.oracle.n_boot,
            sc.oracle.min_nonmembers, sc.oracle.scores,
        )
        for ev in sc.events:
            for c in ev.client_ids:
                audit.add(c, ev.round, ev.withdraws, self.forget_sets[c])
        for c in audit.control_clients(sc.forgetting_clients(), sc.oracle.controls):
            audit.add(c, self.first_event, False, self.fd.train_ids[c])
        return audit

    # -- the loop ----------------------------------------------------------------
    def run(self, checkpoint: dict | None = None) -> None:
        """The whole run, or its continuation from a checkpoint (see :meth:`resume`)."""
        if checkpoint is None:
            self.start()
            first = 1
        else:
            first = self.resume(checkpoint) + 1
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

    # -- checkpoints -------------------------------------------------------------
    #: What a checkpoint holds of this object: every arm's model and method
    #: state, the oracle's calibrated state, costs so far (the data, the
    #: auditor and the runtime are rebuilt from the scenario).
    CHECKPOINTED = ("arms", "references", "round_costs", "step_costs", "membership", "methods")

    def checkpoint(self, rnd: int) -> None:
        """Atomically write what is needed to continue after round ``rnd``."""
        if not self.sc.runtime.checkpoints:
            return
        payload = {
            "round": rnd,
            "state": {k: getattr(self, k) for k in self.CHECKPOINTED},
            "writer": self.writer.snapshot(),
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state()},
        }
        path = self.writer.dir / CHECKPOINT
        tmp = path.with_name(path.name + ".tmp")
        torch.save(payload, tmp)
        os.replace(tmp, path)

    def resume(self, checkpoint: dict) -> int:
        """Restore a checkpoint's state and connect to the federation; returns
        the last complete round."""
        for key in self.CHECKPOINTED:
            setattr(self, key, checkpoint["state"][key])
        if self.membership is not None:
            self.membership.fd = self.fd
        torch.set_rng_state(checkpoint["rng"]["torch"])
        np.random.set_state(checkpoint["rng"]["numpy"])
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
            for run in self.membership.reference_runs:
                self.references[run.key] = (run, self.new_model(derive_seed(run.seed, "init")).state_dict())
            self.writer.event("oracle_references", count=len(self.references),
                              rounds_each=[r.rounds for r, _ in self.references.values()])
        self.audit(0)

    def connect(self) -> None:
        """Discover the federation's nodes and set up the message exchange."""
        sc, rt = self.sc, self.sc.runtime
        self.runtime = FederationRuntime(
            self.grid, sc.seed, sc.data.num_clients, sc.train.fraction, self.writer, self.scenario_index,
            FailurePolicy(rt.min_replies, rt.on_client_error, rt.client_retries, rt.on_divergence == "mark"),
        )

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
        finished = {}
        for key, (run, state) in self.references.items():
            if run.rounds <= rnd - 1:
                finished[key] = self.new_model()
                finished[key].load_state_dict(state)
        before = self.model_of(self.arms[ORIGINAL].state)
        t0 = time.perf_counter()
        self.record(self.membership.calibrate(rnd, before, finished))
        clients = [t.client for t in self.membership.targets if t.event_round == rnd]
        self.writer.event("oracle_calibrated", round=rnd, clients=clients, attack=self.sc.oracle.attack,
                          wall_s=time.perf_counter() - t0)

    def unlearn(self, st: ArmState, method: UnlearningMethod, event_index: int, ev) -> None:
        """One method's unlearning step for one event, between rounds t-1 and t.

        A withdrawing client is excluded from the arm after the step (it may be
        asked for unlearning work during it); a deletion is in force from the
        step on (the client keeps training on the rest of its data).
        """
        sc, rnd = self.sc, ev.round
        excluded = st.arm.excluded | set(ev.client_ids) if ev.withdraws else set(st.arm.excluded)
        if not ev.withdraws:
            st.arm.dropped.add(event_index)
        handle = FederationHandle(
            self.runtime, st.arm.name, rnd, ev.client_ids, excluded, self.new_model, self.fd.num_classes,
            st.history, self.validation_accuracy, sc.train.local_epochs, sorted(st.arm.dropped), event_index,
            server_validation=self._server_validation, train_lr=sc.train.lr,
        )
        model = self.new_model()
        model.load_state_dict(st.state)
        t0 = time.perf_counter()
        model, cost = method.unlearn(model, handle)
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
        total = self.step_costs.setdefault((st.arm.name, rnd), CostRecord())
        for key, value in vars(cost).items():
            setattr(total, key, getattr(total, key) + value)
        st.arm.excluded = excluded
        st.state = clone_state(model.state_dict())
        st.recovery_done, st.recovery_left = 0, sc.unlearning.recovery_rounds

    def mark_diverged(self, st: ArmState, label: float, what: str) -> None:
        """A non-finite arm: the run stops, or (on_divergence = "mark", method
        arms only) the arm is marked diverged and frozen from here on."""
        name = st.arm.name
        if self.sc.runtime.on_divergence != "mark" or name in (ORIGINAL, RETRAIN):
            raise DivergenceError(f"arm {name!r} diverged in {what} (is train.lr too high for this model?)")
        st.diverged_at = label
        self.writer.metric(name, label, None, "diverged", 1.0)
        self.writer.event("diverged", arm=name, round=label, what=what)

    def retrain_cost(self, last_round: int) -> RoundCost:
        """The retrain arm's cost over rounds 1..last_round."""
        rows = [c for c in self.round_costs.get(RETRAIN, []) if c.round <= last_round]
        return RoundCost(last_round, sum(c.steps for c in rows), sum(c.bytes for c in rows),
                         sum(c.wall_s for c in rows))

    def record_yardstick(self, rnd: int) -> None:
        """Retraining from scratch to the event redoes rounds 1..rnd-1 without
        the forgetting clients: its cost divides each method's into a speed-up."""
        if RETRAIN not in self.arms:
            return
        ref = self.retrain_cost(rnd - 1)
        for key, value in (("steps", ref.steps), ("bytes", ref.bytes), ("wall_s", ref.wall_s)):
            self.writer.metric(RETRAIN, rnd, None, f"retrain_{key}_to_event", value)
        speedups = {}
        for name in (n for n in self.methods if self.arms[n].live):
            cost = self.step_costs.get((name, rnd), CostRecord())
            speedups[name] = {
                "speedup_steps": _speedup(ref.steps, cost.client_steps),
                "speedup_bytes": _speedup(ref.bytes, cost.bytes_up + cost.bytes_down),
                "speedup_wall": _speedup(ref.wall_s, cost.wall_s, WALL_RESOLUTION_S),
            }
            for key, value in speedups[name].items():
                self.writer.metric(name, rnd, None, key, value)
        self.writer.event("yardstick", round=rnd, retrain_steps=ref.steps, retrain_bytes=ref.bytes,
                          retrain_wall_s=ref.wall_s, speedups=speedups)

    # -- regular rounds ------------------------------------------------------------
    def _arm_job(self, name: str, st: ArmState, rnd: int) -> TrainJob:
        method = self.methods.get(st.arm.method) if st.arm.method else None
        epochs = None
        if method is not None and st.recovery_left > 0:
            epochs = method.recovery_epochs(st.recovery_done)
            st.recovery_done, st.recovery_left = st.recovery_done + 1, st.recovery_left - 1
        keep = (name == ORIGINAL and self.first_event is not None and rnd < self.first_event
                and any(rnd in r for r in self.history_rounds.values())) or (
            method is not None and rnd in self.history_rounds.get(name, set()) and rnd < max(self.events_at))
        clients = self.runtime.strategy.sample(rnd, st.arm.excluded)
        return TrainJob(name, rnd, st.state, clients, epochs, keep_client_states=keep, drop=sorted(st.arm.dropped))

    def _reference_jobs(self, rnd: int) -> list[TrainJob]:
        jobs = []
        for key, (run, state) in self.references.items():
            if rnd <= run.rounds:
                clients = self.runtime.strategy.sample(rnd, set(run.excluded), seed=run.seed)
                jobs.append(TrainJob(key, rnd, state, clients, seed=run.seed, train_ids=run.train_ids))
        return jobs

    def train_round(self, rnd: int) -> None:
        """One regular round for every arm (and the oracle's reference training),
        in one batched exchange; ``retrain`` in its own, timed, exchange."""
        arm_jobs = [self._arm_job(name, st, rnd) for name, st in self.arms.items() if st.live]
        batched = [j for j in arm_jobs if j.arm != RETRAIN] + self._reference_jobs(rnd)
        alone = [j for j in arm_jobs if j.arm == RETRAIN]
        outcomes = self.runtime.train(batched) + [self.runtime.train([j])[0] for j in alone]
        for job, res in zip(batched + alone, outcomes, strict=True):
            if job.arm in self.arms:
                self._apply(self.arms[job.arm], job, res, rnd)
            else:
                if res.diverged:  # the oracle's own model: nothing to mark, the audit would be void
                    raise DivergenceError(f"the oracle's reference training {job.arm!r} diverged in round {rnd}: "
                                          f"{res.diverged}")
                run, _ = self.references[job.arm]
                self.references[job.arm] = (run, res.state)

    def _apply(self, st: ArmState, job: TrainJob, res: TrainOutcome, rnd: int) -> None:
        if res.diverged:
            self.mark_diverged(st, rnd, f"round {rnd}: {res.diverged}")
            return
        if job.keep_client_states:
            st.history.append(HistoryEntry(rnd, clone_state(st.state), res.client_states, res.num_examples))
        st.state = res.state
        self.round_costs.setdefault(job.arm, []).append(
            RoundCost(rnd, res.steps, res.bytes_up + res.bytes_down, res.wall_s))
        if not job.clients:
            self.writer.event("empty_round", arm=job.arm, round=rnd)
        if res.failed or self.sc.runtime.client_failure_rate > 0:
            self.writer.metric(job.arm, rnd, None, "failed_clients", len(res.failed))
        if res.failed:
            self.writer.event("client_failures", arm=job.arm, round=rnd, clients=sorted(res.failed),
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
            for client, metric, value in self.auditor.rows(self.model_of(st.state)):
                self.writer.metric(name, label, client, metric, value)
                if metric == "test_accuracy":
                    accs[name] = value
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
                self.record([(name, *r[1:]) for r in prefix])
        if RETRAIN in self.arms:
            total = self.retrain_cost(sc.train.rounds)
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


