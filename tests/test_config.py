"""Scenario validation: every error names file and key, exits 2, writes nothing."""

from pathlib import Path

import pytest

from fedforget.cli import main
from fedforget.config import ConfigError, load_scenario

GOOD = """
name = "t"
seed = 1
[data]
dataset = "digits"
num_clients = 5
[train]
rounds = 4
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "s.toml"
    p.write_text(text)
    return p


def test_defaults_filled_and_overrides_typed(tmp_path):
    sc = load_scenario(write(tmp_path, GOOD), ["train.rounds=7", "data.alpha=0.1", "data.partitioner=dirichlet"])
    assert sc.train.rounds == 7 and isinstance(sc.train.rounds, int)
    assert sc.data.alpha == 0.1 and sc.data.partitioner == "dirichlet"
    assert sc.data.holdout_fraction == 0.2  # default filled in
    assert "holdout_fraction = 0.2" in sc.to_toml()


@pytest.mark.parametrize(
    "text, overrides, needle",
    [
        (GOOD + "\n[model]\nnmae = 'mlp'\n", [], "model.nmae: unknown key"),
        (GOOD, ["train.rounds=many"], "train.rounds"),
        (GOOD, ["train.lr=-1"], "train.lr"),
        (GOOD, ["data.dataset=cifar"], "unknown dataset 'cifar'"),
        (GOOD, ["model.name=resnet"], "model.name"),
        (GOOD, ["data.partitioner=kmeans"], "data.partitioner"),
        (GOOD + "\n[[events]]\nround = 9\nclient = 1\n", [], "after the last round"),
        (GOOD + "\n[[events]]\nround = 2\nclient = 11\n", [], "client 11 does not exist"),
        (GOOD + "\n[[events]]\nround = 2\nclient = 1\n[[events]]\nround = 3\nclient = 1\n", [], "withdraws twice"),
        (GOOD + "\n[[events]]\nround = 2\nclients = [0,1,2,3,4]\n", [], "at least one must remain"),
        (GOOD + "\n[[events]]\nround = 2\nclient = 1\n[unlearning]\nmethods = ['magic']\n", [], "unknown method 'magic'"),
        ("name = \n", [], "malformed TOML"),
        (GOOD, ["norounds"], "not of the form key=value"),
    ],
)
def test_config_errors_name_file_and_key(tmp_path, text, overrides, needle):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_scenario(path, overrides)
    assert needle in str(err.value)
    assert str(path) in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_scenario(tmp_path / "nope.toml")


def test_cli_bad_config_exits_2_and_writes_nothing(tmp_path, capsys):
    path = write(tmp_path, GOOD + "\n[train]\nepochs = 3\n")  # duplicate table: malformed
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--engine", "inline"]) == 2
    assert "error:" in capsys.readouterr().err
    assert not out.exists()
    path = write(tmp_path, GOOD)
    assert main(["run", str(path), "train.rounds=0", "--out", str(out), "--engine", "inline"]) == 2
    assert "train.rounds" in capsys.readouterr().err
    assert not out.exists()


def test_cli_data_errors_are_one_line_and_write_nothing(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    path = write(tmp_path, GOOD)
    # more clients than samples: caught before any runtime starts
    assert main(["run", str(path), "data.num_clients=1000", "--out", str(out), "--engine", "inline"]) == 2
    assert "too many" in capsys.readouterr().err and not out.exists()
    # a Hub dataset that cannot be reached
    import fedforget.data.datasets as ds
    from fedforget.data import DataUnavailableError

    def offline(hub_id, seed):
        raise DataUnavailableError(f"could not load dataset 'hf:{hub_id}' from the Hugging Face Hub (offline)")

    monkeypatch.setattr(ds, "load_hf", offline)
    assert main(["run", str(path), "data.dataset=hf:mnist", "--out", str(out), "--engine", "inline"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Hugging Face Hub" in err and not out.exists()


def test_cli_client_crash_is_one_clear_error(tmp_path, capsys, monkeypatch):
    import fedforget.flower.client_app as ca

    def crash(*a, **k):
        raise RuntimeError("GPU fell off the bus")

    monkeypatch.setattr(ca, "train_local", crash)
    out = tmp_path / "run"
    assert main(["run", str(write(tmp_path, GOOD)), "--out", str(out), "--engine", "inline", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "GPU fell off the bus" in err and "client" in err
    assert not (out / "metrics.parquet").exists()


def test_cli_methods_lists_every_method_with_parameters(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in ["forsaken", "perturb", "fnn", "federaser", "pga", "none"]:
        assert f"{name}:" in out
    assert "mask_fraction = 0.25" in out and "beta = 0.05" in out and "needs:" in out
    # Every built-in method (and the example plugin, installed in CI) recovers with plain FedAvg.
    from fedforget import registry
    from fedforget.unlearning import UnlearningMethod

    plain = [n for n in registry.methods.names()
             if registry.methods.get(n).recovery_epochs is UnlearningMethod.recovery_epochs]
    assert {"forsaken", "perturb", "fnn", "federaser", "pga", "none"} <= set(plain)
    assert "speedup_steps" in out and out.count("recovery: plain FedAvg") == len(plain)
    # attacks and their [oracle.<attack>] tables come from the attack registry
    assert "lira:" in out and "shadows = 4" in out and "population:" in out and "C = 1.0" in out


def test_cli_report_of_an_unfinished_run_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "events.jsonl.partial").write_text("{}\n")
    assert main(["report", str(tmp_path / "run")]) == 2
    assert "did not finish" in capsys.readouterr().err
