"""Choose Forsaken's defaults across scenarios, and draw every method's
cost-forgetting frontier.

    python simulations/forsaken_sweep.py [--set tune|report|all] [--seeds 1]

For each scenario the federation is trained centrally with the project's own
pieces (the scenario's data roles, models, local training, seeded sampling and
FedAvg), up to the event round for the model that must forget (`original`
after round t-1) and for the model that never saw the client (`retrain`). Every
method setting then runs its real unlearning step through the in-process
federation (:class:`fedforget.protocol.local.LocalFederation`: the same
client operations as a run, without Flower), and the membership oracle the runs
use (loss attack, calibrated on the model before the event, non-members from
the client's audit part and the test set) judges the result right after the
step: the "FR at the event" of a run.

Scenarios: ``tune`` (three scenarios that differ in dataset, partitioning and
model, a CNN on mnist5k among them) choose the defaults; ``report`` are the
scenarios the README reports on (``configs/withdrawal.toml``,
``configs/two_withdrawals.toml``'s first event, ``configs/noniid_cnn.toml``),
never used to choose. Writes ``simulations/results/forsaken_sweep.csv``.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import time
from pathlib import Path

import pandas as pd
import torch

from fedforget import registry
from fedforget.analysis.stats import (
    SIGNAL_AUC,  # the project's one "the oracle sees the client" threshold
)
from fedforget.config import Scenario, load_scenario, scenario_from_dict
from fedforget.data.federated import build_federated_data
from fedforget.models import build_model
from fedforget.oracle.audit import nonmember_ids
from fedforget.oracle.oracle import MembershipOracle
from fedforget.protocol.local import LocalFederation
from fedforget.schedule import derive_seed, local_seed, sample_clients
from fedforget.training import evaluate, train_local
from fedforget.unlearning import ClientData, HistoryEntry, get_method

HERE = Path(__file__).resolve().parent
CONFIGS = HERE.parent / "configs"

TUNE = {
    "synthetic-dirichlet-mlp": {
        "name": "tune-synthetic-dirichlet", "seed": 11,
        "data": {"dataset": "synthetic", "partitioner": "dirichlet", "alpha": 0.5, "num_clients": 6,
                 "synthetic": {"samples": 3000, "features": 200, "informative": 40, "classes": 20}},
        "model": {"name": "mlp", "hidden": [256]},
        "train": {"rounds": 8, "local_epochs": 5, "lr": 0.05},
        "events": [{"round": 8, "client": 1}],
    },
    "synthetic-pathological-mlp2": {
        "name": "tune-synthetic-pathological", "seed": 14,
        "data": {"dataset": "synthetic", "partitioner": "pathological", "classes_per_client": 8, "num_clients": 4,
                 "synthetic": {"samples": 2400, "features": 120, "informative": 30, "classes": 15}},
        "model": {"name": "mlp", "hidden": [128, 128]},
        "train": {"rounds": 10, "local_epochs": 5, "lr": 0.05},
        "events": [{"round": 9, "client": 2}],
    },
    "mnist5k-shard-cnn": {
        "name": "tune-mnist-cnn", "seed": 13,
        "data": {"dataset": "mnist5k", "partitioner": "shard", "shards_per_client": 4, "num_clients": 4},
        "model": {"name": "cnn", "hidden": [64]},
        "train": {"rounds": 8, "local_epochs": 5, "lr": 0.05},
        "events": [{"round": 8, "client": 0}],
    },
}
REPORT = {
    "withdrawal": CONFIGS / "withdrawal.toml",
    "two_withdrawals (client 3)": CONFIGS / "two_withdrawals.toml",
    "noniid_cnn": CONFIGS / "noniid_cnn.toml",
}
FORSAKEN_GRID = {
    "generator": ["identity", "learned"],
    "step_size": [0.02, 0.05, 0.1],
    "mask_fraction": [0.1, 0.25, 1.0],
}
OTHERS = {"none": {}, "pga": {}, "perturb": {}, "fnn": {}, "federaser": {}}


def _fedavg(sc: Scenario, fd, model, rounds: int, excluded: set[int], keep: set[int] | None = None, first: int = 1):
    """FedAvg as the runs do it (seeded sampling and data order), rounds
    ``first .. rounds``; returns the model, its client steps and the stored
    history (rounds in ``keep``)."""
    steps, history = 0, []
    for rnd in range(first, rounds + 1):
        clients = sample_clients(sc.seed, rnd, sc.data.num_clients, sc.train.fraction, excluded)
        states, counts = {}, {}
        for c in clients:
            local = copy.deepcopy(model)
            x, y = fd.client_train(c)
            res = train_local(local, x, y, epochs=sc.train.local_epochs, batch_size=sc.train.batch_size,
                              lr=sc.train.lr, seed=local_seed(sc.seed, rnd, c))
            steps += res.steps
            states[c], counts[c] = local.state_dict(), res.num_examples
        total = sum(counts.values())
        new = {k: sum(states[c][k] * (counts[c] / total) for c in clients) for k in model.state_dict()}
        if keep and rnd in keep:
            history.append(HistoryEntry(rnd, copy.deepcopy(model.state_dict()), states, counts))
        model.load_state_dict(new)
    return model, steps, history


class Federation:
    """One scenario trained to its first event, with its oracle."""

    def __init__(self, sc: Scenario):
        self.sc = sc
        ev = sc.events[0]
        self.client, self.t = ev.client_ids[0], ev.round
        self.fd = fd = build_federated_data(sc.data.model_dump(), sc.seed)
        torch.manual_seed(0)
        self.new = lambda: build_model(sc.model.name, fd.input_shape, fd.num_classes, sc.model.hidden, seed=0)
        init = build_model(sc.model.name, fd.input_shape, fd.num_classes, sc.model.hidden,
                           seed=derive_seed(sc.seed, "init"))
        keep = set(range(1, self.t, 2))  # federaser's default interval 2
        self.original, _, self.history = _fedavg(sc, fd, copy.deepcopy(init), self.t - 1, set(), keep)
        self.retrain, self.retrain_steps, _ = _fedavg(sc, fd, copy.deepcopy(init), self.t - 1, {self.client})
        members = fd.train_ids[self.client]
        non = nonmember_ids(fd, self.client, sc.seed, members, sc.oracle.min_nonmembers)
        self.oracle = MembershipOracle.calibrate(self.original, (*fd.tensors(members), members),
                                                 (*fd.tensors(non), non), n_boot=0)
        self.clients = {
            c: ClientData(c, *fd.client_train(c), *fd.client_validation(c), fd.num_classes)
            for c in range(sc.data.num_clients)
        }
        self.reference = self.judge(self.retrain)

    def judge(self, model) -> dict[str, float]:
        rep = self.oracle.evaluate(model).metrics
        x, y = self.fd.tensors(self.fd.train_ids[self.client])
        return {"fr": rep["fr"], "auc": rep["mia_auc"], "forget_acc": evaluate(model, x, y)[1],
                "test_acc": evaluate(model, *self.fd.test())[1]}

    def unlearn(self, method: str, params: dict) -> dict[str, float]:
        fed = LocalFederation(self.new, self.clients, [self.client], self.fd.num_classes,
                              server_validation=self.fd.server_validation(), local_epochs=self.sc.train.local_epochs,
                              lr=self.sc.train.lr, batch_size=self.sc.train.batch_size,
                              history=self.history, seed=self.sc.seed, round=self.t)
        t0 = time.perf_counter()
        model, cost = get_method(method, params).unlearn(copy.deepcopy(self.original), fed)
        wall = time.perf_counter() - t0
        out = self.judge(model)
        return {
            **out, "d_fr": out["fr"] - self.reference["fr"], "d_auc": out["auc"] - self.reference["auc"],
            "d_test_acc": out["test_acc"] - self.reference["test_acc"],
            "d_forget_acc": out["forget_acc"] - self.reference["forget_acc"],
            "client_steps": cost.client_steps, "exchanges": fed.exchanges, "wall_s": wall,
            "speedup_steps": self.retrain_steps / max(cost.client_steps, 1),
        }


def _settings():
    keys = list(FORSAKEN_GRID)
    for values in itertools.product(*FORSAKEN_GRID.values()):
        yield "forsaken", dict(zip(keys, values, strict=True))
    for name, params in OTHERS.items():
        yield name, params


def _scenarios(which: str, seeds: int) -> dict[str, Scenario]:
    out = {}
    for k in range(seeds):
        if which in ("tune", "all"):
            for name, d in TUNE.items():
                out[f"{name} s{k}"] = scenario_from_dict({**d, "seed": d["seed"] + 100 * k})
        if which in ("report", "all"):
            for name, path in REPORT.items():
                sc = load_scenario(path, [f"seed={load_scenario(path).seed + k}"])
                out[f"{name} s{k}"] = sc
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", default="all", choices=["tune", "report", "all"])
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--out", default=str(HERE / "results" / "forsaken_sweep.csv"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for scen_name, sc in _scenarios(args.set, args.seeds).items():
        t0 = time.perf_counter()
        fed = Federation(sc)
        base = {"scenario": scen_name, "set": "report" if scen_name.split(" s")[0] in REPORT else "tune",
                "calibration_auc": fed.oracle.calibration.metrics["mia_auc"],
                "retrain_fr": fed.reference["fr"], "retrain_auc": fed.reference["auc"],
                "retrain_steps_to_event": fed.retrain_steps}
        print(f"{scen_name}: prefix {time.perf_counter() - t0:.1f} s, calibration AUC "
              f"{base['calibration_auc']:.3f}, retrain FR {base['retrain_fr']:.3f} AUC {base['retrain_auc']:.3f}",
              flush=True)
        for method, params in _settings():
            if method not in registry.methods:
                continue
            res = fed.unlearn(method, params)
            rows.append({**base, "method": method, **{f"p_{k}": v for k, v in params.items()}, **res})
            print(f"  {method} {params}: FR {res['fr']:.3f} (Δ {res['d_fr']:+.3f}) AUC {res['auc']:.3f} "
                  f"(Δ {res['d_auc']:+.3f}) test Δ {res['d_test_acc']:+.3f} steps ×{res['speedup_steps']:.1f} "
                  f"exchanges {res['exchanges']} {res['wall_s']:.1f} s", flush=True)
    df = pd.DataFrame(rows)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out, index=False)
    print(summary(df))


def summary(df: pd.DataFrame) -> str:
    """Forsaken settings ranked on the tuning scenarios: mean |ΔFR| + |ΔAUC| to
    retrain over the scenarios with signal, among settings with test accuracy
    within 2 points of retrain's and ≥ 10× fewer client steps than retraining
    in every tuning scenario (with or without signal)."""
    f = df[(df.method == "forsaken") & (df.set == "tune")].copy()
    if f.empty:
        return ""
    keys = [c for c in f.columns if c.startswith("p_")]
    f["gap"] = (f.d_fr.abs() + f.d_auc.abs()).where(f.calibration_auc >= SIGNAL_AUC)
    g = f.groupby(keys).agg(gap=("gap", "mean"), worst_test=("d_test_acc", "min"), min_speedup=("speedup_steps", "min"),
                            exchanges=("exchanges", "mean")).reset_index()
    g["eligible"] = (g.worst_test >= -0.02) & (g.min_speedup >= 10)
    return g.sort_values(["eligible", "gap"], ascending=[False, True]).to_string(index=False)


if __name__ == "__main__":
    main()
