"""The layers (docs/explanation/architecture.md): a module imports only its own
layer or below, Flower only inside ``fedforget/flower``, and no two parts of the
package import each other. Imports inside functions count as much as those at
the top of a file."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "fedforget"

#: Top to bottom; a part of the package is its top-level module or sub-package.
LAYERS = [
    {"cli", "__init__", "__main__", "reference_docs"},
    {"runner", "sweep"},
    {"flower"},
    {"protocol"},
    {"report"},
    {"analysis"},
    {"oracle", "unlearning", "evaluation"},
    {"training", "models", "data", "schedule", "results", "tracking", "progress"},
    {"config"},
    {"registry"},
]
LEVEL = {part: i for i, parts in enumerate(LAYERS) for part in parts}


def _part(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path) -> list[str]:
    """Every module a file imports, anywhere in it (relative imports resolved)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = path.relative_to(PKG.parent).with_suffix("").parts[: -node.level]
                names.append(".".join([*base, node.module] if node.module else base))
            elif node.module:
                names.append(node.module)
                if node.module == "fedforget":
                    names += [f"fedforget.{a.name}" for a in node.names]
    return names


def _edges() -> list[tuple[str, str, str]]:
    """(importing part, imported part, file) for every import between parts."""
    out = []
    for path in PKG.rglob("*.py"):
        src = _part(path)
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] == "fedforget" and len(parts) > 1 and parts[1] != src:
                out.append((src, parts[1], str(path.relative_to(PKG))))
    return out


def test_every_part_of_the_package_has_a_layer():
    parts = {_part(p) for p in PKG.rglob("*.py")}
    assert parts <= set(LEVEL), f"give these a layer in tests/test_layout.py: {sorted(parts - set(LEVEL))}"


def test_modules_import_only_their_layer_or_below():
    upward = [f"{f}: {src} -> {dst}" for src, dst, f in _edges() if LEVEL[dst] < LEVEL[src]]
    assert not upward, upward


def test_no_two_parts_import_each_other():
    graph: dict[str, set[str]] = {}
    for src, dst, _ in _edges():
        graph.setdefault(src, set()).add(dst)

    def reaches(a: str, b: str, seen: set[str]) -> bool:
        for n in graph.get(a, ()):
            if n == b or (n not in seen and reaches(n, b, seen | {n})):
                return True
        return False

    cycles = sorted({tuple(sorted((a, b))) for a in graph for b in graph[a] if reaches(b, a, {b})})
    assert not cycles, cycles


def test_only_the_flower_package_imports_flwr():
    offenders = [f"{p.relative_to(PKG)}: {n}" for p in PKG.rglob("*.py") if _part(p) != "flower"
                 for n in _imports(p) if n == "flwr" or n.startswith("flwr.")]
    assert not offenders, offenders


def test_the_protocol_never_imports_flower():
    assert not [e for e in _edges() if e[0] == "protocol" and e[1] == "flower"]
