"""One registry type for everything pluggable (fedforget.registry): discovery
without lists, duplicates and unknown names refused, parameter tables
validated, every built-in present, and the CLI listings built on it."""

from __future__ import annotations

import sys
import textwrap

import pytest

from fedforget import registry
from fedforget.cli import main
from fedforget.config import ConfigError
from fedforget.registry import Registry, UnknownNameError
from tests.conftest import tiny

BUILTINS = {
    "methods": {"none", "forsaken", "perturb", "fnn", "federaser", "pga"},
    "attacks": {"loss", "population", "lira"},
    "models": {"logreg", "mlp", "cnn"},
    "datasets": {"digits", "mnist5k", "synthetic"},
    "partitioners": {"iid", "dirichlet", "pathological", "shard"},
    "engines": {"ray", "actors", "inline"},
}


@pytest.mark.parametrize("kind", sorted(BUILTINS))
def test_every_builtin_is_registered(kind):
    reg = getattr(registry, kind)
    assert BUILTINS[kind] <= set(reg.names())
    for name in BUILTINS[kind]:
        assert name in reg and reg.get(name) is reg[name]
        assert reg.origin(name).startswith("fedforget.")


def test_helper_modules_register_nothing():
    # Discovery imports every module of fedforget.unlearning, the base and any
    # helper included: only method modules register methods.
    origins = {registry.methods.origin(n) for n in registry.methods.names()} - _plugin_origins(registry.methods)
    assert "fedforget.unlearning.base" in sys.modules and "fedforget.unlearning.base" not in origins
    assert all(o.startswith("fedforget.unlearning.") for o in origins)


def _plugin_origins(reg) -> set[str]:
    """Origins of installed plugins (the example package in CI): not built-ins."""
    return {reg.origin(n) for n in reg.names() if reg.origin(n).startswith("plugin ")}


def _fn(name: str):
    def f():
        return name

    f.__qualname__ = f"make_{name}"
    return f


def test_duplicates_are_refused_naming_both_origins():
    reg = Registry("thing")
    reg.register("a")(_fn("first"))
    with pytest.raises(ValueError, match="thing 'a' registered twice") as err:
        reg.register("a")(_fn("second"))
    assert "make_first" in str(err.value) and "make_second" in str(err.value)
    assert reg.get("a")() == "first"


def test_a_builtin_name_cannot_be_taken_again():
    from fedforget.unlearning import UnlearningMethod, register_method

    class Impostor(UnlearningMethod):
        name = "none"

        def unlearn(self, model, fed):
            raise AssertionError

    with pytest.raises(ValueError, match="fedforget.unlearning.none.NoUnlearning"):
        register_method(Impostor)
    assert registry.methods.get("none").__name__ == "NoUnlearning"


def test_models_have_a_duplicate_check_now():
    with pytest.raises(ValueError, match="model 'mlp' registered twice"):
        registry.models.register("mlp")(_fn("mlp2"))


def test_register_defaults_to_the_class_name_attribute_or_function_name():
    reg = Registry("thing")

    @reg.register()
    class Named:
        name = "by-attribute"

    @reg.register()
    def by_function():
        pass

    assert reg.names() == ["by-attribute", "by_function"]
    with pytest.raises(ValueError, match="has no name"):
        reg.register()(type("Nameless", (), {}))
    with pytest.raises(ValueError, match="reserved"):
        reg.register("a:b")(_fn("x"))


def test_unknown_names_give_one_error_listing_the_known_ones():
    with pytest.raises(ValueError) as err:
        registry.models.get("resnet")
    # The known names: the built-ins and any installed plugin (the example package in CI).
    known = ", ".join(registry.models.names())
    assert BUILTINS["models"] <= set(registry.models.names())
    assert str(err.value) == f"unknown model 'resnet'; expected one of {known}"
    assert isinstance(err.value, KeyError) and isinstance(err.value, UnknownNameError)
    from fedforget.models import build_model

    with pytest.raises(ValueError, match=f"unknown model 'resnet'; expected one of {known}"):
        build_model("resnet", (4,), 2, [], seed=0)


def test_params_validation_names_kind_name_and_bad_key():
    methods = registry.methods
    assert methods.params_model("pga") is methods.get("pga").Params
    assert methods.validate_params("pga", {}) == methods.get("pga").Params()
    with pytest.raises(ValueError, match=r"^pga\.no_such_key: unknown key$"):
        methods.validate_params("pga", {"no_such_key": 1})
    with pytest.raises(ValueError, match=r"^magic: unknown key \(not a registered method\)$"):
        methods.validate_params("magic", {})
    with pytest.raises(ValueError, match="must be a table"):
        methods.validate_params("pga", 3)
    with pytest.raises(ValueError, match=r"^lira\.shadows: Input should be greater than or equal to 1"):
        registry.attacks.validate_params("lira", {"shadows": 0})
    # Without Params, only an empty table is valid.
    assert registry.models.params_model("mlp") is None
    assert registry.models.validate_params("mlp", {}) is None
    with pytest.raises(ValueError, match=r"^mlp\.width: unknown key"):
        registry.models.validate_params("mlp", {"width": 3})


def test_module_attribute_paths_resolve_in_get():
    assert registry.models.get("fedforget.models:mlp") is registry.models.get("mlp")
    assert registry.models.origin("fedforget.models:mlp") == "fedforget.models"
    assert "fedforget.models:mlp" not in registry.models.names()
    missing = "'fedforget.models:resnet': module 'fedforget.models' has no attribute 'resnet'"
    with pytest.raises(ValueError, match=missing):
        registry.models.get("fedforget.models:resnet")
    with pytest.raises(ValueError, match="cannot import module 'no_such_module_xyz'"):
        registry.models.get("no_such_module_xyz:f")
    with pytest.raises(ValueError, match="module:attribute"):
        registry.models.get(":f")


def _write_package(root, name: str) -> None:
    """A package whose registry lives in a private module (not discovered) and
    whose registrations sit in public modules, one in a sub-package."""
    pkg = root / name
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "_reg.py").write_text(f"from fedforget.registry import Registry\nthings = Registry('thing', ({name!r},))\n")
    body = "from {pkg}._reg import things\n\n@things.register()\ndef {fn}():\n    return {fn!r}\n"
    (pkg / "alpha.py").write_text(body.format(pkg=name, fn="alpha"))
    (pkg / "sub" / "deep.py").write_text(body.format(pkg=name, fn="deep"))
    (pkg / "_hidden.py").write_text(body.format(pkg=name, fn="hidden"))
    # A module reading its own registry while discovery imports it.
    (pkg / "beta.py").write_text(textwrap.dedent(f"""\
        from {name}._reg import things

        SEEN_DURING_IMPORT = things.names()

        @things.register("beta")
        def b():
            return "beta"
        """))


def test_a_module_in_a_discovered_package_is_found_without_a_list(tmp_path, monkeypatch):
    name = "fedforget_tmp_plugins"
    _write_package(tmp_path, name)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        from fedforget_tmp_plugins._reg import things  # noqa: PLC0415 (a package made by this test)

        assert f"{name}.alpha" not in sys.modules
        assert things.names() == ["alpha", "beta", "deep"]  # _hidden is private: not imported
        assert things.get("deep")() == "deep" and things.origin("deep") == f"{name}.sub.deep"
        assert f"{name}._hidden" not in sys.modules
        # beta read the registry mid-discovery: what was there so far, no recursion.
        assert sys.modules[f"{name}.beta"].SEEN_DURING_IMPORT == ["alpha"]
    finally:
        for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[mod]


def test_a_failed_discovery_is_retried(tmp_path, monkeypatch):
    name = "fedforget_tmp_broken"
    pkg = tmp_path / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "bad.py").write_text("raise RuntimeError('broken module')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry("thing", (name,))
    try:
        with pytest.raises(RuntimeError, match="broken module"):
            reg.names()
        (pkg / "bad.py").write_text("")
        assert reg.names() == []
    finally:
        for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[mod]


def test_register_method_registers_its_client_ops():
    from fedforget.unlearning import CLIENT_OPS, UnlearningMethod, register_method

    assert "forsaken.gradient" in CLIENT_OPS  # built-in, through discovery

    def op(model, data, arrays, config):
        raise AssertionError

    class Probe(UnlearningMethod):
        name = "probe_method"
        client_ops = {"ping": op}

        def unlearn(self, model, fed):
            raise AssertionError

    register_method(Probe)
    try:
        assert registry.methods.get("probe_method") is Probe and CLIENT_OPS["probe_method.ping"] is op
    finally:
        registry.methods.unregister("probe_method")
        CLIENT_OPS.pop("probe_method.ping")
    assert "probe_method" not in registry.methods


def test_scenario_validation_asks_the_registries():
    # A newly registered model is a valid model.name at once: one source of truth.
    registry.models.register("tiny_probe_model")(_fn("tiny_probe_model"))
    try:
        assert tiny(model=dict(name="tiny_probe_model")).model.name == "tiny_probe_model"
    finally:
        registry.models.unregister("tiny_probe_model")
    with pytest.raises(ConfigError, match="unknown model 'tiny_probe_model'"):
        tiny(model=dict(name="tiny_probe_model"))
    with pytest.raises(ConfigError, match="unknown engine 'warp'; expected one of actors, inline, ray"):
        tiny(runtime=dict(engine="warp"))
    known = ", ".join(registry.datasets.names())  # built-ins and any installed plugin
    expected = rf"unknown dataset 'cifar'; expected one of {known} or hf:<hub id>"
    with pytest.raises(ConfigError, match=expected):
        tiny(data=dict(dataset="cifar"))
    assert tiny(data=dict(dataset="hf:someone/data")).data.dataset == "hf:someone/data"
    with pytest.raises(ConfigError, match="unknown partitioner 'kmeans'"):
        tiny(data=dict(partitioner="kmeans"))


def test_old_lira_keys_are_unknown_keys():
    with pytest.raises(ConfigError, match=r"shadows: unknown key \(not a registered attack\)"):
        tiny(oracle={"attack": "lira", "shadows": 3})


@pytest.mark.parametrize(
    "command, needles",
    [
        ("models", ["Models (model.name", "logreg: ", "mlp: ", "cnn: ", "from: fedforget.models"]),
        ("datasets", ["digits: ", "mnist5k: ", "synthetic: ", "from: fedforget.data.datasets",
                      "samples = 4000", "classes = 20", "hf:<hub id>"]),
        ("partitioners", ["iid: ", "dirichlet: Label skew", "pathological: ", "shard: ",
                          "from: fedforget.data.partition"]),
        ("engines", ["ray: Flower's Simulation Runtime", "actors: ", "inline: "]),
        ("attacks", ["loss: ", "population: ", "lira: ", "shadows = 4", "C = 1.0",
                     "from: fedforget.oracle.attacks.lira"]),
        ("methods", ["none: ", "pga: ", "from: fedforget.unlearning.pga", "needs:", "lira: ", "shadows = 4"]),
    ],
)
def test_cli_lists_every_registry(capsys, command, needles):
    assert main([command]) == 0
    out = capsys.readouterr().out
    for needle in needles:
        assert needle in out, (needle, out)
    kind = "methods" if command == "methods" else command
    for name in BUILTINS[kind]:
        assert f"\n{name}: " in out


def test_engine_option_choices_come_from_the_registry(capsys):
    with pytest.raises(SystemExit):
        main(["run", "configs/withdrawal.toml", "--engine", "warp"])
    err = capsys.readouterr().err
    assert "invalid choice: 'warp'" in err and all(e in err for e in ("'actors'", "'inline'", "'ray'"))
