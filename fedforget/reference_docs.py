"""Reference pages generated from the code itself: every scenario key from the
pydantic schema (with each method's and attack's parameter table) and every
command's ``--help``. The documentation site's build hook (``docs/hooks.py``)
calls these, so the reference cannot drift from what the code accepts."""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

__all__ = ["scenario_reference", "cli_reference", "schema_rows"]


def _type_text(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if typing.get_origin(annotation) is None else None
    return text or str(annotation).replace("typing.", "")


def _default_text(field) -> str:
    if field.default is PydanticUndefined:
        return "(built)" if field.default_factory is not None else "required"
    return f"`{field.default!r}`" if field.default is not None else "`None`"


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _list_item(annotation: Any) -> type[BaseModel] | None:
    """The table type of a list of tables (``[[events]]``), else None."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is list and args and _is_section(args[0]):
        return args[0]
    return None


def schema_rows(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str, str]]:
    """``(key, type, default, description)`` for every leaf key of ``model``,
    nested sections flattened to dotted keys."""
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        item = _list_item(field.annotation)
        if _is_section(field.annotation):
            rows += schema_rows(field.annotation, key + ".")
        elif item is not None:
            rows.append((key, "list of tables", _default_text(field), (field.description or "").strip()))
            rows += schema_rows(item, key + "[].")
        else:
            rows.append((key, _type_text(field.annotation), _default_text(field), (field.description or "").strip()))
    return rows


def _table(rows: list[tuple[str, str, str, str]]) -> str:
    out = ["| key | type | default | description |", "|---|---|---|---|"]
    out += [f"| `{k}` | {t.replace('|', '&#124;')} | {d.replace('|', '&#124;')} | {desc.replace('|', '&#124;')} |"
            for k, t, d, desc in rows]
    return "\n".join(out)


def scenario_reference() -> str:
    """Markdown: the scenario keys, then each method's and attack's table."""
    from fedforget import registry
    from fedforget.config import Scenario

    parts = ["## Scenario keys", _table(schema_rows(Scenario))]
    # The package's own entries only: installed plugins document themselves.
    for name, cls in registry.methods.items():
        if registry.methods.is_builtin(name):
            parts += [f"## `[unlearning.{name}]`", cls.summary,
                      _table(schema_rows(cls.Params, f"unlearning.{name}."))]
    for name, cls in registry.attacks.items():
        if registry.attacks.is_builtin(name):
            parts += [f"## `[oracle.{name}]`", _table(schema_rows(cls.Params, f"oracle.{name}."))]
    return "\n\n".join(parts) + "\n"


def cli_reference() -> str:
    """Markdown: ``fedforget --help`` and every command's help."""
    import argparse

    from fedforget.cli import build_parser

    parser = build_parser()
    parts = ["## `fedforget`", "```\n" + parser.format_help() + "```"]
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subs.choices.items():
        parts += [f"## `fedforget {name}`", "```\n" + sub.format_help() + "```"]
    return "\n\n".join(parts) + "\n"
