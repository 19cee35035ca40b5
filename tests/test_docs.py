"""The documentation's code runs: the method example of the how-to page
registers and unlearns in a real (inline) run."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

import fedforget
from tests.conftest import tiny

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_own_method_example_runs(tmp_path, monkeypatch):
    from fedforget import registry

    page = (DOCS / "howto" / "own-method.md").read_text()
    code = re.search(r"```python\n(.*?)```", page, re.S).group(1)
    # A real module, so that checkpoints can pickle the method's class by name.
    module = types.ModuleType("docs_own_method_example")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(code, "own-method.md", "exec"), module.__dict__)
    try:
        sc = tiny(events=[{"round": 2, "client": 1}],
                  unlearning={"methods": ["dampen", "none"], "recovery_rounds": 0, "dampen": {"factor": 0.8}})
        m = fedforget.run(sc, out=tmp_path / "run").metrics
        assert {"dampen", "none"} <= set(m.arm)
        steps = m[(m.arm == "dampen") & (m.metric == "cost_client_steps")].value
        assert len(steps) == 1 and steps.iloc[0] > 0  # its one round over the remaining clients is its cost
    finally:
        if "dampen" in registry.methods:
            registry.methods.unregister("dampen")


@pytest.mark.parametrize("page", sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")))
def test_pages_link_only_inside_the_repository(page):
    text = (DOCS / page).read_text()
    assert "../shared" not in text and "METHODS.md" not in text


def test_generated_reference_covers_every_key_with_a_description():
    from fedforget import registry
    from fedforget.config import Scenario
    from fedforget.reference_docs import cli_reference, scenario_reference, schema_rows

    methods, attacks = registry.methods, registry.attacks
    rows = schema_rows(Scenario)
    assert {"train.lr", "events[].round", "oracle.min_nonmembers", "data.synthetic.classes"} <= {r[0] for r in rows}
    tables = [*(c.Params for c in methods.values()), *(c.Params for c in attacks.values())]
    undocumented = [r[0] for r in rows + [r for t in tables for r in schema_rows(t)] if not r[3]]
    assert not undocumented, undocumented
    page = scenario_reference()
    assert all(f"`{r[0]}`" in page for r in rows)
    own_methods = [m for m in methods if methods.is_builtin(m)]
    own_attacks = [a for a in attacks if attacks.is_builtin(a)]
    assert {"forsaken", "pga", "federaser"} <= set(own_methods) and "lira" in own_attacks
    assert all(f"[unlearning.{m}]" in page for m in own_methods)
    assert all(f"[oracle.{a}]" in page for a in own_attacks)
    # installed plugins document themselves, not in fedforget's reference
    assert not any(f"[unlearning.{m}]" in page for m in methods if m not in own_methods)
    cli = cli_reference()
    assert all(f"`fedforget {c}`" in cli for c in ("run", "resume", "sweep", "export", "report", "methods", "attacks",
                                                   "models", "datasets", "partitioners", "engines"))
    assert "--text" in cli
