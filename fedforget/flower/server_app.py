"""The fedforget ServerApp: one main that drives every arm over one Grid.

Timeline of a scenario with a withdrawal at round t (DESIGN "data flow"):

- rounds 1..t-1: ``original`` and ``retrain`` train (retrain never samples the
  withdrawn clients); method arms do not exist yet: they share original's prefix.
- round t: each method arm branches from original's model after round t-1, runs
  its unlearning step (which may ask the withdrawing client through
  ``train.unlearn``) and then ``recovery_rounds`` FedAvg rounds over the remaining
  clients; this replaces the arm's ordinary round-t training. ``original`` and
  ``retrain`` train round t as usual.
- rounds t+1..T: every arm trains; withdrawn clients are never sampled again.

A deletion event (``delete_fraction``, ``delete_class``) works the same way, but
the client stays: its train messages carry the deletion events in force
(``drop``) and it trains on the rest of its data (``retrain`` from round 1).

After every round each arm's model is audited (accuracies, and from the oracle
issue on, membership metrics); rows go to the run directory.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedforget.config import Scenario
from fedforget.data import federated_data_for
from fedforget.data.federated import forget_ids
from fedforget.evaluation import Auditor
from fedforget.flower.client_app import scenario_from_context
from fedforget.flower.federation import FederationHandle, FederationRuntime, TrainJob
from fedforget.models import build_model
from fedforget.oracle.audit import LiraShadows, MembershipAudit, audit_ids, lira_in_masks, over_unlearning_rows
from fedforget.results import RunWriter
from fedforget.schedule import ORIGINAL, RETRAIN, Arm, derive_seed, initial_arms
from fedforget.training import evaluate
from fedforget.unlearning import HistoryEntry, get_method, method_params

ProgressFn = Callable[[int, dict[str, float]], None]


class ArmState:
    """An arm and its current global model state.

    ``seed`` overrides the scenario seed for sampling and data order (shadow
    federations of the LiRA oracle); ``until`` is the last round it trains;
    ``ids`` replaces some clients' training data by given sample ids (IN shadows).
    """

    def __init__(
        self,
        arm: Arm,
        state: dict[str, torch.Tensor],
        history: list[HistoryEntry] | None = None,
        seed: int | None = None,
        until: int | None = None,
        ids: dict[int, np.ndarray] | None = None,
    ):
        self.arm = arm
        self.ids = ids
        self.state = state
        self.history: list[HistoryEntry] = history if history is not None else []
        self.seed = seed
        self.until = until


def _clone(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in state.items()}


def run_scenario(
    grid: Grid,
    scenario: Scenario,
    out_dir: str | Path,
    progress: ProgressFn | None = None,
    scenario_index: int = 0,
) -> None:
    """Run a scenario over ``grid`` and write its run directory."""
    writer = RunWriter(out_dir, scenario.to_toml())
    ok = False
    try:
        _drive(grid, scenario, writer, progress, scenario_index)
        ok = True
    except BaseException as err:
        writer.event("error", kind=type(err).__name__, message=str(err))
        raise
    finally:
        writer.close(ok)


def _drive(grid: Grid, sc: Scenario, writer: RunWriter, progress: ProgressFn | None, sc_index: int) -> None:
    fd = federated_data_for(sc)
    n_clients = sc.data.num_clients
    torch.set_num_threads(max(1, int(sc.runtime.num_cpus)))

    def new_model() -> torch.nn.Module:
        return build_model(sc.model.name, fd.input_shape, fd.num_classes, sc.model.hidden, seed=0)

    init = build_model(sc.model.name, fd.input_shape, fd.num_classes, sc.model.hidden, seed=derive_seed(sc.seed, "init"))
    writer.event(
        "run_start",
        scenario=sc.name,
        seed=sc.seed,
        num_clients=n_clients,
        train_sizes=[len(t) for t in fd.train_ids],
        holdout_sizes=[len(h) for h in fd.holdout_ids],
        test_size=len(fd.test_ids),
        parameters=sum(p.numel() for p in init.parameters()),
    )
    runtime = FederationRuntime(grid, sc.seed, n_clients, sc.train.fraction, writer, sc_index)

    withdrawn = sc.withdrawn_clients()
    forgetting = sc.forgetting_clients()  # withdrawn + clients that delete data
    deletions = [i for i, ev in enumerate(sc.events) if not ev.withdraws]
    # The forget set of every (event, client): the oracle's members, the forget accuracy.
    forget_sets = {c: forget_ids(fd, ev, c, sc.seed) for ev in sc.events for c in ev.client_ids}
    events_at: dict[int, list] = {}
    for i, ev in enumerate(sc.events):
        events_at.setdefault(ev.round, []).append((i, ev))
    first_event = min(events_at) if events_at else None
    methods = {name: get_method(name, method_params(sc, name)) for name in sc.unlearning.methods}
    history_rounds: dict[str, set[int]] = {
        name: set(m.history_rounds(sc.train.rounds, sorted(events_at))) for name, m in methods.items()
    }
    original_history_rounds = set().union(*history_rounds.values()) if history_rounds else set()

    auditor = Auditor(fd, forget_sets=forget_sets, withdrawn=withdrawn)
    test_x, test_y = fd.test()
    scratch = new_model()

    def model_of(state: dict[str, torch.Tensor]) -> torch.nn.Module:
        scratch.load_state_dict(state)
        return scratch

    def test_accuracy(model: torch.nn.Module) -> float:
        return evaluate(model, test_x, test_y)[1]

    def audit(name: str, rnd: int, state: dict[str, torch.Tensor]) -> float:
        acc = float("nan")
        for client, metric, value in auditor.rows(model_of(state)):
            writer.metric(name, rnd, client, metric, value)
            if metric == "test_accuracy":
                acc = value
        return acc

    arms: dict[str, ArmState] = {
        a.name: ArmState(a, _clone(init.state_dict()))
        for a in initial_arms(list(methods), withdrawn, bool(sc.events), deletions)
    }
    for name, st in arms.items():
        audit(name, 0, st.state)

    # Membership audit: oracles calibrated at each event on original's model.
    membership = None
    controls: list[int] = []
    shadows: dict[str, ArmState] = {}  # LiRA shadow federations (not arms of the study)
    shadow_of: dict[int, list[str]] = {}
    shadow_masks: dict[int, np.ndarray] = {}
    lira_params = {"fixed_variance": sc.oracle.lira_fixed_variance} if sc.oracle.attack == "lira" else None
    if sc.events:
        membership = MembershipAudit(
            fd, sc.seed, sc.oracle.attack, sc.oracle.n_boot, sc.oracle.controls, sc.oracle.scores
        )
        controls = membership.control_clients(forgetting)
        if sc.oracle.attack == "lira":
            shadows, shadow_of, shadow_masks = _lira_shadow_arms(sc, fd, withdrawn + controls, first_event)
            writer.event("lira_shadows", count=len(shadows), online=sc.oracle.lira_online,
                         rounds_each=[s.until for s in shadows.values()])

    def shadow_models(clients: list[int]) -> dict[int, LiraShadows]:
        out = {}
        for c in clients:
            models = {}
            for name in shadow_of.get(c, []):
                m = new_model()
                m.load_state_dict(shadows[name].state)
                models[name] = m
            out[c] = LiraShadows(
                out_models=[m for n, m in models.items() if n.startswith("shadow-without-")],
                in_models=[m for n, m in models.items() if n.startswith("shadow-with-")],
                in_masks=shadow_masks.get(c),
            )
        return out

    def record(rows) -> None:
        for arm_name, rnd_, client, metric, value in rows:
            writer.metric(arm_name, rnd_, client, metric, value)

    for rnd in range(1, sc.train.rounds + 1):
        t_round = time.perf_counter()
        just_unlearned: set[str] = set()
        if rnd in events_at:
            if rnd == first_event:
                for name in methods:
                    orig = arms[ORIGINAL]
                    arms[name] = ArmState(Arm(name, method=name), _clone(orig.state), list(orig.history))
            for i, ev in events_at[rnd]:
                writer.event("withdraw" if ev.withdraws else "delete", round=rnd, clients=ev.client_ids, kind=ev.kind,
                             forget_sizes=[len(forget_sets[c]) for c in ev.client_ids])
                audited = ev.client_ids + (controls if rnd == first_event else [])
                before = model_of(arms[ORIGINAL].state)
                members = {c: forget_sets[c] for c in ev.client_ids}
                record(membership.calibrate(
                    before, rnd, ev.client_ids, ev.withdraws, shadow_models(ev.client_ids), lira_params, members
                ))
                if rnd == first_event and controls:
                    record(membership.calibrate(before, rnd, controls, False, shadow_models(controls), lira_params))
                writer.event("oracle_calibrated", round=rnd, clients=audited, attack=sc.oracle.attack)
                for name, method in methods.items():
                    _unlearn(sc, writer, runtime, arms[name], method, i, ev, new_model, fd.num_classes, test_accuracy)
                    just_unlearned.add(name)

        jobs = []
        for name, st in shadows.items():
            if st.until is not None and rnd <= st.until:
                clients = runtime.strategy.sample(rnd, st.arm.excluded, seed=st.seed)
                jobs.append((name, False, TrainJob(name, rnd, st.state, clients, seed=st.seed, ids=st.ids)))
        for name, st in arms.items():
            if name in just_unlearned:
                continue
            keep = (name == ORIGINAL and rnd in original_history_rounds and rnd < (first_event or 0)) or (
                st.arm.method is not None and rnd in history_rounds.get(st.arm.method, set())
            )
            clients = runtime.strategy.sample(rnd, st.arm.excluded)
            drop = sorted(st.arm.dropped)
            jobs.append((name, keep, TrainJob(name, rnd, st.state, clients, keep_client_states=keep, drop=drop)))
        outcomes = runtime.train([j for _, _, j in jobs])
        for (name, keep, job), res in zip(jobs, outcomes, strict=True):
            st = arms[name] if name in arms else shadows[name]
            if keep:
                st.history.append(HistoryEntry(rnd, _clone(st.state), res.client_states, res.num_examples))
            st.state = res.state
            if not job.clients:
                writer.event("empty_round", arm=name, round=rnd)

        accs = {name: audit(name, rnd, st.state) for name, st in arms.items()}
        if RETRAIN in arms:
            # Parameter-space distance to the model that never saw the withdrawn clients.
            ref = arms[RETRAIN].state
            for name, st in arms.items():
                dist = torch.sqrt(sum(((st.state[k].float() - ref[k].float()) ** 2).sum() for k in ref))
                writer.metric(name, rnd, None, "l2_to_retrain", float(dist))
        if membership is not None:
            for name, st in arms.items():
                record(membership.evaluate(name, rnd, model_of(st.state), sc.train.rounds))
        writer.event("round_end", round=rnd, seconds=time.perf_counter() - t_round, test_accuracy=accs)
        if progress is not None:
            progress(rnd, accs)

    # Method arms shared original's prefix: give them its rows so every arm's
    # curve is complete in the table.
    if first_event is not None and methods:
        prefix = [r for r in writer.rows if r[0] == ORIGINAL and r[1] < first_event]
        for name in methods:
            writer.rows += [(name, *r[1:]) for r in prefix]
    if membership is not None:
        record(over_unlearning_rows(writer.metrics_frame(), list(methods), forgetting))
        for msg in membership.warnings:
            writer.event("warning", message=msg)
        for frame in membership.score_frames:
            writer.scores(frame)



def _lira_shadow_arms(
    sc: Scenario, fd, audited: list[int], first_event: int
) -> tuple[dict[str, ArmState], dict[int, list[str]], dict[int, np.ndarray]]:
    """The LiRA oracle's reference: ``oracle.shadows`` shadow federations per
    audited client, with other seeds, trained in this runtime up to the client's
    calibration round. OUT shadows never sample the client; IN shadows (online
    only) let it train on a balanced random half of its audit samples (members
    and non-members), so every sample has an IN and an OUT distribution.

    Returns the shadow arms by name, their names per client, and the IN masks.
    """
    shadows: dict[str, ArmState] = {}
    shadow_of: dict[int, list[str]] = {}
    shadow_masks: dict[int, np.ndarray] = {}
    event_of = {c: ev.round for ev in sc.events for c in ev.client_ids}
    kinds = ("without", "with") if sc.oracle.lira_online else ("without",)
    for c in audited:
        stop = event_of.get(c, first_event) - 1
        audit_set = np.concatenate(audit_ids(fd, c, sc.seed))
        if sc.oracle.lira_online:
            shadow_masks[c] = lira_in_masks(len(audit_set), sc.oracle.shadows, sc.seed, c)
        for k in range(sc.oracle.shadows):
            for kind in kinds:
                s_seed = derive_seed(sc.seed, "shadow", kind, c, k)
                init = build_model(sc.model.name, fd.input_shape, fd.num_classes, sc.model.hidden, seed=derive_seed(s_seed, "init"))
                name = f"shadow-{kind}-{c}-{k}"
                shadows[name] = ArmState(
                    Arm(name, excluded={c} if kind == "without" else set()),
                    _clone(init.state_dict()),
                    seed=s_seed,
                    until=stop,
                    ids={c: audit_set[shadow_masks[c][k]]} if kind == "with" else None,
                )
                shadow_of.setdefault(c, []).append(name)
    return shadows, shadow_of, shadow_masks

def _unlearn(sc, writer, runtime, st: ArmState, method, event_index: int, ev, new_model, num_classes, test_accuracy) -> None:
    """Apply one method's unlearning for one event, then its recovery rounds.

    A withdrawing client is excluded from the arm after the step (it may still be
    asked for unlearning work during it); a deletion is in force from the step on
    (the client keeps training on the rest of its data).
    """
    clients = ev.client_ids
    rnd = ev.round
    excluded = st.arm.excluded | set(clients) if ev.withdraws else set(st.arm.excluded)
    if not ev.withdraws:
        st.arm.dropped.add(event_index)
    handle = FederationHandle(
        runtime,
        st.arm.name,
        rnd,
        clients,
        excluded,
        new_model,
        num_classes,
        st.history,
        test_accuracy,
        sc.train.local_epochs,
        sorted(st.arm.dropped),
        event_index,
    )
    model = new_model()
    model.load_state_dict(st.state)
    acc_before = test_accuracy(model)
    t0 = time.perf_counter()
    model, cost = method.unlearn(model, handle)
    cost.wall_s = time.perf_counter() - t0
    acc_after = test_accuracy(model)
    writer.event(
        "unlearn",
        arm=st.arm.name,
        round=rnd,
        clients=clients,
        test_accuracy_before=acc_before,
        test_accuracy_after=acc_after,
        **cost.as_metrics(),
    )
    for key, value in cost.as_metrics().items():
        if key != "cost_rounds":
            writer.metric(st.arm.name, rnd, None, key, value)
    writer.metric(st.arm.name, rnd, None, "cost_rounds", cost.rounds)
    st.arm.excluded = excluded
    if sc.unlearning.recovery_rounds:
        model = handle.run_rounds(model, sc.unlearning.recovery_rounds, "recovery")
    st.state = _clone(model.state_dict())


def default_out_dir(sc: Scenario) -> str:
    return f"runs/{sc.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def make_server_app(
    scenarios: list[Scenario] | None = None,
    out_dirs: list[str | Path] | None = None,
    progress: Callable[[int], ProgressFn] | None = None,
) -> ServerApp:
    """Build the ServerApp.

    With bound ``scenarios`` (and their ``out_dirs``) it runs them one after the
    other over the same Grid, i.e. in one runtime; otherwise it reads one
    scenario from the run config (``flwr run .``). ``progress(i)`` gives the
    per-round callback of scenario ``i``.
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        if scenarios is None:
            sc = scenario_from_context(context)
            out = str(context.run_config.get("out", "")) or default_out_dir(sc)
            run_scenario(grid, sc, out)
            from fedforget.report import write_report

            write_report(out)
            return
        for i, sc in enumerate(scenarios):
            out = out_dirs[i] if out_dirs else default_out_dir(sc)
            run_scenario(grid, sc, out, progress(i) if progress else None, scenario_index=i)

    return app


# Module-level app for ``flwr run .``.
app = make_server_app()
