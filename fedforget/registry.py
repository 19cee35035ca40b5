"""One registry type for everything pluggable: methods, attacks, models,
datasets, partitioners and engines.

A :class:`Registry` maps names to objects (classes or functions) registered
with its :meth:`Registry.register` decorator. Built-ins are found by
*discovery*: the first time a registry is read, every module of its packages is
imported, so a new module in ``fedforget/unlearning/`` (say) exists as soon as
the file does, without a hand-kept list of modules. Modules whose name starts
with ``_`` are not imported.

This is the bottom layer: it imports nothing from fedforget statically (the
packages are imported by name), so every other module may import it, and
``fedforget.config`` validates scenario names against it.

Plugins: a name of the form ``module:attribute`` is resolved by importing the
module (see :meth:`Registry.get`); installed packages' entry points (group
``fedforget.<kind>s``) are meant to be loaded by :meth:`Registry.load_plugins`,
today a no-op.
"""

from __future__ import annotations

import importlib
import pkgutil
import threading
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

__all__ = [
    "Registry",
    "UnknownNameError",
    "attacks",
    "datasets",
    "engines",
    "methods",
    "models",
    "partitioners",
]

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """A name no registry entry has; the message lists the known names.

    A ``KeyError`` for mapping-style lookups and a ``ValueError`` for
    validation code (pydantic turns it into a validation error).
    """

    def __str__(self) -> str:
        # KeyError's str() would quote the whole message.
        return str(self.args[0]) if self.args else ""


def _origin_of(obj: Any) -> str:
    """Where an object was defined: ``module.qualname``."""
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"


def _import(name: str) -> bool:
    """Import module ``name``; False when it is still being imported (a circular
    import reached it), so what it registers may not all be there yet."""
    module = importlib.import_module(name)
    return not getattr(getattr(module, "__spec__", None), "_initializing", False)


def _import_tree(name: str) -> bool:
    """Import module ``name`` and, for a package, every module below it
    (sub-packages recursively); names starting with ``_`` are skipped.

    Returns
    -------
    bool
        Whether every module was fully imported (see :func:`_import`).
    """
    complete = _import(name)
    path = getattr(importlib.import_module(name), "__path__", None)
    if path is None:  # a plain module: importing it registered what it holds
        return complete
    for info in pkgutil.iter_modules(path, prefix=f"{name}."):
        if info.name.rsplit(".", 1)[-1].startswith("_"):
            continue
        complete &= _import_tree(info.name) if info.ispkg else _import(info.name)
    return complete


class Registry(Generic[T]):
    """Named objects of one kind, discovered from packages on first read.

    Parameters
    ----------
    kind : str
        What is registered, singular (``"method"``): it names the kind in
        error messages and the entry-point group ``fedforget.<kind>s``.
    packages : tuple of str
        Dotted names of modules or packages whose modules register the
        built-ins; imported (recursively) the first time the registry is read.

    Notes
    -----
    Reads (:meth:`get`, :meth:`names`, ``in``, iteration...) discover first.
    A read during discovery in the same thread (a discovered module reading
    its own registry while it is imported) sees what is registered so far
    instead of starting discovery again. Another thread runs its own walk,
    which the import system serialises module by module, so it never sees a
    half-filled registry.
    """

    def __init__(self, kind: str, packages: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.packages = tuple(packages)
        self._entries: dict[str, T] = {}
        self._origins: dict[str, str] = {}
        self._loaded = False
        self._discovering: set[int] = set()  # thread ids walking the packages now

    # -- registering ---------------------------------------------------------
    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator registering a class or function under ``name``.

        Parameters
        ----------
        name : str, optional
            Defaults to the class's ``name`` attribute, else the function's
            ``__name__``.

        Raises
        ------
        ValueError
            When another object already has the name (naming both origins).
        """

        def deco(obj: T) -> T:
            self._add(self._default_name(obj) if name is None else name, obj)
            return obj

        return deco

    def _default_name(self, obj: Any) -> str:
        key = getattr(obj, "name", None) if isinstance(obj, type) else getattr(obj, "__name__", None)
        if not isinstance(key, str) or not key:
            raise ValueError(f"{self.kind} {_origin_of(obj)} has no name; pass register(name=...)")
        return key

    def _add(self, name: str, obj: T) -> None:
        if ":" in name:
            raise ValueError(f"{self.kind} name {name!r}: ':' is reserved for module:attribute paths")
        old = self._entries.get(name)
        # The same definition again (a module imported a second time after it
        # failed half-way, or reloaded) replaces itself; anything else clashes.
        if old is not None and _origin_of(old) != _origin_of(obj):
            raise ValueError(
                f"{self.kind} {name!r} registered twice: by {_origin_of(old)} and by {_origin_of(obj)}"
            )
        self._entries[name] = obj
        self._origins[name] = getattr(obj, "__module__", "?")

    def unregister(self, name: str) -> T:
        """Remove ``name`` (a temporary registration, e.g. in a test) and return it."""
        self.load()
        self._origins.pop(name, None)
        try:
            return self._entries.pop(name)
        except KeyError:
            raise self._unknown(name) from None

    # -- discovery -------------------------------------------------------------
    def load(self) -> None:
        """Import the built-in packages once (idempotent; see the class notes)."""
        me = threading.get_ident()
        if self._loaded or me in self._discovering:
            return
        self._discovering.add(me)
        try:
            complete = all([_import_tree(package) for package in self.packages])
            self.load_plugins()
            # Only a complete walk counts: after a failed import, or one that met
            # a module still being imported, the next read walks again.
            self._loaded = complete
        finally:
            self._discovering.discard(me)

    @property
    def entry_point_group(self) -> str:
        """The entry-point group installed plugins of this kind will use."""
        return f"fedforget.{self.kind}s"

    def load_plugins(self) -> None:
        """Hook for installed plugins (entry points of :attr:`entry_point_group`).

        Called after each discovery walk of the built-ins (again only when a
        walk was incomplete), so it must be idempotent. Today a no-op: a later
        change loads each entry point and registers it under its name.
        """

    # -- reading ---------------------------------------------------------------
    def get(self, name: str) -> T:
        """The object registered as ``name``, or the one a ``module:attribute`` path names.

        Raises
        ------
        UnknownNameError
            ``name`` is neither registered nor a path; the message lists the
            known names.
        ValueError
            A ``module:attribute`` path whose module cannot be imported or
            has no such attribute.
        """
        self.load()
        if name in self._entries:
            return self._entries[name]
        if isinstance(name, str) and ":" in name:
            return self._resolve(name)
        raise self._unknown(name)

    __getitem__ = get

    def _resolve(self, path: str) -> T:
        """Import ``module`` of ``module:attribute`` and take the attribute."""
        module_name, _, attr = path.partition(":")
        if not module_name or not attr:
            raise ValueError(f"{self.kind} {path!r}: a path must read module:attribute")
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise ValueError(f"{self.kind} {path!r}: cannot import module {module_name!r} ({err})") from None
        obj: Any = module
        for part in attr.split("."):
            if not hasattr(obj, part):
                raise ValueError(f"{self.kind} {path!r}: module {module_name!r} has no attribute {attr!r}")
            obj = getattr(obj, part)
        return obj

    def _unknown(self, name: object) -> UnknownNameError:
        return UnknownNameError(f"unknown {self.kind} {name!r}; expected one of {', '.join(self.names())}")

    def names(self) -> list[str]:
        """Registered names, sorted."""
        self.load()
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        """``(name, object)`` pairs, sorted by name."""
        return [(n, self._entries[n]) for n in self.names()]

    def values(self) -> list[T]:
        """Registered objects, sorted by name."""
        return [obj for _, obj in self.items()]

    def __contains__(self, name: object) -> bool:
        # Registered names only: a module:attribute path is resolved by get().
        self.load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        # No discovery here: a repr must not import anything.
        if self._loaded:
            return f"<{self.kind} registry: {', '.join(sorted(self._entries))}>"
        return f"<{self.kind} registry from {', '.join(self.packages)}>"

    def origin(self, name: str) -> str:
        """The module ``name`` came from (for listings)."""
        obj = self.get(name)
        if name in self._origins:
            return self._origins[name]
        return name.partition(":")[0] if ":" in name else getattr(obj, "__module__", "?")

    # -- parameters ------------------------------------------------------------
    def params_model(self, name: str) -> type[BaseModel] | None:
        """The registered object's ``Params`` pydantic model, None without one."""
        params = getattr(self.get(name), "Params", None)
        return params if isinstance(params, type) and issubclass(params, BaseModel) else None

    def validate_params(self, name: str, table: Any) -> BaseModel | None:
        """Validate a ``[<section>.<name>]`` parameter table by ``name``'s ``Params``.

        Parameters
        ----------
        name : str
            The table's key: a registered name (or a ``module:attribute`` path).
        table : Any
            The table as read from TOML; must be a dict.

        Returns
        -------
        BaseModel or None
            The validated parameters, defaults filled in; None for an object
            without ``Params`` (its table must then be empty).

        Raises
        ------
        ValueError
            One line naming the key and, where one is wrong, the parameter:
            ``"<name>: unknown key (not a registered <kind>)"``,
            ``"<name>: must be a table of parameters"`` or
            ``"<name>.<param>: <what is wrong>"``.
        """
        try:
            params = self.params_model(name)
        except UnknownNameError:
            raise ValueError(f"{name}: unknown key (not a registered {self.kind})") from None
        if not isinstance(table, dict):
            raise ValueError(f"{name}: must be a table of parameters")
        if params is None:
            if table:
                raise ValueError(f"{name}.{next(iter(table))}: unknown key ({self.kind} {name!r} has no parameters)")
            return None
        try:
            return params.model_validate(table)
        except ValidationError as err:
            e = err.errors()[0]
            loc = ".".join(str(p) for p in e["loc"])
            msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
            raise ValueError(f"{name}.{loc}: {msg}" if loc else f"{name}: {msg}") from None


#: Unlearning methods (classes deriving from ``UnlearningMethod``).
methods: Registry[Any] = Registry("method", ("fedforget.unlearning",))
#: Membership attacks of the oracle (classes deriving from ``Attack``).
attacks: Registry[Any] = Registry("attack", ("fedforget.oracle.attacks",))
#: Model builders ``(input_shape, num_classes, hidden) -> nn.Sequential``.
models: Registry[Any] = Registry("model", ("fedforget.models",))
#: Embedded dataset loaders ``(seed, **options) -> RawDataset`` (``hf:<id>`` is not registered).
datasets: Registry[Any] = Registry("dataset", ("fedforget.data.datasets",))
#: flwr-datasets partitioner builders ``(num_partitions, seed, **scenario keys)``.
partitioners: Registry[Any] = Registry("partitioner", ("fedforget.data.partition",))
#: Engine runners: start a ServerApp and a ClientApp on a runtime.
engines: Registry[Any] = Registry("engine", ("fedforget.flower.engines",))
