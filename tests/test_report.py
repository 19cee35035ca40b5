"""The HTML report: built from synthetic run directories that follow the
run-directory schema (no training), checked as text and in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

os.environ["FLWR_TELEMETRY_ENABLED"] = "0"

from fedforget.report import load_study, t_interval, write_report  # noqa: E402

METHODS = ("forsaken", "pga")
ORACLE_KEYS = (
    "fr", "fr_transition", "b_t", "n_forget", "mia_auc", "mia_balanced_accuracy", "tpr_at_1pct_fpr",
    "tpr_at_0.1pct_fpr", "fr_lo", "fr_hi", "mia_auc_lo", "mia_auc_hi",
)


def _oracle_rows(rng: np.random.Generator, arm: str, rnd: int, client: int, auc: float, fr: float) -> list[tuple]:
    n = 100
    b_t = 60
    vals = {
        "fr": fr, "fr_transition": min(1.0, fr + 0.05), "b_t": b_t, "n_forget": n, "mia_auc": auc,
        "mia_balanced_accuracy": 0.5 + (auc - 0.5) * 0.8, "tpr_at_1pct_fpr": max(0.0, (auc - 0.5) * 0.2),
        "tpr_at_0.1pct_fpr": max(0.0, (auc - 0.5) * 0.05), "fr_lo": fr - 0.08, "fr_hi": fr + 0.08,
        "mia_auc_lo": auc - 0.04, "mia_auc_hi": auc + 0.04,
    }
    return [(arm, rnd, client, k, float(vals[k])) for k in ORACLE_KEYS]


def make_fake_run(
    path: str | Path,
    seed: int = 0,
    *,
    rounds: int = 6,
    event_round: int = 4,
    withdrawn: int = 2,
    controls: tuple[int, ...] = (0, 3),
    methods: tuple[str, ...] = METHODS,
    over_unlearning: str | None = None,
    scores: bool = True,
    events: bool = True,
) -> Path:
    """Write a synthetic finished run directory that follows the run-directory schema.

    Parameters
    ----------
    path : str or Path
        The run directory to create.
    seed : int
        Seed of the synthetic values (and the scenario's ``seed``).
    over_unlearning : str, optional
        A method whose ``over_unlearning`` flag is 1 from the event round on.
    scores : bool
        Write ``scores.parquet`` (event and last round, every arm and watched client).
    events : bool
        With ``False``, a run without withdrawal: original only, test accuracy.

    Returns
    -------
    Path
        The run directory.
    """
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arms = ["original", "retrain", *methods] if events else ["original"]
    rows: list[tuple] = []
    # Global test accuracy: a rising curve; method arms dip at the event and recover.
    for arm in arms:
        for r in range(rounds + 1):
            acc = 0.05 + 0.8 * (1 - np.exp(-r / 2)) + rng.normal(0, 0.01)
            if arm in methods and r == event_round:
                acc -= 0.1
            rows += [(arm, r, None, "test_accuracy", acc), (arm, r, None, "test_loss", 3.0 * (1 - acc))]
    if events:
        for i, m in enumerate(methods):
            cost = {"wall_s": 0.5 + i, "client_steps": 60.0 * (i + 1), "bytes_up": 2.4e6 * (i + 1),
                    "bytes_down": 3.1e6, "server_storage_bytes": 1e5 * i, "rounds": float(i)}
            rows += [(m, event_round, None, f"cost_{k}", v) for k, v in cost.items()]
        for arm in arms:
            for r in range(rounds + 1):
                gone = arm == "retrain" or (arm in methods and r >= event_round)
                forget = 0.7 if gone else 0.95
                rows += [(arm, r, withdrawn, "forget_accuracy", forget + rng.normal(0, 0.01)),
                         (arm, r, withdrawn, "retain_accuracy", 0.9 + rng.normal(0, 0.01))]
        # Calibration model (original, event - 1): the oracle sees the client.
        rows += _oracle_rows(rng, "original", event_round - 1, withdrawn, 0.78 + rng.normal(0, 0.01), 0.0)
        for c in controls:
            rows += _oracle_rows(rng, "original", event_round - 1, c, 0.6, 0.0)
        target = {"original": (0.79, 0.02), "retrain": (0.51, 0.85)}
        target.update({m: (0.55 - 0.03 * i, 0.7 + 0.1 * i) for i, m in enumerate(methods)})
        for arm in arms:
            for r in range(event_round, rounds + 1):
                auc, fr = target[arm]
                rows += _oracle_rows(rng, arm, r, withdrawn, auc + rng.normal(0, 0.01), fr + rng.normal(0, 0.02))
                for c in controls:
                    rows += _oracle_rows(rng, arm, r, c, 0.6 + rng.normal(0, 0.01), rng.normal(0.02, 0.02))
                if arm in methods:
                    rows.append((arm, r, withdrawn, "over_unlearning", float(arm == over_unlearning)))
        # Method arms share original's prefix (as the server writes them).
        prefix = [r for r in rows if r[0] == "original" and r[1] < event_round and r[2] is not None]
        rows += [(m, *r[1:]) for m in methods for r in prefix]
    df = pd.DataFrame(rows, columns=["arm", "round", "client", "metric", "value"])
    df["client"] = df["client"].astype("Int64")
    df.to_parquet(out / "metrics.parquet", index=False)

    if events and scores:
        frames = []
        for arm in arms:
            for r in (event_round, rounds):
                for c in (withdrawn, *controls):
                    auc = target[arm][0] if c == withdrawn else 0.6
                    shift = np.sqrt(2) * _norm_ppf(auc)  # equal-variance normals with this AUC
                    n = 100
                    score = np.r_[rng.normal(shift, 1, n), rng.normal(0, 1, n)]
                    frames.append(pd.DataFrame({
                        "arm": arm, "round": r, "client": c, "sample_id": np.arange(2 * n, dtype=np.int64),
                        "member": np.r_[np.ones(n, bool), np.zeros(n, bool)], "score": score,
                        "decision": score > 0.5,
                    }))
        pd.concat(frames, ignore_index=True).to_parquet(out / "scores.parquet", index=False)

    log = [{"t": 0.0, "event": "run_start", "scenario": "fake", "seed": seed}]
    if events:
        log.append({"t": 1.0, "event": "withdraw", "round": event_round, "clients": [withdrawn], "kind": "withdraw"})
        log += [{"t": 1.1, "event": "unlearn", "arm": m, "round": event_round, "clients": [withdrawn]}
                for m in methods]
        log.append({"t": 2.0, "event": "warning", "message": "a synthetic warning"})
    log.append({"t": 3.0, "event": "run_end", "ok": True})
    (out / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in log))

    event_toml = f'\n[[events]]\nround = {event_round}\nclient = {withdrawn}\nkind = "withdraw"\n' if events else ""
    method_list = ", ".join(f'"{m}"' for m in methods) if events else ""
    (out / "resolved.toml").write_text(
        f'name = "fake"\nseed = {seed}\n\n[data]\ndataset = "synthetic"\nnum_clients = 5\npartitioner = "iid"\n\n'
        f"[train]\nrounds = {rounds}\n{event_toml}\n"
        f"[unlearning]\nmethods = [{method_list}]\nrecovery_rounds = 1\n\n"
        '[oracle]\nattack = "loss"\n'
    )
    return out


def _norm_ppf(p: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(p))


@pytest.fixture(scope="module")
def single_report(tmp_path_factory) -> Path:
    run = make_fake_run(tmp_path_factory.mktemp("single") / "run", seed=0, over_unlearning="pga")
    return write_report(run)


def test_report_is_written_and_self_contained(single_report):
    assert single_report.name == "report.html" and single_report.is_file()
    text = single_report.read_text()
    assert "http://" not in text and "https://" not in text
    assert "<link" not in text and "src=\"data:image/png;base64," in text
    assert not list(single_report.parent.glob("*.tmp"))


def test_report_names_methods_and_flags_over_unlearning(single_report):
    text = single_report.read_text()
    for arm in (*METHODS, "retrain", "original"):
        assert arm in text
    assert "over-unlearning: pga on client 2" in text
    assert "over-unlearning: forsaken" not in text
    # signal check (calibration AUC ~0.78 >= 0.65), bootstrap intervals, the sections
    assert "FR is meaningful" in text
    assert re.search(r"0\.\d{3} \[0\.\d{3}, 0\.\d{3}\]", text)
    assert "Control clients" in text and "ROC curves" in text
    assert "a synthetic warning" in text
    # 1 accuracy figure + FR, AUC and ROC for the withdrawn client
    assert text.count("<img ") == 4


def test_multi_seed_report_shows_seed_intervals(tmp_path):
    root = tmp_path / "multi"
    for s in range(3):
        make_fake_run(root / f"seed-{s}", seed=s)
    text = write_report(root).read_text()
    assert "3 seeds" in text
    assert re.search(r"0\.\d{3} ± 0\.\d{3}", text)
    assert "http://" not in text and "https://" not in text
    assert len(load_study(root).runs) == 3


def test_weak_signal_missing_scores_and_nan(tmp_path):
    run = make_fake_run(tmp_path / "run", scores=False)
    df = pd.read_parquet(run / "metrics.parquet")
    before = (df.arm == "original") & (df["round"] == 3) & (df.client == 2) & (df.metric == "mia_auc")
    df.loc[before, "value"] = 0.55
    df.loc[(df.arm == "forsaken") & (df.metric == "fr"), "value"] = np.nan
    df.to_parquet(run / "metrics.parquet", index=False)
    text = write_report(run).read_text()
    assert "below 0.65" in text
    assert "No scores.parquet" in text
    assert "n/a" in text
    visible = re.sub(r'src="data:[^"]*"', "", text)  # base64 may contain any letters
    assert not re.search(r"\bnan\b", visible, re.IGNORECASE)


def test_run_without_events(tmp_path):
    text = write_report(make_fake_run(tmp_path / "run", events=False)).read_text()
    assert "No withdrawal events" in text
    assert text.count("<img ") == 1


def test_unfinished_directories_raise(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        write_report(tmp_path / "nowhere")
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "events.jsonl.partial").write_text("")
    with pytest.raises(FileNotFoundError, match="metrics.parquet"):
        write_report(partial)
    seeds = tmp_path / "seeds"
    (seeds / "seed-0").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="seed-"):
        write_report(seeds)
    bad = make_fake_run(tmp_path / "bad")
    (bad / "events.jsonl").write_text("{not json\n")
    with pytest.raises(ValueError, match="events.jsonl"):
        write_report(bad)


def test_t_interval():
    est = t_interval([1.0, 2.0, 3.0, float("nan")])
    assert est.mean == pytest.approx(2.0) and est.n == 3
    assert est.hi - est.mean == pytest.approx(4.302653 / np.sqrt(3), rel=1e-5)
    assert t_interval([0.4]).text() == "0.400"
    assert t_interval([]).text() == "n/a"


def rendered_figures(report: Path, tmp_path: Path) -> tuple[int, int]:
    """(figures rendered, figures total) of a report opened in headless Chromium."""
    chromium = shutil.which("chromium")
    assert chromium, "chromium is not installed (.ci/run installs Debian's chromium package)"
    cmd = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom",
        report.resolve().as_uri(),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    body = re.search(r"<body[^>]*>", res.stdout)
    assert body, f"no DOM dumped (rc {res.returncode}): {res.stderr[-2000:]}"
    rendered = re.search(r'data-figures-rendered="(\d+)"', body.group(0))
    total = re.search(r'data-figures-total="(\d+)"', body.group(0))
    assert rendered and total, body.group(0)
    return int(rendered.group(1)), int(total.group(1))


def test_figures_render_in_headless_chromium(single_report, tmp_path):
    rendered, total = rendered_figures(single_report, tmp_path)
    assert rendered == total > 0
