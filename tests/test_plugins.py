"""Plugins without editing fedforget: installed entry points (groups
``fedforget.<kind>s``) and ``module:attribute`` paths in a scenario, checked at
load, run end to end, and one clear error (exit status 2, nothing written) when
one is missing or broken; the example package of ``examples/`` end to end."""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import fedforget
from fedforget import registry
from fedforget.analysis import load
from fedforget.cli import main
from fedforget.config import ConfigError, load_scenario
from fedforget.registry import PluginError, Registry
from tests.conftest import require_tool, tiny

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "fedforget-example-plugin"
KINDS = ("methods", "attacks", "models", "datasets", "partitioners")

# A module of path plugins: a model, a dataset and an (undecorated) method with
# a client op and parameters; plus objects of the wrong kinds.
PATHS_MODULE = '''
import numpy as np
from pydantic import Field
from torch import nn

from fedforget.data import RawDataset
from fedforget.unlearning import ClientReply, MethodParams, UnlearningMethod

CALLS = []


def wide(input_shape, num_classes, hidden):
    """A wide one-layer MLP."""
    return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), 64), nn.ReLU(), nn.Linear(64, num_classes))


def exploding(input_shape, num_classes, hidden):
    """Fails when built."""
    raise TypeError("no such architecture")


def load_small(seed):
    """600 seeded samples, 3 classes."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, 600)
    x = rng.normal(size=(600, 10)) + np.eye(3, 10)[y] * 2
    return RawDataset(x=x.astype(np.float32), y=y.astype(np.int64), num_classes=3)


def _probe(model, data, arrays, config):
    CALLS.append(data.partition_id)
    return ClientReply({}, {"n": float(len(data.y_forget)), "steps": 0.0})


class HalveParams(MethodParams):
    factor: float = Field(0.5, gt=0, le=1, description="scale of every weight")


class Halve(UnlearningMethod):
    name = "halve"
    Params = HalveParams
    summary = "Scale the weights, ask the leaver, one round."
    needs = "remaining clients: one round"
    client_ops = {"probe": _probe}

    def unlearn(self, model, fed):
        for p in model.parameters():
            p.data.mul_(self.params.factor)
        replies = [fed.ask_client(c, "halve.probe", model, None, {}) for c in fed.withdrawing]
        self.asked = sum(r.metrics["n"] for r in replies)
        model = fed.run_rounds(model, 1, "halve")
        return model, fed.cost()

    def step_metrics(self):
        return {"halve_factor": self.params.factor, "halve_forget_n": self.asked}


class Abstract(UnlearningMethod):
    name = "abstract"


NOT_A_MODEL = 42
'''


def _write_dist(root: Path, dist: str, version: str, entry_points: dict[str, dict[str, str]]) -> None:
    """A minimal installed distribution: what importlib.metadata reads."""
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = []
    for group, eps in entry_points.items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {value}" for name, value in eps.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    """``install(entry_points, **modules)``: a fake distribution ``fake-plugins
    1.2.3`` and its modules on sys.path, the global registries set to load
    plugins again on their next read. Everything is restored afterwards."""
    from fedforget.unlearning import CLIENT_OPS

    regs = {k: getattr(registry, k) for k in KINDS}
    saved = {k: (dict(r._entries), dict(r._origins), dict(r._broken), set(r._plugins_seen), r._loaded)
             for k, r in regs.items()}
    ops = dict(CLIENT_OPS)
    modules_before = set(sys.modules)
    site = tmp_path / "site"

    def install(entry_points: dict[str, dict[str, str]] | None = None, **modules: str) -> Path:
        site.mkdir(exist_ok=True)
        for name, code in modules.items():
            (site / f"{name}.py").write_text(textwrap.dedent(code))
        if entry_points:
            _write_dist(site, "fake-plugins", "1.2.3", entry_points)
        monkeypatch.syspath_prepend(str(site))
        importlib.invalidate_caches()
        for r in regs.values():
            r._loaded = False  # the next read discovers again, and loads plugins not seen yet
        return site

    yield install
    for k, r in regs.items():
        r._entries, r._origins, r._broken, r._plugins_seen, r._loaded = (
            saved[k][0], saved[k][1], saved[k][2], saved[k][3], saved[k][4])
    CLIENT_OPS.clear()
    CLIENT_OPS.update(ops)
    for name in set(sys.modules) - modules_before:
        if name.startswith("fakeplug"):
            del sys.modules[name]


def _scenario_toml(path: Path, **sections: dict) -> Path:
    """A tiny scenario file (see conftest.tiny) with sections replaced."""
    import tomli_w

    path.write_text(tomli_w.dumps(tiny(**sections).to_toml_dict()))
    return path


def _withdrawal(**extra):
    return {"events": [{"round": 2, "client": 1}], **extra}


# -- entry points -------------------------------------------------------------------
def test_entry_points_load_on_first_read_with_their_origin(plugins):
    plugins({"fedforget.things": {"triple": "fakeplug_things:triple"}},
            fakeplug_things="def triple(x):\n    return 3 * x\n")
    things = Registry("thing", ())
    assert "fakeplug_things" not in sys.modules  # nothing imported before the registry is read
    assert things.names() == ["triple"]
    assert things.get("triple")(2) == 6
    assert things.origin("triple") == "plugin fake-plugins 1.2.3 (fakeplug_things:triple)"
    assert things.plugin_errors() == []
    things.load_plugins()  # idempotent: the entry point is not loaded twice
    assert things.names() == ["triple"]


def test_an_entry_point_its_module_registered_already_is_not_registered_twice(plugins):
    # The module's import registers the function by decorator under the same name: fine.
    plugins({"fedforget.models": {"fake_net": "fakeplug_deco:fake_net"}},
            fakeplug_deco='''
            from torch import nn
            from fedforget import registry

            @registry.models.register("fake_net")
            def fake_net(input_shape, num_classes, hidden):
                return nn.Sequential(nn.Flatten(), nn.Linear(4, num_classes))
            ''')
    assert registry.models.get("fake_net").__module__ == "fakeplug_deco"
    assert registry.models.origin("fake_net") == "plugin fake-plugins 1.2.3 (fakeplug_deco:fake_net)"
    assert registry.models.plugin_errors() == []
    assert tiny(model={"name": "fake_net"}).model.name == "fake_net"


def test_method_entry_points_register_client_ops_and_run(plugins, tmp_path):
    from fedforget.unlearning import CLIENT_OPS

    plugins({"fedforget.methods": {"halve": "fakeplug_paths:Halve"},
             "fedforget.models": {"wide": "fakeplug_paths:wide"},
             "fedforget.datasets": {"small": "fakeplug_paths:load_small"}},
            fakeplug_paths=PATHS_MODULE)
    assert "halve" in registry.methods.names()
    assert registry.methods.origin("halve") == "plugin fake-plugins 1.2.3 (fakeplug_paths:Halve)"
    assert "halve.probe" in CLIENT_OPS  # registered when the entry point was loaded
    sc = tiny(**_withdrawal(unlearning={"methods": ["halve"], "recovery_rounds": 0, "halve": {"factor": 0.25}}),
              model={"name": "wide"}, data={"dataset": "small", "num_clients": 4})
    m = fedforget.run(sc, out=tmp_path / "run").metrics
    step = m[(m.arm == "halve") & (m["round"] == 2) & m.client.isna()].set_index("metric").value
    assert step["halve_factor"] == 0.25 and step["halve_forget_n"] > 0 and step["cost_client_steps"] > 0
    assert sys.modules["fakeplug_paths"].CALLS == [1]  # the client op ran for the withdrawing client


def test_the_listings_show_plugins_and_their_origin(plugins, capsys):
    plugins({"fedforget.methods": {"halve": "fakeplug_paths:Halve"},
             "fedforget.models": {"wide": "fakeplug_paths:wide"},
             "fedforget.datasets": {"small": "fakeplug_paths:load_small"},
             "fedforget.partitioners": {"fake_iid": "fedforget.data.partition:_iid"}},
            fakeplug_paths=PATHS_MODULE)
    for command, name, value in [("methods", "halve", "fakeplug_paths:Halve"), ("models", "wide", "fakeplug_paths:wide"),
                                 ("datasets", "small", "fakeplug_paths:load_small"),
                                 ("partitioners", "fake_iid", "fedforget.data.partition:_iid")]:
        assert main([command]) == 0
        out = capsys.readouterr().out
        assert f"\n{name}: " in out and f"  from: plugin fake-plugins 1.2.3 ({value})" in out, (command, out)
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "from: fedforget.unlearning.pga" in out and "factor = 0.5 - scale of every weight" in out


def test_a_plugin_taking_a_builtin_name_is_an_error_naming_both(plugins, tmp_path, capsys):
    plugins({"fedforget.models": {"mlp": "fakeplug_paths:wide"}}, fakeplug_paths=PATHS_MODULE)
    with pytest.raises(PluginError) as err:
        registry.models.get("mlp")
    msg = str(err.value)
    assert "model 'mlp' is defined twice" in msg
    assert "fedforget.models.mlp" in msg and "plugin fake-plugins 1.2.3 (fakeplug_paths:wide)" in msg
    with pytest.raises(ConfigError, match="model 'mlp' is defined twice"):
        tiny(model={"name": "mlp"})
    assert main(["models"]) == 2
    assert "error: model 'mlp' is defined twice" in capsys.readouterr().err


def test_a_method_entry_point_must_carry_the_class_name(plugins):
    plugins({"fedforget.methods": {"other": "fakeplug_paths:Halve"}}, fakeplug_paths=PATHS_MODULE)
    with pytest.raises(PluginError, match="differs from the class's name 'halve'"):
        registry.methods.get("other")


BROKEN = {"fedforget.models": {"broken_net": "fakeplug_broken:net"},
          "fedforget.methods": {"broken_method": "fakeplug_broken:Method"}}


def test_a_broken_entry_point_is_one_error_and_nothing_is_written(plugins, tmp_path, capsys):
    plugins(BROKEN, fakeplug_broken="raise RuntimeError('kaboom at import')\n")
    # Unused, it stops nothing: other scenarios load, listings show the rest and say what is broken.
    assert tiny().model.name == "mlp"
    assert main(["models"]) == 2
    out, err = capsys.readouterr()
    assert "\nmlp: " in out
    (line,) = err.strip().splitlines()
    assert line == ("error: model plugin 'broken_net' (entry point 'broken_net = fakeplug_broken:net' in group "
                    "fedforget.models of fake-plugins 1.2.3) cannot be loaded: RuntimeError: kaboom at import")
    # Used, the scenario does not load: exit status 2, one error, no run directory.
    toml = _scenario_toml(tmp_path / "s.toml")
    out_dir = tmp_path / "run"
    assert main(["run", str(toml), "model.name=broken_net", "--out", str(out_dir), "--no-progress"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "model plugin 'broken_net'" in line and "fakeplug_broken:net" in line
    assert "RuntimeError: kaboom at import" in line and "fake-plugins 1.2.3" in line
    assert not out_dir.exists()
    with pytest.raises(ConfigError, match="method plugin 'broken_method'.*RuntimeError: kaboom"):
        tiny(**_withdrawal(unlearning={"methods": ["broken_method"]}))


def test_a_broken_plugin_does_not_break_the_command_line_at_startup(tmp_path):
    # A fresh process: importing fedforget (which loads method plugins on import)
    # must not fail; the listing names the broken plugin and exits with status 2.
    site = tmp_path / "site"
    site.mkdir()
    (site / "fakeplug_broken.py").write_text("raise RuntimeError('kaboom at import')\n")
    _write_dist(site, "fake-plugins", "1.2.3", BROKEN)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    res = subprocess.run([sys.executable, "-m", "fedforget", "methods"], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=300, check=False)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    assert [line for line in res.stderr.splitlines() if line.startswith("error:")] == [
        ("error: method plugin 'broken_method' (entry point 'broken_method = fakeplug_broken:Method' in group "
         "fedforget.methods of fake-plugins 1.2.3) cannot be loaded: RuntimeError: kaboom at import")]
    assert "\npga: " in res.stdout


# -- module:attribute paths ---------------------------------------------------------
def test_paths_run_end_to_end_and_reports_take_the_path_as_arm_name(plugins, tmp_path, capsys):
    from fedforget.report.text import verdict_text
    from fedforget.unlearning import CLIENT_OPS

    plugins(fakeplug_paths=PATHS_MODULE)
    method = "fakeplug_paths:Halve"
    toml = _scenario_toml(
        tmp_path / "paths.toml", **_withdrawal(unlearning={"methods": [method, "none"], "recovery_rounds": 0}),
        data={"num_clients": 4}, oracle={"n_boot": 20})
    overrides = ["model.name=fakeplug_paths:wide", "data.dataset=fakeplug_paths:load_small",
                 "data.partitioner=fedforget.data.partition:_iid",
                 "oracle.attack=fedforget.oracle.attacks.loss:LossThresholdAttack",
                 f"unlearning.{method}.factor=0.25"]  # (a key=value override cannot quote a dotted key)
    sc = load_scenario(toml, overrides)
    assert sc.model.name == "fakeplug_paths:wide" and sc.unlearning.method_params(method) == {"factor": 0.25}
    assert "halve.probe" in CLIENT_OPS  # loading the scenario registered the path method's client op
    out = tmp_path / "run"
    assert main(["run", str(toml), *overrides, "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    m = load(out).metrics
    assert {method, "none", "original", "retrain"} <= set(m.arm)
    step = m[(m.arm == method) & (m["round"] == 2) & m.client.isna()].set_index("metric").value
    assert step["halve_factor"] == 0.25 and step["halve_forget_n"] > 0 and step["cost_client_steps"] > 0
    assert sys.modules["fakeplug_paths"].CALLS == [1]
    # The ':' in the arm name breaks no table, report or export.
    assert method in printed and method in verdict_text(out)
    assert method in (out / "report.html").read_text()
    assert main(["export", str(out), "--out", str(tmp_path / "tables")]) == 0
    assert any(method in p.read_text() for p in (tmp_path / "tables").glob("*.csv"))
    # resolved.toml (quoted keys) loads back as the same scenario.
    assert load_scenario(out / "resolved.toml").unlearning.method_params(method) == {"factor": 0.25}


@pytest.mark.parametrize(
    "override, needles",
    [
        ("model.name=fakeplug_nowhere:wide",
         ["model.name", "model 'fakeplug_nowhere:wide': cannot import module 'fakeplug_nowhere'",
          "ModuleNotFoundError"]),
        ("model.name=fakeplug_paths:resnet",
         ["model 'fakeplug_paths:resnet': module 'fakeplug_paths' has no attribute 'resnet'", "AttributeError"]),
        ("model.name=fakeplug_paths:NOT_A_MODEL",
         ["model 'fakeplug_paths:NOT_A_MODEL': NOT_A_MODEL is an instance of int, not callable"]),
        ("model.name=fakeplug_paths:load_small",
         ["model 'fakeplug_paths:load_small': load_small cannot be called as (input_shape, num_classes, hidden)"]),
        ("data.dataset=fakeplug_paths:Halve", ["dataset 'fakeplug_paths:Halve'", "cannot be called as (seed=...)"]),
        ('unlearning.methods=["fakeplug_paths:wide"]',
         [("unlearning.methods: method 'fakeplug_paths:wide': wide is the function fakeplug_paths.wide, "
           "not a subclass of fedforget.unlearning.base.UnlearningMethod")]),
        ('unlearning.methods=["fakeplug_paths:Abstract"]',
         ["method 'fakeplug_paths:Abstract': Abstract is abstract: it does not implement unlearn"]),
        ("oracle.attack=fakeplug_paths:Halve",
         ["oracle.attack", "not a subclass of fedforget.oracle.attacks.base.Attack"]),
        ("model.name=fakeplug_raises:wide",
         [("model 'fakeplug_raises:wide': cannot import module 'fakeplug_raises': its import raised "
           "ZeroDivisionError: division by zero")]),
        ("model.name=fakeplug_paths:exploding",
         ["model.name = 'fakeplug_paths:exploding': building the model raised TypeError: no such architecture"]),
    ],
)
def test_a_bad_path_is_one_error_exit_2_and_nothing_written(plugins, tmp_path, capsys, override, needles):
    plugins(fakeplug_paths=PATHS_MODULE, fakeplug_raises="1 / 0\n")
    toml = _scenario_toml(tmp_path / "s.toml", **_withdrawal(unlearning={"methods": ["none"]}))
    out = tmp_path / "run"
    assert main(["run", str(toml), override, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    for needle in needles:
        assert needle in err, (needle, err)
    assert not out.exists()


def test_a_path_method_whose_name_another_method_has_is_refused(plugins):
    # Its client ops would overwrite pga's: the same name with other ops is an error.
    plugins(fakeplug_impostor='''
        from fedforget.unlearning import ClientReply, UnlearningMethod

        class Impostor(UnlearningMethod):
            name = "pga"
            client_ops = {"ascent": lambda model, data, arrays, config: ClientReply({}, {})}

            def unlearn(self, model, fed):
                return model, fed.cost()
        ''')
    with pytest.raises(PluginError, match="client op 'pga.ascent', which fedforget.unlearning.pga"):
        registry.methods.get("fakeplug_impostor:Impostor")
    from fedforget.unlearning import CLIENT_OPS

    assert CLIENT_OPS["pga.ascent"].__module__ == "fedforget.unlearning.pga"


# -- the example package ------------------------------------------------------------
def _example_installed() -> bool:
    try:
        importlib.metadata.distribution("fedforget-example-plugin")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def test_the_example_package_runs_end_to_end(tmp_path, capsys):
    require_tool(_example_installed(),
                 "the example plugin is not installed (pip install -e examples/fedforget-example-plugin)")
    version = importlib.metadata.version("fedforget-example-plugin")
    for command, name, value in [("methods", "reset_head", "fedforget_example_plugin.method:ResetHead"),
                                 ("models", "wide_mlp", "fedforget_example_plugin.model:wide_mlp"),
                                 ("datasets", "blobs", "fedforget_example_plugin.dataset:load_blobs")]:
        assert main([command]) == 0
        out = capsys.readouterr().out
        assert f"\n{name}: " in out, out
        assert f"  from: plugin fedforget-example-plugin {version} ({value})" in out, out
    run_dir = tmp_path / "run"
    assert main(["run", str(EXAMPLE / "example.toml"), "--out", str(run_dir), "--no-progress"]) == 0
    assert "reset_head" in capsys.readouterr().out  # the verdict table
    m = load(run_dir).metrics
    assert {"original", "retrain", "reset_head", "none"} <= set(m.arm)
    step = m[(m.arm == "reset_head") & (m["round"] == 6) & m.client.isna()].set_index("metric").value
    assert step["cost_client_steps"] > 0 and step["cost_rounds"] >= 2
    assert step["forget_loss_after"] > 0 and step["reset_parameters"] > 0
    assert (m[(m.arm == "reset_head") & (m.metric == "test_accuracy")]["round"].max()) == 8
