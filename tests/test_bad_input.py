"""Bad input is refused before anything starts: one clear message, exit
status 2, nothing written."""

import os
import stat
from pathlib import Path

import pytest

from fedforget.cli import main

WITHDRAWAL = "configs/withdrawal.toml"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (overrides, a phrase the one error line must contain)
BAD_OVERRIDES = [
    (["train.lr=inf"], "train.lr: Input should be a finite number"),
    (["train.lr=nan"], "train.lr: Input should be a finite number"),
    (["unlearning.forsaken.step_size=inf"], "finite"),
    (["oracle.lira.shadows=0", "oracle.attack=\"lira\""], "lira.shadows"),
    (["name=../../evil"], "name"),
    (["name=a/b"], "name"),
    (["data.holdout_fraction=0"], "forsaken asks the withdrawing client for self-checks"),
    (["data.audit_share=1.0"], "validation part"),
    (["data.server_validation_fraction=0", 'unlearning.forsaken.generator="learned"'], "server's validation set"),
    (['model.name="logreg"', "model.hidden=[]", 'unlearning.methods=["fnn"]'], "fnn prunes hidden ReLU neurons"),
    (["train.rouns=5"], "train.rouns"),
    (["events=[{round=99, client=1}]"], "after the last round"),
    (["events=[{round=3, client=99}]"], "does not exist"),
    (['unlearning.methods=["nope"]'], "unknown method 'nope'"),
    (['unlearning.methods=["none","none"]'], "lists a method twice"),
    (['oracle.attack="nope"'], "oracle.attack"),
    (["train.rounds"], "train.rounds"),
    (["train.rounds=-1"], "train.rounds"),
    (["data.num_clients=20000"], "data.num_clients"),
    (['runtime.device="tpu"'], "runtime.device"),
    (["events=[]"], "no [[events]]"),
    (["events=[{round=3, clients=[0,1,2,3,4]}]"], "at least one must remain"),
]


@pytest.mark.parametrize("overrides,phrase", BAD_OVERRIDES, ids=[" ".join(o) for o, _ in BAD_OVERRIDES])
def test_bad_scenario_is_refused_up_front(tmp_path, capsys, monkeypatch, overrides, phrase):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "run"
    assert main(["run", WITHDRAWAL, *overrides, "--out", str(out), "--engine", "inline"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and phrase in err[0], err
    assert not out.exists()


def test_missing_and_malformed_files_are_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(tmp_path / "nope.toml"), "--out", str(out)]) == 2
    assert "file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nrounds = 3\n")
    assert main(["run", str(bad), "--out", str(out)]) == 2
    assert "malformed TOML" in capsys.readouterr().err
    assert not out.exists()


def test_run_directories_that_cannot_be_used_are_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "metrics.parquet").write_text("an earlier run")
    assert main(["run", WITHDRAWAL, "--out", str(taken), "--engine", "inline"]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert sorted(p.name for p in taken.iterdir()) == ["metrics.parquet"]
    assert main(["run", WITHDRAWAL, "--seeds", "0", "--out", str(tmp_path / "s")]) == 2
    assert "--seeds" in capsys.readouterr().err and not (tmp_path / "s").exists()
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    assert main(["run", WITHDRAWAL, "--out", str(a_file / "run"), "--engine", "inline"]) == 2
    assert "is a file, not a directory" in capsys.readouterr().err


def test_an_unwritable_run_directory_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    import fedforget.runner

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    real_access = os.access
    # Root may write anywhere, so the permission bits alone do not make the
    # directory unwritable for every user running this: report them as enforced.
    monkeypatch.setattr(fedforget.runner.os, "access",
                        lambda p, mode: False if Path(p) == locked else real_access(p, mode))
    try:
        assert main(["run", WITHDRAWAL, "--out", str(locked / "run"), "--engine", "inline"]) == 2
        assert "is not writable" in capsys.readouterr().err
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(stat.S_IRWXU)


def test_overrides_may_follow_options(tmp_path, capsys, monkeypatch):
    """`fedforget run CONFIG --engine inline train.rounds=2` is the same as with
    the override first; a stray word after an option is still refused."""
    monkeypatch.chdir(ROOT)
    out = tmp_path / "run"
    assert main(["run", "configs/quickstart.toml", "--engine", "inline", "--no-progress", "train.rounds=2",
                 "--out", str(out)]) == 0
    assert "rounds = 2" in (out / "resolved.toml").read_text()
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "configs/quickstart.toml", "--engine", "inline", "stray"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: stray" in capsys.readouterr().err


def test_events_without_methods_warn_what_will_happen():
    from fedforget.config import load_scenario

    with pytest.warns(UserWarning, match="only the original and retrain arms run"):
        load_scenario(os.path.join(ROOT, WITHDRAWAL), ["unlearning.methods=[]"])


def test_a_diverging_arm_stops_the_run_naming_arm_and_round(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "run"
    assert main(["run", "configs/quickstart.toml", "train.lr=1e30", "train.rounds=3", "--engine", "inline",
                 "--no-progress", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "arm 'original' diverged in round 1" in err
    assert not (out / "metrics.parquet").exists() and not (out / "events.jsonl").exists()


def test_report_refuses_a_half_written_run_directory(tmp_path, capsys):
    half = tmp_path / "half"
    half.mkdir()
    (half / "resolved.toml").write_text(open(os.path.join(ROOT, "configs/quickstart.toml")).read())
    (half / "events.jsonl.partial").write_text('{"t": 0, "event": "run_start"')  # torn line
    before = sorted(p.name for p in half.iterdir())
    assert main(["report", str(half)]) == 2
    assert "not a finished run directory" in capsys.readouterr().err
    (half / "metrics.parquet").write_text("not parquet")  # a corrupt table
    assert main(["report", str(half)]) == 2
    assert "error:" in capsys.readouterr().err
    assert sorted(p.name for p in half.iterdir()) == sorted(before + ["metrics.parquet"])
