"""Tune every unlearning method on equal footing, then check the choice on the
reported scenarios.

    python simulations/tune.py [--budget 8] [--seeds 3] [--scenarios NAME ...]
    python simulations/tune.py --signal            # calibration AUCs of the tuning scenarios only
    python simulations/tune.py --report [--seeds 3]  # defaults vs chosen settings, reported scenarios

**Search spaces.** Each method declares ``search_space`` on its class
(parameter -> values; the grid is their cartesian product). ``none`` declares
an empty space: nothing to tune, exactly one setting (its defaults).

**Equal budget.** Every tunable method gets exactly ``K`` settings
(``--budget K``, default 8): its defaults plus ``K - 1`` others drawn without
replacement from its grid by a fixed seed (:func:`settings`). A grid with
fewer than ``K - 1`` points besides the defaults is an error naming the method.

**Tuning scenarios** (:data:`TUNE`) share no dataset family, no partitioner and
no model with any reported scenario (:data:`REPORT`: ``configs/withdrawal.toml``,
``configs/two_withdrawals.toml``, ``configs/noniid_cnn.toml``,
``configs/scale100.toml`` and the number-of-clients study; checked by
:func:`check_disjoint` before anything runs). Each is seeded ``--seeds`` times;
its FL setup (samples per client, local epochs, event round) was set for
membership signal (original's calibration MIA AUC on the withdrawn client
>= :data:`fedforget.analysis.stats.SIGNAL_AUC`, the project's one threshold),
never for a method.

**Measurement** (as ``simulations/forsaken_sweep.py``): per scenario and seed
the federation is trained centrally with the project's own pieces to the event,
once with the client (``original``, the model that must forget) and once
without it (``retrain``, to the event). Every method setting runs its real
unlearning step on ``original`` through the in-process federation
(:class:`fedforget.protocol.local.LocalFederation`; the history it asks for
through ``history_rounds``; rounds over the remaining clients sampled with the
scenario's ``train.fraction``), and the runs' membership oracle (loss attack,
calibrated on ``original``) judges the result right after the step. Then the
method's model and retrain's train :data:`RECOVERY_ROUNDS` more FedAvg rounds
over the remaining clients (the same sampling and data order for both), and the
oracle judges both again: forgetting that the federation re-teaches (relapse)
shows there. At both points the client-level test (the runs' permutation test
on the client's whole forget set against never-trained pseudo-clients) says
whether the client is still detected. Gaps are paired per seed: method −
retrain on the same data, initialisation and sampling.

**Selection rule** (declared before the run; :func:`summarise`, :func:`choose`).
Per method and setting, over the tuning scenarios × seeds:

1. *Objective*: the mean over the (scenario, seed) pairs with signal of
   (|ΔAUC at the step| + |ΔAUC after the recovery rounds|) / 2, ΔAUC being
   the paired gap to retrain in the oracle's MIA AUC: a step that forgets and
   then relapses scores as badly as one that never forgot. Ties at the
   reported precision (3 decimals) are broken by the mean |ΔFR| at the step.
   (Rule of 2026-12-03 21:20 UTC; the earlier rule judged the step alone and
   had no detection bound.)
2. *Accuracy bound*: in every tuning scenario, the paired test-accuracy gap to
   retrain is within noise: its mean over seeds is >= −m, or its 95%
   t-interval reaches −m, with m = ``VERDICT_MARGINS["test_accuracy"]`` (0.02).
3. *Cost bound*: client steps of the step <= 1/10 of retraining to the event,
   on every tuning scenario and seed. No method is exempt: every tunable
   method's cost is set by its parameters (rounds, iterations, calibration
   share and interval, ascent passes, exchanges); ``none`` costs nothing.
4. *Detection bound*: over the pairs with signal, the client-level test
   (p < 0.05) detects the client in the method's model, at the step or after
   the recovery rounds, in no more pairs than it detects it in retrain's
   models at the same points (retrain never saw the client: its detections
   are the test's false positives).
5. A setting that failed on any (scenario, seed) is not eligible.

(Scenario, seed) pairs without signal count for the bounds, not for the
objective; a method with no pair with signal gets no choice.

The chosen setting minimises the objective among eligible settings. Where no
setting is eligible, the rule falls back, flagged in the summary, to the best
setting meeting the accuracy and cost bounds, then the accuracy bound alone,
then to the best overall.

Writes the whole table (method × setting × scenario × seed) to
``simulations/results/tune.csv`` and the summary to
``simulations/results/tune.md``; ``--report`` reads ``tune.csv``, applies the
rule, and evaluates every method at today's defaults and at the chosen setting
on the reported scenarios (same step-level judgement, paired gaps with 95%
t-intervals and the verdicts of :func:`fedforget.analysis.verdicts.paired_verdict`),
written to ``simulations/results/tune_report.md`` (and ``tune_report.csv``).
No method's defaults are changed here.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from forsaken_sweep import _fedavg

from fedforget import registry
from fedforget.analysis.stats import (
    SIGNAL_AUC,  # the project's one "the oracle sees the client" threshold
    t_interval,
)
from fedforget.analysis.verdicts import VERDICT_MARGINS, paired_verdict
from fedforget.config import Scenario, load_scenario, scenario_from_dict
from fedforget.data.federated import build_federated_data
from fedforget.models import build_model
from fedforget.oracle.audit import N_PERMUTATIONS, nonmember_ids
from fedforget.oracle.client_level import ClientMembershipTest
from fedforget.oracle.features import sample_statistics
from fedforget.oracle.oracle import MembershipOracle
from fedforget.protocol.local import LocalFederation
from fedforget.schedule import derive_seed
from fedforget.training import evaluate
from fedforget.unlearning import ClientData, get_method

CONFIGS = HERE.parent / "configs"
RESULTS = HERE / "results"

#: The seed of the settings draw (fixed: the same settings on every run).
DRAW_SEED = 20261203
#: Cost bound: a setting's client steps over retraining's to the event.
COST_BOUND = 0.1
#: Methods the cost bound does not apply to (none: every method's cost is set by its parameters).
COST_EXEMPT: frozenset[str] = frozenset()
#: The accuracy bound's margin (the verdicts' test-accuracy margin).
ACC_MARGIN = VERDICT_MARGINS["test_accuracy"]
#: FedAvg rounds over the remaining clients after the step, before the second judgement (relapse).
RECOVERY_ROUNDS = 3
#: The client-level test's detection level.
DETECTION_P = 0.05
#: Precision of the objective below which two settings tie (then |ΔFR| decides).
TIE_DIGITS = 3

#: Tuning scenarios: no dataset family, partitioner or model of a reported one.
#: Their FL setup was set for membership signal only (few train samples per
#: client: 93-95% of each client's data held out, 22-25 samples; 10 local
#: epochs; lr 0.3): LeNet generalises well on digits, and with 50-160 train
#: samples per client the calibration AUC stayed at 0.48-0.60 (probes of
#: 2026-12-03). The event is at round 25 (24 rounds before it), so one or two
#: FedAvg rounds over the remaining clients are within the cost bound.
#: (Breast cancer, standardised, as 5x6 images through ``file:`` data, was
#: tried and dropped: calibration AUC 0.48-0.53 in every setup tried.)
_DIGITS_FL = {"train": {"rounds": 25, "local_epochs": 10, "lr": 0.3}, "model": {"name": "lenet"}}
TUNE: dict[str, dict[str, Any]] = {
    "digits-pathological10-lenet": {
        "name": "tune-digits-pathological10", "seed": 22, **_DIGITS_FL,
        "data": {"dataset": "digits", "partitioner": "pathological", "classes_per_client": 10, "num_clients": 3,
                 "holdout_fraction": 0.93, "test_fraction": 0.4},
        "events": [{"round": 25, "client": 2}],
    },
    "digits-shard10-lenet": {
        "name": "tune-digits-shard10", "seed": 21, **_DIGITS_FL,
        "data": {"dataset": "digits", "partitioner": "shard", "shards_per_client": 10, "num_clients": 3,
                 "holdout_fraction": 0.93, "test_fraction": 0.4},
        "events": [{"round": 25, "client": 1}],
    },
    "digits-pathological8-lenet": {
        "name": "tune-digits-pathological8", "seed": 23, **_DIGITS_FL,
        "data": {"dataset": "digits", "partitioner": "pathological", "classes_per_client": 8, "num_clients": 3,
                 "holdout_fraction": 0.95, "test_fraction": 0.2},
        "events": [{"round": 25, "client": 2}],
    },
}
#: The reported scenarios (never used to choose): config, overrides.
REPORT: dict[str, tuple[Path, list[str]]] = {
    "withdrawal": (CONFIGS / "withdrawal.toml", []),
    "two_withdrawals (client 3)": (CONFIGS / "two_withdrawals.toml", []),
    "noniid_cnn": (CONFIGS / "noniid_cnn.toml", []),
    "scale100": (CONFIGS / "scale100.toml", []),
    # The number-of-clients study (docs/results/studies.md): withdrawal.toml at 5 (above), 10, 20, 40 clients.
    "clients study, 10 clients": (CONFIGS / "withdrawal.toml", ["data.num_clients=10"]),
    "clients study, 20 clients": (CONFIGS / "withdrawal.toml", ["data.num_clients=20"]),
    "clients study, 40 clients": (CONFIGS / "withdrawal.toml", ["data.num_clients=40"]),
}


# ------------------------------------------------------------------ scenarios


def family(dataset: str) -> str:
    """A dataset's family: a registered name, ``file:<stem>`` or ``hf:<id>``."""
    return f"file:{Path(dataset[5:]).stem}" if dataset.startswith("file:") else dataset


def triple(sc: Scenario) -> tuple[str, str, str]:
    """(dataset family, partitioner, model) of a scenario."""
    return family(sc.data.dataset), sc.data.partitioner, sc.model.name


def tune_scenarios(seeds: int, names: list[str] | None = None) -> dict[tuple[str, int], Scenario]:
    """The tuning scenarios, ``seeds`` seeds each (seed + 100 k)."""
    return {(name, k): scenario_from_dict({**d, "seed": d["seed"] + 100 * k, "unlearning": {"methods": methods()}},
                                          f"tune:{name}")
            for name, d in TUNE.items() if not names or name in names for k in range(seeds)}


def report_scenarios(seeds: int, names: list[str] | None = None) -> dict[tuple[str, int], Scenario]:
    """The reported scenarios, ``seeds`` seeds each (the config's seed + k)."""
    out = {}
    for name, (path, overrides) in REPORT.items():
        if names and name not in names:
            continue
        base = load_scenario(path, overrides).seed
        for k in range(seeds):
            out[(name, k)] = load_scenario(path, [*overrides, f"seed={base + k}"])
    return out


def check_disjoint() -> None:
    """Raise ValueError if a tuning scenario shares a dataset family, a
    partitioner or a model with a reported scenario."""
    reported = [triple(sc) for sc in report_scenarios(1).values()]
    for name in TUNE:
        sc = tune_scenarios(1, [name])[(name, 0)]
        for i, (what, value) in enumerate(zip(("dataset family", "partitioner", "model"), triple(sc), strict=True)):
            if value in {r[i] for r in reported}:
                raise ValueError(f"tuning scenario {name!r} shares its {what} {value!r} with a reported scenario")


# ------------------------------------------------------------------ settings


def defaults_of(method: str) -> dict[str, Any]:
    """A method's defaults for the parameters of its search space."""
    cls = registry.methods.get(method)
    params = cls.Params()
    return {k: getattr(params, k) for k in cls.search_space}


def grid(method: str) -> list[dict[str, Any]]:
    """Every point of a method's search space (the cartesian product), in order."""
    space = registry.methods.get(method).search_space
    keys = list(space)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*space.values())]


def settings(method: str, budget: int, seed: int = DRAW_SEED) -> list[dict[str, Any]]:
    """The method's ``budget`` settings: its defaults first, then ``budget − 1``
    grid points other than the defaults, drawn without replacement by a fixed
    seed. A method with an empty space has one setting (its defaults)."""
    if not registry.methods.get(method).search_space:
        return [{}]
    if budget < 1:
        raise ValueError("the budget must be at least 1")
    default = defaults_of(method)
    others = [p for p in grid(method) if p != default]
    if len(others) < budget - 1:
        raise ValueError(f"{method}: its search space has {len(others)} points besides its defaults; a budget of "
                         f"{budget} needs {budget - 1}: widen {method}'s search_space")
    rng = random.Random(f"{seed}:{method}")
    return [default, *rng.sample(others, budget - 1)]


def methods() -> list[str]:
    """The built-in methods (``fedforget.unlearning``), sorted; plugins (such as
    the example plugin's ``reset_head``) are not the project's to tune."""
    return sorted(m for m in registry.methods
                  if registry.methods.get(m).__module__.startswith("fedforget.unlearning"))


# ------------------------------------------------------------------ one federation


class Bench:
    """One scenario trained to its first event (original and retrain), its
    oracle, and the step-level judgement of any method setting."""

    def __init__(self, sc: Scenario):
        self.sc = sc
        ev = sc.events[0]
        self.client, self.t = ev.client_ids[0], ev.round
        self.fd = fd = build_federated_data(sc.data.model_dump(), sc.seed)
        self.new = lambda: build_model(sc.model.name, fd.input_shape, fd.num_classes, sc.model.hidden, seed=0)
        init = build_model(sc.model.name, fd.input_shape, fd.num_classes, sc.model.hidden,
                           seed=derive_seed(sc.seed, "init"))
        # Every round before the event is kept; each method gets the rounds its history_rounds asks for.
        self.original, _, self.history = _fedavg(sc, fd, copy.deepcopy(init), self.t - 1, set(),
                                                 set(range(1, self.t)))
        self.retrain, self.retrain_steps, _ = _fedavg(sc, fd, copy.deepcopy(init), self.t - 1, {self.client})
        members = fd.train_ids[self.client]
        non = nonmember_ids(fd, self.client, sc.seed, members, sc.oracle.min_nonmembers)
        self.oracle = MembershipOracle.calibrate(self.original, (*fd.tensors(members), members),
                                                 (*fd.tensors(non), non), n_boot=0)
        self.calibration_auc = float(self.oracle.calibration.metrics["mia_auc"])
        self.clients = {c: ClientData(c, *fd.client_train(c), *fd.client_validation(c), fd.num_classes)
                        for c in range(sc.data.num_clients)}
        # The runs' client-level test: never-trained pseudo-clients from every audit part and the test set.
        self.pool = np.concatenate([*fd.audit_ids, fd.test_ids])
        self.client_test = ClientMembershipTest.calibrate(
            fd.y[members], fd.y[self.pool], N_PERMUTATIONS,
            np.random.default_rng(derive_seed(sc.seed, "client-test", self.client, self.t)))
        self.reference = self.judge_both(self.retrain)

    def recover(self, model):
        """``RECOVERY_ROUNDS`` FedAvg rounds over the remaining clients from round t on."""
        out, _, _ = _fedavg(self.sc, self.fd, copy.deepcopy(model), self.t + RECOVERY_ROUNDS - 1, {self.client},
                            first=self.t)
        return out

    def judge_both(self, model) -> dict[str, float]:
        """The judgement right after the step and, suffixed ``_r``, after the recovery rounds."""
        return {**self.judge(model), **{f"{k}_r": v for k, v in self.judge(self.recover(model)).items()}}

    @property
    def signal(self) -> bool:
        return self.calibration_auc >= SIGNAL_AUC

    def judge(self, model) -> dict[str, float]:
        rep = self.oracle.evaluate(model).metrics
        x, y = self.fd.tensors(self.fd.train_ids[self.client])
        members = sample_statistics(model, *self.fd.tensors(self.fd.train_ids[self.client])).loss
        client = self.client_test.evaluate(-members, -sample_statistics(model, *self.fd.tensors(self.pool)).loss)
        return {"fr": rep["fr"], "auc": rep["mia_auc"], "forget_acc": evaluate(model, x, y)[1],
                "test_acc": evaluate(model, *self.fd.test())[1], "client_p": client["client_mia_pvalue"]}

    def unlearn(self, method: str, params: dict) -> dict[str, Any]:
        m = get_method(method, params)
        type(m).check_scenario(self.sc, m.params)
        wanted = set(m.history_rounds(self.sc.train.rounds, [self.t]))
        fed = LocalFederation(self.new, self.clients, [self.client], self.fd.num_classes,
                              server_validation=self.fd.server_validation(), local_epochs=self.sc.train.local_epochs,
                              lr=self.sc.train.lr, batch_size=self.sc.train.batch_size,
                              history=[e for e in self.history if e.round in wanted], seed=self.sc.seed, round=self.t)
        fed.runtime.fraction = self.sc.train.fraction  # rounds over the remaining clients sample like the runs
        t0 = time.perf_counter()
        model, cost = m.unlearn(copy.deepcopy(self.original), fed)
        wall = time.perf_counter() - t0
        out, ref = self.judge_both(model), self.reference
        return {
            **out, "d_fr": out["fr"] - ref["fr"], "d_auc": out["auc"] - ref["auc"],
            "d_auc_r": out["auc_r"] - ref["auc_r"], "relapse_auc": (out["auc_r"] - ref["auc_r"]) - (out["auc"] - ref["auc"]),
            "detected": bool(min(out["client_p"], out["client_p_r"]) < DETECTION_P),
            "retrain_detected": bool(min(ref["client_p"], ref["client_p_r"]) < DETECTION_P),
            "d_test_acc": out["test_acc"] - self.reference["test_acc"],
            "d_forget_acc": out["forget_acc"] - self.reference["forget_acc"],
            "client_steps": cost.client_steps, "cost_ratio": cost.client_steps / max(self.retrain_steps, 1),
            "exchanges": fed.exchanges, "wall_s": wall, "error": "",
        }

    def base_row(self, scenario: str, k: int) -> dict[str, Any]:
        return {"scenario": scenario, "seed_index": k, "seed": self.sc.seed, "calibration_auc": self.calibration_auc,
                "signal": self.signal, "retrain_fr": self.reference["fr"], "retrain_auc": self.reference["auc"],
                "retrain_test_acc": self.reference["test_acc"], "retrain_steps_to_event": self.retrain_steps}


def setting_text(params: dict[str, Any]) -> str:
    """A setting as compact text (``defaults`` for an empty one)."""
    if not params:
        return "defaults (nothing to tune)"
    return ", ".join(f"{k}={_num(v)}" for k, v in params.items())


def _num(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def run_settings(benches: dict[tuple[str, int], Bench], plan: dict[str, list[tuple[str, dict]]],
                 log=print) -> pd.DataFrame:
    """Every (method, setting id, params) of ``plan`` on every bench."""
    rows = []
    for (scen, k), bench in benches.items():
        base = bench.base_row(scen, k)
        for method, items in plan.items():
            for sid, params in items:
                try:
                    res = bench.unlearn(method, params)
                except Exception as err:  # noqa: BLE001  (recorded: a failing setting is not eligible)
                    res = {"error": f"{type(err).__name__}: {err}"}
                rows.append({**base, "method": method, "setting": sid, "params": json.dumps(params),
                             "is_default": params == defaults_of(method), **res})
                if res.get("error"):
                    log(f"  {method} {sid} {setting_text(params)}: FAILED {res['error']}")
                else:
                    log(f"  {method} {sid} {setting_text(params)}: ΔAUC {res['d_auc']:+.3f} ΔFR {res['d_fr']:+.3f} "
                        f"Δtest {res['d_test_acc']:+.3f} cost {res['cost_ratio']:.3f}× retrain {res['wall_s']:.1f} s")
    return pd.DataFrame(rows)


def build_benches(scenarios: dict[tuple[str, int], Scenario], log=print) -> dict[tuple[str, int], Bench]:
    benches = {}
    for key, sc in scenarios.items():
        t0 = time.perf_counter()
        benches[key] = b = Bench(sc)
        log(f"{key[0]} seed {sc.seed}: prefix {time.perf_counter() - t0:.1f} s, calibration AUC "
            f"{b.calibration_auc:.3f} ({'signal' if b.signal else 'NO SIGNAL'}), retrain FR "
            f"{b.reference['fr']:.3f} AUC {b.reference['auc']:.3f} test acc {b.reference['test_acc']:.3f}, "
            f"retrain steps {b.retrain_steps}")
    return benches


def tune(budget: int, seeds: int, names: list[str] | None = None, log=print) -> pd.DataFrame:
    """The whole tuning table: every method × setting × tuning scenario × seed."""
    check_disjoint()
    plan = {m: [(f"s{i}", p) for i, p in enumerate(settings(m, budget))] for m in methods()}
    benches = build_benches(tune_scenarios(seeds, names), log)
    return run_settings(benches, plan, log)


# ------------------------------------------------------------------ the rule


def _acc_ok(d: pd.Series) -> bool:
    """Test-accuracy gaps of one scenario's seeds within noise of retrain's."""
    est = t_interval(d.to_numpy(float))
    if not math.isfinite(est.mean):
        return False
    return est.mean >= -ACC_MARGIN or (math.isfinite(est.hi) and est.hi >= -ACC_MARGIN)


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """One row per method and setting: the objective, the bounds, eligibility."""
    df = df.copy()
    if "error" not in df:
        df["error"] = ""
    df["error"] = df["error"].astype(object).where(df["error"].notna(), "")
    rows = []
    for (method, sid), g in df.groupby(["method", "setting"], sort=False):
        ok = g[g.error == ""]
        sig = ok[ok.signal.astype(bool)]
        both = (sig.d_auc.abs() + sig.d_auc_r.abs()) / 2 if "d_auc_r" in sig else sig.d_auc.abs()
        abs_auc, abs_fr = t_interval(both), t_interval(sig.d_fr.abs())
        relapse = t_interval(sig.relapse_auc) if "relapse_auc" in sig else t_interval([])
        detected = int(sig.detected.astype(bool).sum()) if "detected" in sig else 0
        retrain_detected = int(sig.retrain_detected.astype(bool).sum()) if "retrain_detected" in sig else 0
        d_auc, d_fr, d_test = t_interval(sig.d_auc), t_interval(sig.d_fr), t_interval(ok.d_test_acc)
        acc_ok = len(ok) > 0 and all(_acc_ok(s.d_test_acc) for _, s in ok.groupby("scenario"))
        worst_cost = float(ok.cost_ratio.max()) if len(ok) else math.nan
        cost_ok = method in COST_EXEMPT or (math.isfinite(worst_cost) and worst_cost <= COST_BOUND)
        failed = int((g.error != "").sum())
        rows.append({
            "method": method, "setting": sid, "params": g.params.iloc[0], "is_default": bool(g.is_default.iloc[0]),
            "pairs": len(ok), "pairs_with_signal": len(sig), "failed": failed,
            "abs_auc": abs_auc.mean, "abs_auc_lo": abs_auc.lo, "abs_auc_hi": abs_auc.hi,
            "abs_fr": abs_fr.mean, "abs_fr_lo": abs_fr.lo, "abs_fr_hi": abs_fr.hi,
            "d_auc": d_auc.mean, "d_auc_lo": d_auc.lo, "d_auc_hi": d_auc.hi,
            "d_fr": d_fr.mean, "d_fr_lo": d_fr.lo, "d_fr_hi": d_fr.hi,
            "d_test": d_test.mean, "d_test_lo": d_test.lo, "d_test_hi": d_test.hi,
            "worst_scenario_test": float(ok.groupby("scenario").d_test_acc.mean().min()) if len(ok) else math.nan,
            "relapse_auc": relapse.mean, "relapse_auc_lo": relapse.lo, "relapse_auc_hi": relapse.hi,
            "detected": detected, "retrain_detected": retrain_detected,
            "worst_cost_ratio": worst_cost, "acc_ok": bool(acc_ok), "cost_ok": bool(cost_ok),
            "detection_ok": bool(detected <= retrain_detected),
            "eligible": bool(acc_ok and cost_ok and detected <= retrain_detected and failed == 0 and len(sig) > 0),
        })
    return pd.DataFrame(rows)


def choose(summary: pd.DataFrame) -> pd.DataFrame:
    """Add ``chosen`` (one setting per method) and ``choice`` (how it was
    chosen: ``eligible``, ``fallback: accuracy bound only``, ``fallback: best
    objective``) to a :func:`summarise` table."""
    s = summary.copy()
    s["key"] = s.abs_auc.round(TIE_DIGITS)
    s["chosen"], s["choice"] = False, ""
    for _method, g in s.groupby("method", sort=False):
        for label, pool in (("eligible", g[g.eligible]),
                            ("fallback: accuracy and cost bounds", g[g.acc_ok & g.cost_ok & (g.failed == 0)]),
                            ("fallback: accuracy bound only", g[g.acc_ok & (g.failed == 0)]),
                            ("fallback: best objective", g[g.failed == 0])):
            pool = pool[np.isfinite(pool.key)]
            if len(pool):
                best = pool.sort_values(["key", "abs_fr"], kind="stable").index[0]
                s.loc[best, "chosen"], s.loc[best, "choice"] = True, label
                break
    return s.drop(columns="key")


def chosen_settings(df: pd.DataFrame) -> dict[str, tuple[dict, str, bool]]:
    """Per method: (chosen params, how it was chosen, whether it is the defaults)."""
    s = choose(summarise(df))
    return {r.method: (json.loads(r.params), r.choice, bool(r.is_default)) for r in s[s.chosen].itertuples()}


# ------------------------------------------------------------------ tables


def _pm(mean: float, lo: float, hi: float, digits: int = 3, signed: bool = False) -> str:
    if not math.isfinite(mean):
        return "n/a"
    m = f"{mean:+.{digits}f}" if signed else f"{mean:.{digits}f}"
    return m if not (math.isfinite(lo) and math.isfinite(hi)) else f"{m} ± {(hi - lo) / 2:.{digits}f}"


def signal_table(df: pd.DataFrame) -> str:
    """Calibration AUC per scenario and seed (markdown)."""
    sig = df.drop_duplicates(["scenario", "seed"])[["scenario", "seed", "calibration_auc", "signal",
                                                     "retrain_auc", "retrain_test_acc", "retrain_steps_to_event"]]
    lines = [(f"| scenario | seed | calibration AUC (original) | signal (≥ {SIGNAL_AUC:.2f}) | retrain AUC | retrain test acc | "
             "retrain client steps to the event |"), "|---|---|---|---|---|---|---|"]
    lines += [f"| {r.scenario} | {r.seed} | {r.calibration_auc:.3f} | {'yes' if r.signal else 'no'} | "
              f"{r.retrain_auc:.3f} | {r.retrain_test_acc:.3f} | {int(r.retrain_steps_to_event):,} |"
              for r in sig.itertuples()]
    return "\n".join(lines)


def summary_markdown(df: pd.DataFrame, meta: str = "") -> str:
    s = choose(summarise(df))
    out = ["# Tuning: every method on equal footing", "", meta, "",
           ("Rule (`simulations/tune.py`, module docstring): per method, the setting with the smallest mean of "
           "(|ΔAUC| right after the step + |ΔAUC| after "
           f"{RECOVERY_ROUNDS} more FedAvg rounds) / 2 over the tuning scenarios × seeds with signal (ties at 3 "
           f"decimals: smaller mean |ΔFR|), among settings whose paired test-accuracy gap is within noise "
           f"(mean ≥ −{ACC_MARGIN} or its 95% t-interval reaching it) in every tuning scenario, whose client "
           f"steps are ≤ {COST_BOUND} × retraining's to the event on every scenario and seed, and whose model the "
           f"client-level test detects (p < {DETECTION_P}, at either point) in no more pairs with signal than "
           "retrain's. Gaps: method − retrain, paired per seed; ± is the 95% t-interval half-width across "
           "scenario × seed; relapse = ΔAUC after the recovery rounds − ΔAUC at the step."),
           "", "## Signal of the tuning scenarios", "", signal_table(df), "", "## Every setting", "",
           ("| method | setting | params | default | pairs (signal) | objective | mean abs ΔFR | ΔAUC (step) | ΔFR | "
           "relapse ΔAUC | detected (retrain) | Δtest acc | worst scenario Δtest | worst cost (× retrain) | "
           "acc bound | cost bound | detection bound | eligible | chosen |"),
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in s.itertuples():
        out.append(
            f"| {r.method} | {r.setting} | {setting_text(json.loads(r.params))} | {'yes' if r.is_default else ''} | "
            f"{r.pairs} ({r.pairs_with_signal}){f', {r.failed} failed' if r.failed else ''} | "
            f"{_pm(r.abs_auc, r.abs_auc_lo, r.abs_auc_hi)} | {_pm(r.abs_fr, r.abs_fr_lo, r.abs_fr_hi)} | "
            f"{_pm(r.d_auc, r.d_auc_lo, r.d_auc_hi, signed=True)} | {_pm(r.d_fr, r.d_fr_lo, r.d_fr_hi, signed=True)} | "
            f"{_pm(r.relapse_auc, r.relapse_auc_lo, r.relapse_auc_hi, signed=True)} | "
            f"{r.detected} ({r.retrain_detected}) of {r.pairs_with_signal} | "
            f"{_pm(r.d_test, r.d_test_lo, r.d_test_hi, signed=True)} | {r.worst_scenario_test:+.3f} | "
            f"{r.worst_cost_ratio:.3f} | {'ok' if r.acc_ok else 'fails'} | {'ok' if r.cost_ok else 'fails'} | "
            f"{'ok' if r.detection_ok else 'fails'} | "
            f"{'yes' if r.eligible else 'no'} | {('**' + r.choice + '**') if r.chosen else ''} |")
    out += ["", "## Chosen settings", "", ("| method | chosen | how | same as today's defaults | "
            "objective | mean abs ΔFR | Δtest acc | worst cost |"), "|---|---|---|---|---|---|---|---|"]
    for r in s[s.chosen].itertuples():
        out.append(f"| {r.method} | {setting_text(json.loads(r.params))} | {r.choice} | "
                   f"{'yes' if r.is_default else 'no (defaults: ' + setting_text(defaults_of(r.method)) + ')'} | "
                   f"{_pm(r.abs_auc, r.abs_auc_lo, r.abs_auc_hi)} | {_pm(r.abs_fr, r.abs_fr_lo, r.abs_fr_hi)} | "
                   f"{_pm(r.d_test, r.d_test_lo, r.d_test_hi, signed=True)} | {r.worst_cost_ratio:.3f} |")
    return "\n".join(out) + "\n"


def report_markdown(df: pd.DataFrame, meta: str = "") -> str:
    """Per reported scenario, method and arm (defaults, chosen): paired gaps
    over the seeds with 95% t-intervals and verdicts."""
    out = ["# Defaults vs the tuning rule's choice, on the reported scenarios", "", meta, "",
           ("Step-level judgement (right after the unlearning step; as `simulations/tune.py`). Gaps: method − "
           "retrain, paired per seed, mean ± 95% t-interval half-width over the seeds, with the verdict of "
           "`paired_verdict` (margins: AUC 0.02, FR 0.05, test accuracy 0.02). AUC and FR verdicts of a scenario "
           f"whose seeds lack signal (calibration AUC < {SIGNAL_AUC:.2f}) read `no signal`."), ""]
    sig = df.drop_duplicates(["scenario", "seed"]).groupby("scenario", sort=False).calibration_auc
    out += ["| scenario | calibration AUC per seed | seeds with signal |", "|---|---|---|"]
    out += [f"| {name} | {', '.join(f'{a:.3f}' for a in v)} | {int((v >= SIGNAL_AUC).sum())} of {len(v)} |"
            for name, v in sig]
    out += ["", "| scenario | method | arm | setting | ΔAUC | ΔFR | Δtest acc | cost (× retrain, mean) |",
            "|---|---|---|---|---|---|---|---|"]
    df = df.copy()
    df["error"] = df["error"].astype(object).where(df["error"].notna(), "")
    tuned = set(df[df.arm == "chosen"].method)  # methods whose choice differs from their defaults
    order = {name: i for i, name in enumerate(df.scenario.unique())}
    df = df.sort_values(["scenario", "method", "arm"], key=lambda c: c.map(order) if c.name == "scenario" else c,
                        kind="stable", ascending=[True, True, False])
    for (scen, method, arm), g in df.groupby(["scenario", "method", "arm"], sort=False):
        g = g[g.error == ""]
        sg = g[g.signal.astype(bool)]
        cells = []
        for metric, col, data in (("mia_auc", "d_auc", sg), ("fr", "d_fr", sg), ("test_accuracy", "d_test_acc", g)):
            cells.append(paired_verdict(data[col].to_numpy(float), metric).text() if len(data) else "no signal")
        label = arm if method in tuned else "defaults = chosen"
        out.append(f"| {scen} | {method} | {label} | {setting_text(json.loads(g.params.iloc[0])) if len(g) else ''} | "
                   f"{' | '.join(cells)} | {g.cost_ratio.mean():.3f} |")
    return "\n".join(out) + "\n"


def report(tune_csv: Path, seeds: int, names: list[str] | None = None, log=print) -> pd.DataFrame:
    """Every method at its defaults and at the rule's choice on the reported scenarios."""
    chosen = chosen_settings(pd.read_csv(tune_csv, keep_default_na=True))
    plan = {}
    for m in methods():
        default = defaults_of(m)
        params, _how, same = chosen.get(m, (default, "not tuned", True))
        plan[m] = [("defaults", default)] + ([] if same or params == default else [("chosen", params)])
    benches = build_benches(report_scenarios(seeds, names), log)
    df = run_settings(benches, plan, log)
    # arm: defaults or chosen; a method whose choice is its defaults has only "defaults" rows.
    return df.assign(arm=df.setting)


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=int, default=8, help="settings per tunable method (K)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--scenarios", nargs="*", help="a subset of the tuning (or, with --report, reported) scenarios")
    ap.add_argument("--signal", action="store_true", help="only train the tuning scenarios and print their signal")
    ap.add_argument("--report", action="store_true", help="defaults vs chosen on the reported scenarios")
    ap.add_argument("--out", default=str(RESULTS / "tune.csv"))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = "python simulations/tune.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.signal:
        check_disjoint()
        benches = build_benches(tune_scenarios(args.seeds, args.scenarios))
        df = pd.DataFrame([b.base_row(k[0], k[1]) for k, b in benches.items()])
        df.to_csv(out.with_name("tune_signal.csv"), index=False)
        print(signal_table(df))
    elif args.report:
        df = report(out, args.seeds, args.scenarios)
        df.to_csv(out.with_name("tune_report.csv"), index=False)
        meta = (f"`{cmd}`; {args.seeds} seeds; chosen settings from `{out.name}`; wall time "
                f"{time.perf_counter() - t0:.0f} s on {args.threads} thread(s).")
        out.with_name("tune_report.md").write_text(report_markdown(df, meta))
        print(out.with_name("tune_report.md").read_text())
    else:
        df = tune(args.budget, args.seeds, args.scenarios)
        df.to_csv(out, index=False)
        meta = (f"`{cmd}`; budget K = {args.budget} settings per tunable method; {args.seeds} seeds × "
                f"{df.scenario.nunique()} tuning scenarios; wall time {time.perf_counter() - t0:.0f} s on "
                f"{args.threads} thread(s); every row in `{out.name}`.")
        out.with_suffix(".md").write_text(summary_markdown(df, meta))
        print(out.with_suffix(".md").read_text())
    print(f"wall time {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
