"""The HTML report: built from synthetic run directories that follow the
run-directory schema (no training), checked as text and in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

os.environ["FLWR_TELEMETRY_ENABLED"] = "0"

from fedforget.analysis import load_study, t_interval  # noqa: E402
from fedforget.analysis.outcomes import frontier_points  # noqa: E402
from fedforget.report import write_report  # noqa: E402
from tests.conftest import require_tool  # noqa: E402

METHODS = ("forsaken", "pga", "none")
ORACLE_KEYS = (
    "fr", "fr_fixed_fpr", "fr_transition", "b_t", "n_forget", "n_nonmembers", "mia_auc", "mia_balanced_accuracy",
    "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr", "fr_lo", "fr_hi", "mia_auc_lo", "mia_auc_hi",
)
N_NONMEMBERS = 1000  # enough for TPR at 1% FPR (>= 10 / 0.01), not at 0.1% (>= 10 / 0.001)
CONTROL_AUC = {0: 0.72, 3: 0.58}  # calibration AUC of the controls: 0 has signal, 3 has none
STEPS_PER_ROUND, BYTES_PER_ROUND, WALL_PER_ROUND = 60.0, 5.5e6, 2.0  # retraining's cost per round


def _oracle_rows(rng: np.random.Generator, arm: str, rnd: float, client: int, auc: float, fr: float) -> list[tuple]:
    n = 100
    b_t = 60
    vals = {
        "fr": fr, "fr_fixed_fpr": 0.9 * fr, "fr_transition": min(1.0, fr + 0.05), "b_t": b_t, "n_forget": n,
        "n_nonmembers": N_NONMEMBERS, "mia_auc": auc,
        "mia_balanced_accuracy": 0.5 + (auc - 0.5) * 0.8, "tpr_at_1pct_fpr": max(0.0, (auc - 0.5) * 0.2),
        "tpr_at_0.1pct_fpr": max(0.0, (auc - 0.5) * 0.05), "fr_lo": fr - 0.08, "fr_hi": fr + 0.08,
        "mia_auc_lo": auc - 0.04, "mia_auc_hi": auc + 0.04,
    }
    return [(arm, float(rnd), client, k, float(vals[k])) for k in ORACLE_KEYS]


def method_cost(method: str, i: int) -> dict[str, float]:
    """The fake cost record of a method's unlearning step; ``none`` costs nothing."""
    if method == "none":
        return {"wall_s": 0.0, "client_steps": 0.0, "bytes_up": 0.0, "bytes_down": 0.0,
                "server_storage_bytes": 0.0, "rounds": 0.0}
    return {"wall_s": 0.5 + i, "client_steps": 60.0 * (i + 1), "bytes_up": 2.4e6 * (i + 1),
            "bytes_down": 3.1e6, "server_storage_bytes": 1e5 * i, "rounds": float(i)}


def _ratio(a: float, b: float) -> float:
    return float("inf") if b == 0 else a / b


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
    client_test: bool = False,
    witness: str | None = None,
    witness_signal: bool = True,
    relapse: str | None = None,
) -> Path:
    """Write a synthetic finished run directory in the run loop's layout.

    Rounds are floats: whole round r is the models after round r's training;
    ``event_round - 0.5`` is every arm right after the unlearning step (original
    and retrain: their models after round ``event_round - 1``). The oracle is
    calibrated on original at ``event_round - 1`` (rows for original only).
    Method arms carry ``cost_*`` and ``speedup_*`` at the event round, retrain
    the ``retrain_*_to_event`` / ``retrain_*_to_end`` yardstick.

    Parameters
    ----------
    path : str or Path
        The run directory to create.
    seed : int
        Seed of the synthetic values (and the scenario's ``seed``).
    over_unlearning : str, optional
        A method whose ``over_unlearning`` flag is 1 from the event on.
    scores : bool
        Write ``scores.parquet`` (right after unlearning and at the last round,
        every arm and watched client).
    events : bool
        With ``False``, a run without withdrawal: original only, test accuracy.
    client_test : bool
        Write ``client_mia_z`` / ``client_mia_pvalue`` / ``client_mia_mde``
        (``MDE``) for the withdrawn client and the controls, every arm from
        t - 0.5 on and original at t - 1 (see ``client_p``), and the methods'
        ``relapse_auc`` / ``relapse_z`` / ``relapse_flag`` at the last round.
    witness : str, optional
        The withdrawal event's witness (``backdoor``, ``canary``): in the
        scenario and the event log, with ``witness_accuracy`` rows for the
        withdrawn client (every arm, from t - 0.5 on) and ``witness_mia_auc``
        with its ``_lo`` / ``_hi`` bounds (original at t - 1 too).
    witness_signal : bool
        With ``False``, original's witness AUC interval at calibration includes 0.5.
    relapse : str, optional
        A method that relapses (with ``client_test``): not detected right after
        its step (p = 0.3), detected from round t + 1 on (p = 0.01), its
        ``relapse_flag`` 1 and its relapse gaps ``RELAPSE_AUC`` / ``RELAPSE_Z``
        (plus noise); the other methods' gaps near 0.

    Returns
    -------
    Path
        The run directory.
    """
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arms = ["original", "retrain", *methods] if events else ["original"]
    half = event_round - 0.5
    labels = [float(r) for r in range(rounds + 1)] + ([half] if events else [])
    rows: list[tuple] = []
    # Global test accuracy: a rising curve; method arms dip right after unlearning and recover.
    for arm in arms:
        for r in labels:
            trained = r if r.is_integer() else r - 0.5  # at t - 0.5: no training since round t - 1
            acc = 0.05 + 0.8 * (1 - np.exp(-trained / 2)) + rng.normal(0, 0.01)
            if arm in methods and arm != "none" and r == half:
                acc -= 0.1
            rows += [(arm, r, None, "test_accuracy", acc), (arm, r, None, "test_loss", 3.0 * (1 - acc))]
    if events:
        t = float(event_round)
        yard = {
            "steps": STEPS_PER_ROUND * (event_round - 1), "bytes": BYTES_PER_ROUND * (event_round - 1),
            "wall_s": WALL_PER_ROUND * (event_round - 1),
        }
        for k, per in (("steps", STEPS_PER_ROUND), ("bytes", BYTES_PER_ROUND), ("wall_s", WALL_PER_ROUND)):
            rows += [("retrain", t, None, f"retrain_{k}_to_event", yard[k]),
                     ("retrain", t, None, f"retrain_{k}_to_end", per * rounds)]
        for i, m in enumerate(methods):
            cost = method_cost(m, i)
            rows += [(m, t, None, f"cost_{k}", v) for k, v in cost.items()]
            rows += [
                (m, t, None, "speedup_steps", _ratio(yard["steps"], cost["client_steps"])),
                (m, t, None, "speedup_bytes", _ratio(yard["bytes"], cost["bytes_up"] + cost["bytes_down"])),
                (m, t, None, "speedup_wall", _ratio(yard["wall_s"], cost["wall_s"])),
            ]
        for arm in arms:
            for r in labels:
                gone = arm == "retrain" or (arm in methods and r >= half)
                forget = 0.7 if gone else 0.95
                rows += [(arm, r, withdrawn, "forget_accuracy", forget + rng.normal(0, 0.01)),
                         (arm, r, withdrawn, "retain_accuracy", 0.9 + rng.normal(0, 0.01))]
        # Calibration model (original, event - 1): the oracle sees the client (and control 0, not 3).
        cal_auc = 0.78 + rng.normal(0, 0.01)
        rows += _oracle_rows(rng, "original", event_round - 1, withdrawn, cal_auc, 0.0)
        for c in controls:
            rows += _oracle_rows(rng, "original", event_round - 1, c, CONTROL_AUC.get(c, 0.6), 0.0)
        target = {"original": (0.79, 0.02), "retrain": (0.51, 0.85)}
        target.update({m: (0.55 - 0.03 * i, 0.7 + 0.1 * i) for i, m in enumerate(methods)})
        # Right after the unlearning step: original unchanged since calibration; methods forgot less
        # than they will after the later rounds.
        at_event = {"original": (cal_auc, 0.0), "retrain": target["retrain"]}
        at_event.update({m: (0.62 - 0.03 * i, 0.45 + 0.1 * i) for i, m in enumerate(methods)})
        for arm in arms:
            for r in [half, *(float(x) for x in range(event_round, rounds + 1))]:
                auc, fr = at_event[arm] if r == half else target[arm]
                rows += _oracle_rows(rng, arm, r, withdrawn, auc + rng.normal(0, 0.01), fr + rng.normal(0, 0.02))
                for c in controls:
                    rows += _oracle_rows(rng, arm, r, c, CONTROL_AUC.get(c, 0.6) + rng.normal(0, 0.01),
                                         rng.normal(0.02, 0.02))
                if arm in methods:
                    rows.append((arm, r, withdrawn, "over_unlearning", float(arm == over_unlearning)))
        if client_test:
            for arm in arms:
                for r in [half, *(float(x) for x in range(event_round, rounds + 1))]:
                    for c in (withdrawn, *controls):
                        rows += _client_test_rows(arm, r, c, half, arm == relapse)
            for c in (withdrawn, *controls):
                rows += _client_test_rows("original", event_round - 1.0, c, half, False)
            for m in methods:
                gaps = (RELAPSE_AUC, RELAPSE_Z) if m == relapse else (0.0, 0.0)
                rows += [(m, float(rounds), withdrawn, "relapse_auc", gaps[0] + rng.normal(0, 0.005)),
                         (m, float(rounds), withdrawn, "relapse_z", gaps[1] + rng.normal(0, 0.2)),
                         (m, float(rounds), withdrawn, "relapse_flag", float(m == relapse))]
        if witness is not None:
            cal_w = 0.8 if witness_signal else 0.52
            rows += _witness_auc_rows("original", event_round - 1.0, withdrawn, cal_w)
            for arm in arms:
                for r in [half, *(float(x) for x in range(event_round, rounds + 1))]:
                    gone = arm == "retrain" or (arm in methods and r > half)
                    rows.append((arm, r, withdrawn, "witness_accuracy", (0.1 if gone else 0.9) + rng.normal(0, 0.01)))
                    rows += _witness_auc_rows(arm, r, withdrawn, (0.5 if gone else cal_w) + rng.normal(0, 0.01))
        # Method arms exist from the event on and share original's prefix (rounds
        # <= t - 1, calibration rows included), as the run loop writes them; the
        # report reads the calibration point from original.
        prefix = [r for r in rows if r[0] == "original" and r[1] < half]
        rows = [r for r in rows if not (r[0] in methods and r[1] < half)]
        rows += [(m, *r[1:]) for m in methods for r in prefix]
    df = pd.DataFrame(rows, columns=["arm", "round", "client", "metric", "value"])
    df["round"] = df["round"].astype(float)
    df["client"] = df["client"].astype("Int64")
    df.to_parquet(out / "metrics.parquet", index=False)

    if events and scores:
        frames = []
        for arm in arms:
            for r in (half, float(rounds)):
                for c in (withdrawn, *controls):
                    auc = (at_event if r == half else target)[arm][0] if c == withdrawn else CONTROL_AUC.get(c, 0.6)
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
        if witness is not None:
            log[-1]["witness"] = witness
        log += [{"t": 1.1, "event": "unlearn", "arm": m, "round": event_round, "clients": [withdrawn]}
                for m in methods]
        log.append({"t": 2.0, "event": "warning", "message": "a synthetic warning"})
    log.append({"t": 3.0, "event": "run_end", "ok": True})
    (out / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in log))

    event_toml = f'\n[[events]]\nround = {event_round}\nclient = {withdrawn}\nkind = "withdraw"\n' if events else ""
    if events and witness is not None:
        event_toml += f'witness = "{witness}"\n'
    method_list = ", ".join(f'"{m}"' for m in methods) if events else ""
    (out / "resolved.toml").write_text(
        f'name = "fake"\nseed = {seed}\n\n[data]\ndataset = "synthetic"\nnum_clients = 5\npartitioner = "iid"\n\n'
        f"[train]\nrounds = {rounds}\n{event_toml}\n"
        f"[unlearning]\nmethods = [{method_list}]\nrecovery_rounds = 1\n\n"
        '[oracle]\nattack = "loss"\n'
    )
    return out


MDE = 0.042  # the fake client-level test's detectable shift of the mean score
RELAPSE_AUC, RELAPSE_Z = 0.06, 2.5  # the relapsing method's gaps (last round minus right after its step)
WITNESS_HALF_WIDTH = 0.1  # of the fake witness AUC's bootstrap interval


def client_p(arm: str, rnd: float, client: int, half: float, relapsing: bool = False) -> float:
    """The fake client-level p-value: below 0.001 where the model holds the
    client's data (original and ``none`` always, the other methods right after
    their step, the controls on every arm), ``base + 0.01 * round`` for
    retrain and the recovered methods (so the rounds are told apart). A
    relapsing method: 0.3 right after its step, 0.01 from round half + 1.5 on."""
    base = {"original": 1e-5, "retrain": 0.4, "forsaken": 0.2, "pga": 0.3, "none": 1e-6}.get(arm, 0.5)
    if client != 2:  # controls stay in the model
        return 2e-4 + 1e-5 * rnd
    if relapsing:
        return 0.3 if rnd <= half + 0.5 else 0.01
    if arm in ("original", "none"):
        return base
    return 0.0005 if rnd == half and arm != "retrain" else base + 0.01 * rnd


def _client_test_rows(arm: str, rnd: float, client: int, half: float, relapsing: bool) -> list[tuple]:
    p = client_p(arm, rnd, client, half, relapsing)
    return [(arm, rnd, client, "client_mia_pvalue", p), (arm, rnd, client, "client_mia_z", _norm_isf(p)),
            (arm, rnd, client, "client_mia_mde", MDE)]


def _witness_auc_rows(arm: str, rnd: float, client: int, auc: float) -> list[tuple]:
    return [(arm, rnd, client, "witness_mia_auc", auc),
            (arm, rnd, client, "witness_mia_auc_lo", auc - WITNESS_HALF_WIDTH),
            (arm, rnd, client, "witness_mia_auc_hi", auc + WITNESS_HALF_WIDTH)]


def _norm_isf(p: float) -> float:
    from scipy.stats import norm

    return float(norm.isf(p))


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
    # 1 accuracy figure + FR, AUC, ROC and the cost–forgetting frontier for the withdrawn client
    assert text.count("<img ") == 5


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
    # no signal: every FR cell of the client says so instead of showing a forgetting rate
    table = method_table(text)
    for arm in (*METHODS, "retrain (reference)", "original (reference)"):
        row = table[arm]
        assert row["FR at the event"] == row["final FR"] == row["FR (fixed FPR)"] == "no signal"
        assert re.fullmatch(r"0\.\d{3} \[0\.\d{3}, 0\.\d{3}\]", row["final MIA AUC"])
    assert "client 2: forgetting rate (FR) vs round: not drawn, no signal" in text
    assert "Cost–forgetting frontier: not drawn, no signal" in text
    assert text.count("<img ") == 2  # test accuracy and MIA AUC; no FR curve, no ROC, no frontier


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
    body = _rendered_body(report, tmp_path)
    rendered = re.search(r'data-figures-rendered="(\d+)"', body)
    total = re.search(r'data-figures-total="(\d+)"', body)
    assert rendered and total, body
    return int(rendered.group(1)), int(total.group(1))


def overflowing_tables(report: Path, tmp_path: Path) -> int:
    """Tables wider than a 1,400-px window, in headless Chromium."""
    found = re.search(r'data-tables-overflowing="(\d+)"', _rendered_body(report, tmp_path))
    assert found
    return int(found.group(1))


def _rendered_body(report: Path, tmp_path: Path) -> str:
    chromium = shutil.which("chromium")
    require_tool(chromium is not None, "chromium is not installed (Debian's chromium package; .ci/run installs it)")
    cmd = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--window-size=1400,1000",
        "--dump-dom", report.resolve().as_uri(),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    body = re.search(r"<body[^>]*>", res.stdout)
    assert body, f"no DOM dumped (rc {res.returncode}): {res.stderr[-2000:]}"
    return body.group(0)


@pytest.mark.slow  # headless Chromium
def test_figures_render_in_headless_chromium(single_report, tmp_path):
    rendered, total = rendered_figures(single_report, tmp_path)
    assert rendered == total > 0


@pytest.mark.slow  # headless Chromium
def test_every_table_fits_a_1400px_window(tmp_path):
    for seed in (0, 1):
        make_fake_run(tmp_path / "seeds" / f"seed-{seed}", seed=seed, client_test=True)
    for report in (write_report(tmp_path / "seeds"), write_report(make_fake_run(tmp_path / "one", witness="canary"))):
        assert overflowing_tables(report, tmp_path) == 0, report


# ------------------------------------------------------------- the new layout


class _Tables(HTMLParser):
    """Every <table> of a page as a list of rows of cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self.tables and self.tables[-1]:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def tables(text: str) -> list[list[list[str]]]:
    parser = _Tables()
    parser.feed(text)
    return parser.tables


def merged_tables(text: str) -> list[list[list[str]]]:
    """The page's tables, with a table joined to the one before it when both
    list the same rows (the report splits wide arm tables in two to fit the
    window; read together they are one table)."""
    out: list[list[list[str]]] = []
    for rows in tables(text):
        if out and rows and out[-1] and [r[0] for r in rows[1:]] == [r[0] for r in out[-1][1:]] and len(rows) > 1:
            out[-1] = [prev + row[1:] for prev, row in zip(out[-1], rows, strict=True)]
        else:
            out.append(rows)
    return out


def table_with(text: str, header: str) -> dict[str, dict[str, str]]:
    """The first table having a column ``header``: first cell -> {header: cell}."""
    for rows in merged_tables(text):
        if rows and header in rows[0]:
            return {r[0]: dict(zip(rows[0], r, strict=True)) for r in rows[1:]}
    raise AssertionError(f"no table with a column {header!r}")


def method_table(text: str) -> dict[str, dict[str, str]]:
    return table_with(text, "FR at the event")


def cost_table(text: str) -> dict[str, dict[str, str]]:
    return table_with(text, "speed-up, steps (×)")


def metric_value(run: Path, arm: str, rnd: float, client: int | None, metric: str) -> float:
    df = pd.read_parquet(run / "metrics.parquet")
    sel = (df.arm == arm) & (df["round"] == rnd) & (df.metric == metric)
    sel &= df.client.isna() if client is None else (df.client == client)
    (value,) = df.loc[sel, "value"].to_numpy()
    return float(value)


def test_rounds_are_floats_with_the_half_point(single_report):
    study = load_study(single_report.parent)
    assert study.last_round == 6.0
    assert 3.5 in study.band("forsaken", 2, "fr").index
    assert 3.5 in study.band("original", -1, "test_accuracy").index
    scores = study.runs[0].scores
    assert scores is not None and ("forsaken", 3.5, 2) in scores
    text = single_report.read_text()
    assert "round 3.5, right after the unlearning step" in text


def test_fr_at_event_comes_from_the_half_round(single_report):
    run = single_report.parent
    table = method_table(single_report.read_text())
    for arm in METHODS:
        row = table[arm]
        for header, metric in (("FR at the event", "fr"), ("MIA AUC at the event", "mia_auc")):
            at_step = f"{metric_value(run, arm, 3.5, 2, metric):.3f}"
            at_round = f"{metric_value(run, arm, 4.0, 2, metric):.3f}"
            assert at_step != at_round  # the fake makes them differ
            assert row[header].startswith(at_step + " ["), (arm, header, row[header], at_step)
        # the final columns still come from the last round
        assert row["final FR"].startswith(f"{metric_value(run, arm, 6.0, 2, 'fr'):.3f} [")
        assert row["FR (fixed FPR)"] == f"{metric_value(run, arm, 6.0, 2, 'fr_fixed_fpr'):.3f}"
        assert row["test acc"] == f"{metric_value(run, arm, 6.0, None, 'test_accuracy'):.3f}"
        # TPR at FPR f only with >= 10 / f non-members (the fake has 1,000): a
        # column no arm has a value for is left out rather than all n/a
        assert re.fullmatch(r"0\.\d{3}", row["TPR @ 1% FPR"]) and "TPR @ 0.1% FPR" not in row


def test_speedups_and_retrain_yardstick(single_report):
    run = single_report.parent
    text = single_report.read_text()
    costs = cost_table(text)
    for i, m in enumerate(METHODS):
        for header, metric in (("speed-up, steps (×)", "speedup_steps"), ("speed-up, bytes (×)", "speedup_bytes"),
                               ("speed-up, wall (×)", "speedup_wall")):
            v = metric_value(run, m, 4.0, None, metric)
            assert costs[m][header] == ("∞" if v == np.inf else f"{v:.1f}"), (m, header)
        assert costs[m]["client steps"] == f"{method_cost(m, i)['client_steps']:,.0f}"
    assert [costs["none"][h] for h in ("speed-up, steps (×)", "speed-up, bytes (×)", "speed-up, wall (×)")] == [
        "∞", "∞", "∞"]
    assert costs["forsaken"]["speed-up, steps (×)"] == "3.0" and costs["pga"]["speed-up, wall (×)"] == "4.0"
    retrain = costs["retrain (to the event)"]
    assert retrain["client steps"] == "180" and retrain["MB total"] == "16.50" and retrain["wall s"] == "6.00"
    assert retrain["speed-up, steps (×)"] == "—"
    assert "Retraining to the end of the run (round 6): 360 client steps, 33.00 MB, 12.00 wall s." in text
    assert "recovery rounds excluded" not in text


def test_interval_labels_single_and_multi_seed(single_report, tmp_path):
    single = single_report.read_text()
    assert "oracle-sampling interval (model fixed)" in single
    assert "understate" in single and "--seeds N" in single
    caption = method_table_caption(single)
    assert "oracle-sampling interval (model fixed)" in caption
    root = tmp_path / "multi"
    for s in range(3):
        make_fake_run(root / f"seed-{s}", seed=s)
    multi = write_report(root).read_text()
    assert "across-seed 95% interval" in method_table_caption(multi)
    assert "oracle-sampling" not in method_table_caption(multi)
    costs = cost_table(multi)
    assert costs["none"]["speed-up, steps (×)"] == "∞"
    assert costs["forsaken"]["speed-up, steps (×)"] == "3.0 ± 0.0"
    assert re.fullmatch(r"0\.\d{3} ± 0\.\d{3}", method_table(multi)["forsaken"]["FR at the event"])


def method_table_caption(text: str) -> str:
    m = re.search(r"&quot;At the event&quot;: .*?</p>", text)
    assert m, "no caption under the methods table"
    return m.group(0)


def test_how_to_read_section(single_report):
    section = single_report.read_text().split("How to read this report", 1)[1]
    assert "fr_fixed_fpr" in section
    assert "(A<sub>F</sub> − B<sub>F</sub>) / B<sub>T</sub>" in section
    assert "t − 0.5" in section and "rounds 1..t − 1" in section
    assert "10/f" in section and "no signal" in section
    assert "<b>Cost–forgetting frontier</b>" in section and "black star at (1, 0)" in section
    assert "recovery rounds excluded" not in section


def test_controls_without_signal_and_any_arm(tmp_path):
    run = make_fake_run(tmp_path / "run")
    df = pd.read_parquet(run / "metrics.parquet")
    extra = df[df.arm == "original"].assign(arm="another-arm")
    pd.concat([df, extra], ignore_index=True).to_parquet(run / "metrics.parquet", index=False)
    study = load_study(run)
    assert "another-arm" in study.arms  # arms are whatever arms the metrics hold
    text = write_report(run).read_text()
    controls = table_with(text, "client 3 FR")
    for arm, row in controls.items():
        assert row["client 3 FR"] == row["client 3 FR (fixed FPR)"] == "no signal"  # calibration AUC 0.58
        assert re.fullmatch(r"-?0\.\d{3} \[-?0\.\d{3}, -?0\.\d{3}\]", row["client 0 FR"]), arm
    assert "another-arm" in controls


def test_multi_seed_partial_signal(tmp_path):
    root = tmp_path / "multi"
    for s in range(3):
        run = make_fake_run(root / f"seed-{s}", seed=s, scores=False)
        if s == 0:
            df = pd.read_parquet(run / "metrics.parquet")
            sel = (df.arm == "original") & (df["round"] == 3) & (df.client == 2) & (df.metric == "mia_auc")
            df.loc[sel, "value"] = 0.52
            df.to_parquet(run / "metrics.parquet", index=False)
    text = write_report(root).read_text()
    assert "In 1 of 3 seeds that AUC is below 0.65" in text
    cell = method_table(text)["forsaken"]["final FR"]
    assert re.fullmatch(r"0\.\d{3} ± 0\.\d{3} \(2 of 3 seeds; 1 no signal\)", cell), cell
    caption = frontier_section(text).split("</figure>", 1)[0]
    assert "means over 2 seeds" in caption and "1 of 3 seeds left out: no signal." in caption


# ------------------------------------------------------- cost–forgetting frontier

FRONTIER_CAPTION = (
    "Cost–forgetting frontier: gap to retrain&#x27;s MIA AUC right after the unlearning step against speed-up "
    "over retraining to the event (client steps, wall time). Lower and further right is better."
)


def drop_speedups(run: Path) -> None:
    """Remove the speed-up rows, as in a run written before they existed."""
    df = pd.read_parquet(run / "metrics.parquet")
    df[~df.metric.str.startswith("speedup_")].to_parquet(run / "metrics.parquet", index=False)


def test_frontier_points_exact_values(tmp_path):
    run = make_fake_run(tmp_path / "run", seed=0)
    pts = frontier_points(load_study(run), 2, 4)
    assert list(pts.columns) == ["run", "arm", "speedup_steps", "speedup_wall", "auc_gap"]
    assert list(pts.arm) == list(METHODS) and set(pts.run) == {0}  # methods only; retrain is the reference
    by_arm = pts.set_index("arm")
    # retraining to the event: 3 rounds × (60 steps, 2 wall s); forsaken 60 steps / 0.5 s, pga 120 / 1.5
    assert by_arm.loc["forsaken", "speedup_steps"] == 3.0 and by_arm.loc["forsaken", "speedup_wall"] == 12.0
    assert by_arm.loc["pga", "speedup_steps"] == 1.5 and by_arm.loc["pga", "speedup_wall"] == 4.0
    assert by_arm.loc["none", "speedup_steps"] == np.inf and by_arm.loc["none", "speedup_wall"] == np.inf
    ref = metric_value(run, "retrain", 3.5, 2, "mia_auc")
    for arm in METHODS:
        gap = abs(metric_value(run, arm, 3.5, 2, "mia_auc") - ref)
        assert by_arm.loc[arm, "auc_gap"] == pytest.approx(gap, abs=1e-12)
        assert gap != pytest.approx(abs(metric_value(run, arm, 4.0, 2, "mia_auc") - ref))  # t - 0.5, not t

    root = tmp_path / "multi"
    for s in range(3):
        make_fake_run(root / f"seed-{s}", seed=s)
    multi = frontier_points(load_study(root), 2, 4)
    assert len(multi) == 3 * len(METHODS) and sorted(set(multi.run)) == [0, 1, 2]
    seed1 = multi[multi.run == 1].set_index("arm")
    ref1 = metric_value(root / "seed-1", "retrain", 3.5, 2, "mia_auc")
    assert seed1.loc["pga", "auc_gap"] == pytest.approx(
        abs(metric_value(root / "seed-1", "pga", 3.5, 2, "mia_auc") - ref1), abs=1e-12)
    assert (multi[multi.arm == "none"].speedup_steps == np.inf).all()


def frontier_section(text: str) -> str:
    """The client section's text from the frontier heading on."""
    assert "<h3>Cost–forgetting frontier, client 2</h3>" in text
    return text.split("<h3>Cost–forgetting frontier, client 2</h3>", 1)[1]


@pytest.mark.slow  # draws the frontier figure four times
def test_frontier_figure_single_and_multi_seed(tmp_path):
    single = make_fake_run(tmp_path / "single", seed=0)
    text = write_report(single).read_text()
    section = frontier_section(text)
    assert section.startswith("<figure><img src=\"data:image/png;base64,")
    assert FRONTIER_CAPTION in section.split("</figure>", 1)[0]
    assert "One run: no intervals" in section.split("</figure>", 1)[0]
    # after the method and cost tables
    assert text.index("speed-up, steps (×)") < text.index("<h3>Cost–forgetting frontier")
    n_single = text.count("<img ")
    drop_speedups(single)
    without = write_report(single).read_text()
    assert "<h3>Cost–forgetting frontier" not in without and FRONTIER_CAPTION not in without
    assert without.count("<img ") == n_single - 1

    root = tmp_path / "multi"
    for s in range(3):
        make_fake_run(root / f"seed-{s}", seed=s)
    multi = write_report(root).read_text()
    caption = frontier_section(multi).split("</figure>", 1)[0]
    assert FRONTIER_CAPTION in caption
    assert "means over 3 seeds" in caption and "across-seed 95% interval" in caption
    n_multi = multi.count("<img ")
    for s in range(3):
        drop_speedups(root / f"seed-{s}")
    assert write_report(root).read_text().count("<img ") == n_multi - 1


def test_frontier_skipped_without_methods(tmp_path):
    text = write_report(make_fake_run(tmp_path / "run", methods=())).read_text()
    assert "<h3>Cost–forgetting frontier" not in text and FRONTIER_CAPTION not in text


# ------------------------------------------------ client-level test, backdoor witness


def test_client_p_columns_come_from_the_event_and_last_round(tmp_path):
    run = make_fake_run(tmp_path / "run", client_test=True)
    text = write_report(run).read_text()
    table = method_table(text)
    for arm in (*METHODS, "retrain (reference)", "original (reference)"):
        name = arm.split(" ")[0]
        for header, rnd in (("client p at the event", 3.5), ("client p at the last round", 6.0)):
            p = metric_value(run, name, rnd, 2, "client_mia_pvalue")
            word = "detected" if p < 0.05 else "not detected"
            assert table[arm][header] == ("<0.001" if p < 0.001 else f"{p:.3f}") + f", {word}", (arm, header)
    # the fake: pga 0.0005 right after its step, 0.36 at the last round; retrain 0.435 and 0.46
    assert table["pga"]["client p at the event"] == "<0.001, detected"
    assert table["pga"]["client p at the last round"] == "0.360, not detected"
    assert table["retrain (reference)"]["client p at the event"] == "0.435, not detected"
    assert table["original (reference)"]["client p at the last round"] == "<0.001, detected"
    assert "median p over the seeds" in text  # the column titles say how seeds are combined
    controls = table_with(text, "client 0 client p at the last round")
    assert all(row["client 0 client p at the last round"] == "<0.001, detected" for row in controls.values())
    assert "client 3 client p at the last round" in next(iter(controls.values()))
    section = text.split("How to read this report", 1)[1]
    assert "<b>Client-level test</b>" in section and "never-trained data" in section and "uniform" in section
    assert "<i>not detected</i>, which is not proof of forgetting" in section and "80% of the time" in section
    assert "<b>Backdoor success</b>" in section


def test_client_p_median_across_seeds(tmp_path):
    root = tmp_path / "multi"
    for s in range(3):
        make_fake_run(root / f"seed-{s}", seed=s, client_test=True)
    df = pd.read_parquet(root / "seed-0" / "metrics.parquet")  # one seed's p differs: the median ignores it
    df.loc[(df.arm == "pga") & (df["round"] == 6.0) & (df.client == 2) & (df.metric == "client_mia_pvalue"),
           "value"] = 0.9
    df.to_parquet(root / "seed-0" / "metrics.parquet", index=False)
    table = method_table(write_report(root).read_text())
    assert table["pga"]["client p at the last round"] == "0.360 (median), not detected"
    assert table["pga"]["client p at the event"] == "<0.001 (median), detected"


def test_runs_without_client_test_have_no_client_p_columns(single_report):
    text = single_report.read_text()
    assert "client p at the event" not in text and "client p at the last round" not in text
    assert "backdoor success (triggered test)" not in text and "backdoor success vs round" not in text


@pytest.mark.slow  # headless Chromium
def test_backdoor_witness_label_and_figure(tmp_path):
    plain = write_report(make_fake_run(tmp_path / "plain")).read_text()
    run = make_fake_run(tmp_path / "backdoor", witness="backdoor")
    text = write_report(run).read_text()
    table = table_with(text, "backdoor success (triggered test)")
    assert "witness acc" not in table["pga"]
    assert table["pga"]["backdoor success (triggered test)"] == \
        f"{metric_value(run, 'pga', 6.0, 2, 'witness_accuracy'):.3f}"
    assert "client 2: backdoor success vs round" in text
    assert text.count("<img ") == plain.count("<img ") + 1
    rendered, total = rendered_figures(run / "report.html", tmp_path)
    assert rendered == total == plain.count("<img ") + 1

    canary = write_report(make_fake_run(tmp_path / "canary", witness="canary")).read_text()
    assert "witness acc" in method_table(canary)["pga"]
    assert "backdoor success (triggered test)" not in canary and "backdoor success vs round" not in canary
    assert canary.count("<img ") == plain.count("<img ")


# ------------------------------------------- paired verdicts, power, witness signal, relapse


def rows_of(text: str, header: str) -> list[dict[str, str]]:
    """Every row of the first table having a column ``header``, as dicts."""
    for rows in tables(text):
        if rows and header in rows[0]:
            return [dict(zip(rows[0], r, strict=True)) for r in rows[1:]]
    raise AssertionError(f"no table with a column {header!r}")


def verdict_rows(text: str) -> dict[tuple[str, str], dict[str, str]]:
    """The paired-verdict table: (method, metric label) -> row."""
    return {(r["method"], r["metric (margin)"].split(" (±")[0]): r for r in rows_of(text, "verdict at the event")}


def test_multi_seed_report_shows_paired_verdicts(tmp_path):
    from fedforget.analysis.verdicts import (
        VERDICT_LABELS,
        VERDICT_MARGINS,
        paired_verdict,
    )

    root = tmp_path / "multi"
    for s in range(3):
        make_fake_run(root / f"seed-{s}", seed=s, client_test=True)
    text = write_report(root).read_text()
    table = verdict_rows(text)
    assert {m for m, _ in table} == set(METHODS)
    for m in METHODS:
        for metric, label in ((k, VERDICT_LABELS[k]) for k in VERDICT_MARGINS):
            row = table[(m, label)]
            assert row["metric (margin)"] == f"{label} (± {VERDICT_MARGINS[metric]:g})"
            client = None if metric == "test_accuracy" else 2
            for where, rnd in (("at the event", 3.5), ("at the last round", 6.0)):
                diffs = [metric_value(root / f"seed-{s}", m, rnd, client, metric)
                         - metric_value(root / f"seed-{s}", "retrain", rnd, client, metric) for s in range(3)]
                want = paired_verdict(diffs, metric)
                assert row[f"gap {where}"] == want.gap_text(), (m, metric, where)
                assert row[f"verdict {where}"] == want.verdict_text(), (m, metric, where)
    assert re.fullmatch(r"[+-]\d\.\d{3} ± \d\.\d{3}", table[("forsaken", "MIA AUC")]["gap at the event"])
    # the fake: every method's AUC right after its step is far above retrain's
    assert all(table[(m, "MIA AUC")]["verdict at the event"] == "worse" for m in METHODS)
    assert "Δ AUC vs retrain" not in text and "Δ test acc vs retrain" not in text
    assert "✓" not in text and "✗" not in text
    section = text.split("How to read this report", 1)[1]
    assert "<b>Paired verdicts against retrain</b>" in section and "MIA AUC ± 0.02" in section


def test_single_run_verdicts_say_one_seed(single_report):
    table = verdict_rows(single_report.read_text())
    assert table and all(r["verdict at the event"] == r["verdict at the last round"] == "one seed, no interval"
                         for r in table.values())
    assert re.fullmatch(r"[+-]\d\.\d{3}", table[("pga", "FR")]["gap at the last round"])
    assert ("pga", "client-level z") not in table  # the run has no client-level test


def test_fr_verdicts_without_signal(tmp_path):
    run = make_fake_run(tmp_path / "run", scores=False)
    df = pd.read_parquet(run / "metrics.parquet")
    df.loc[(df.arm == "original") & (df["round"] == 3) & (df.client == 2) & (df.metric == "mia_auc"), "value"] = 0.55
    df.to_parquet(run / "metrics.parquet", index=False)
    table = verdict_rows(write_report(run).read_text())
    assert table[("pga", "FR")]["verdict at the event"] == table[("pga", "FR")]["verdict at the last round"] == \
        "no signal"
    assert table[("pga", "MIA AUC")]["verdict at the event"] == "one seed, no interval"


def test_not_detected_is_never_forgotten_and_gives_the_power(tmp_path):
    run = make_fake_run(tmp_path / "run", client_test=True)
    text = write_report(run).read_text()
    assert ("<li>retrain at the last round (round 6): p = 0.460, not detected; the test detects a shift ≥ 0.0420 in "
            "mean score 80% of the time at this client&#x27;s size and pool.</li>") in text
    assert "<li>pga at the last round (round 6): p = 0.360, not detected;" in text
    assert "<li>pga right after the step" not in text  # detected there (p < 0.001): no power line
    visible = re.sub(r'src="data:[^"]*"', "", text)
    for piece in re.findall(r"<(?:td|li|p)[^>]*>([^<]*not detected[^<]*)<", visible):
        assert not re.search(r"\b(forgot|forgotten|forgets)\b", piece), piece
    assert not re.search(r"p = [^<]*\b(forgot|forgotten|forgets)\b", visible)
    # without client_mia_mde the power is said to be unknown, not guessed
    df = pd.read_parquet(run / "metrics.parquet")
    df[df.metric != "client_mia_mde"].to_parquet(run / "metrics.parquet", index=False)
    assert "its power is unknown (no client_mia_mde in this run)" in write_report(run).read_text()


def test_witness_auc_interval_and_no_signal(tmp_path):
    run = make_fake_run(tmp_path / "seen", witness="canary")
    text = write_report(run).read_text()
    auc = metric_value(run, "pga", 6.0, 2, "witness_mia_auc")
    lo, hi = (metric_value(run, "pga", 6.0, 2, f"witness_mia_auc_{k}") for k in ("lo", "hi"))
    assert method_table(text)["pga"]["witness AUC"] == f"{auc:.3f} [{lo:.3f}, {hi:.3f}]"
    assert "its interval excludes 0.5, so the oracle sees the planted witnesses" in text

    blind = make_fake_run(tmp_path / "blind", witness="canary", witness_signal=False)
    text = write_report(blind).read_text()
    for arm, row in method_table(text).items():
        assert row["witness AUC"] == row["witness FR"] == row["witness FR (fixed FPR)"] == "no signal", arm
        assert re.fullmatch(r"0\.\d{3}", row["witness acc"]), arm  # not an oracle verdict: still shown
    assert "its interval includes 0.5: no signal" in text

    root = tmp_path / "multi"
    for s in range(3):
        make_fake_run(root / f"seed-{s}", seed=s, witness="canary", witness_signal=s != 0)
    text = write_report(root).read_text()
    assert "In 1 of 3 seeds its bootstrap interval includes 0.5" in text
    assert method_table(text)["pga"]["witness AUC"].endswith("(2 of 3 seeds; 1 no signal)")


def test_relapse_table_and_flag(tmp_path):
    root = tmp_path / "multi"
    for s in range(3):
        make_fake_run(root / f"seed-{s}", seed=s, client_test=True, relapse="forsaken")
    text = write_report(root).read_text()
    rows = {r["method"]: r for r in rows_of(text, "AUC relapse verdict")}
    values = [metric_value(root / f"seed-{s}", "forsaken", 6.0, 2, "relapse_auc") for s in range(3)]
    est = t_interval(values)
    assert rows["forsaken"]["AUC relapse"] == f"{est.mean:+.3f} ± {(est.hi - est.lo) / 2:.3f}"
    assert rows["forsaken"]["AUC relapse verdict"] == "worse"
    assert rows["forsaken"]["z relapse verdict"] == "worse"
    assert rows["pga"]["AUC relapse verdict"] != "worse"
    assert ("relapse: forsaken (seed 0; flagged in 3 of 3 seeds): not detected right after its step (p = 0.300), "
            "detected again at round 5 (p = 0.010): the federation re-taught what it was meant to forget.") in text
    assert "relapse: pga" not in text and "relapse: none" not in text
    section = text.split("How to read this report", 1)[1]
    assert "<b>Relapse</b>" in section and "a model the federation re-teaches was not unlearned" in section

    single = write_report(make_fake_run(tmp_path / "one", client_test=True, relapse="pga")).read_text()
    assert ("relapse: pga: not detected right after its step (p = 0.300), detected again at round 5 (p = 0.010): "
            "the federation re-taught what it was meant to forget.") in single
    assert "<h3>Relapse" not in write_report(make_fake_run(tmp_path / "none")).read_text()  # no relapse rows


def test_over_unlearning_note_names_the_noise_model(single_report):
    text = single_report.read_text()
    assert "by more than the 95% interval of the difference of the two accuracies" in text
    assert "2 points" not in text


def test_study_report_shows_paired_verdicts_per_cell(tmp_path):
    import fedforget
    from fedforget.analysis.verdicts import VERDICT_LABELS

    root = tmp_path / "study"
    axes = {"train.lr": ["0.1", "0.3"]}
    cells = [{"cell": i, "dir": f"cell-{i:03d}", "values": {"train.lr": v}} for i, v in enumerate(axes["train.lr"])]
    for c in cells:
        for s in range(3):
            make_fake_run(root / c["dir"] / f"seed-{s}", seed=10 * c["cell"] + s, client_test=True)
    (root / "study.json").write_text(json.dumps({"config": "fake.toml", "axes": axes, "zip": False, "seeds": 3,
                                                 "cells": cells}))
    text = write_report(root).read_text()
    assert text.count("<h2>") == 2 and "Paired verdicts against retrain" in text
    rows = rows_of(text, "verdict at the last round")
    assert len(rows) == 2 * len(METHODS) * 6
    want = fedforget.load(root).verdicts("final").set_index(["cell", "arm", "metric"])
    row = next(r for r in rows if r["cell"] == "1" and r["method"] == "pga" and r["metric (margin)"].startswith("FR ("))
    w = want.loc[(1, "pga", "fr")]
    assert row["gap at the last round"] == f"{w['mean']:+.3f} ± {(w.hi - w.lo) / 2:.3f}"
    assert row["verdict at the last round"].split(" (")[0] == w.verdict and row["seeds"] == "3"
    assert row["metric (margin)"] == f"{VERDICT_LABELS['fr']} (± 0.05)"


def test_report_leads_with_the_verdict_and_collapses_warnings(tmp_path):
    """The headline comes right after the title, before the run's metadata, and
    names each method's standing; warnings sit in one collapsed list."""
    for seed in (0, 1, 2):
        run = make_fake_run(tmp_path / "seeds" / f"seed-{seed}", seed=seed)
        with open(run / "events.jsonl", "a") as f:
            for k in range(3):
                f.write(json.dumps({"event": "warning", "message": f"caveat {k}"}) + "\n")
    text = write_report(tmp_path / "seeds").read_text()
    head = text.index('<div class="headline">')
    assert text.index("</h1>") < head < text.index('<table class="meta">')
    headline = text[head:text.index("</div>", head)]
    assert "Client 2 (withdraws at round 4)" in headline and "paired over 3 seeds" in headline
    assert 'href="#how-to-read"' in headline and 'id="how-to-read"' in text
    assert text.count('<details class="warn">') == 1 and 'class="warn">warning:' not in text
    details = text[text.index('<details class="warn">'):text.index("</details>")]
    assert "4 warnings" in details and all(f"caveat {k} (seeds 0, 1, 2)" in details for k in range(3))
    assert text.index("</details>") > head  # below the verdict


def test_report_without_events_shows_only_what_it_has(tmp_path):
    text = write_report(make_fake_run(tmp_path / "plain", events=False)).read_text()
    assert '<div class="headline">' not in text
    for absent in ("recovery rounds", "membership attack", "Dotted red line", "oracle-sampling"):
        assert absent not in text, absent
