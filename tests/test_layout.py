"""Design rule 6: only fedforget/flower imports flwr (the edge absorbs Flower's API changes)."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "fedforget"


def test_only_the_flower_package_imports_flwr():
    offenders = []
    for path in PKG.rglob("*.py"):
        if "flower" in path.relative_to(PKG).parts[:1]:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(PKG)}: {n}" for n in names if n == "flwr" or n.startswith("flwr.")]
    assert not offenders, offenders
