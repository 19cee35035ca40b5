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

Plugins come two ways, both checked to be the registry's kind (a method must be
an ``UnlearningMethod`` subclass, a model a callable ``(input_shape,
num_classes, hidden)``...):

- *installed*: a distribution's entry points in group ``fedforget.<kind>s``
  (``name = "pkg.module:attr"``) are loaded right after the built-ins, the first
  time a registry is read (:meth:`Registry.load_plugins`), and registered under
  their names; listings show ``plugin <dist> <version> (<value>)`` as origin. A
  plugin that cannot be loaded, is the wrong kind or takes a name already taken
  is kept as a :class:`PluginError`, raised when its name is read (a broken
  plugin nobody uses does not stop anything else);
- *paths*: a name of the form ``module:attribute`` (scenario values such as
  ``model.name = "mylab.nets:wide_mlp"``) is resolved by importing the module
  (:meth:`Registry.get`); a missing module or attribute, an import that fails or
  an object of the wrong kind is a :class:`PluginError`.

A method plugin's client operations (``client_ops``) are registered in
``fedforget.unlearning.CLIENT_OPS`` as ``<its name>.<op>`` when it is loaded or
resolved, so a process that validates the scenario (the ClientApp's does) can
run them.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import pkgutil
import threading
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

__all__ = [
    "PluginError",
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

#: A kind check: None when ``obj`` may be registered, else what is wrong with it
#: ("is a function, not a subclass of ...").
Check = Callable[[Any], "str | None"]


class UnknownNameError(KeyError, ValueError):
    """A name no registry entry has; the message lists the known names.

    A ``KeyError`` for mapping-style lookups and a ``ValueError`` for
    validation code (pydantic turns it into a validation error).
    """

    def __str__(self) -> str:
        # KeyError's str() would quote the whole message.
        return str(self.args[0]) if self.args else ""


class PluginError(ValueError):
    """A plugin (an installed entry point or a ``module:attribute`` path) that
    cannot be loaded, is not of the registry's kind, or clashes with another
    name. The message names the plugin, where it comes from and, for a failed
    import, the exception's type and message. A ``ValueError``: scenario
    validation turns it into one ``ConfigError`` (CLI exit status 2)."""


def _origin_of(obj: Any) -> str:
    """Where an object was defined: ``module.qualname``."""
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"


def _what(obj: Any) -> str:
    """A short description of an object for kind errors ("the class X", "a module")."""
    if inspect.ismodule(obj):
        return f"the module {obj.__name__}"
    if isinstance(obj, type):
        return f"the class {_origin_of(obj)}"
    if inspect.isroutine(obj):
        return f"the function {_origin_of(obj)}"
    return f"an instance of {type(obj).__qualname__}"


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


def _entry_points(group: str) -> list[importlib.metadata.EntryPoint]:
    """Installed entry points of ``group`` (one per distribution and name)."""
    return list(importlib.metadata.entry_points(group=group))


def _distribution(ep: importlib.metadata.EntryPoint) -> tuple[str, str]:
    """``(name, version)`` of the distribution declaring ``ep``."""
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "?", "?"
    return dist.metadata["Name"] or getattr(dist, "name", "?"), dist.version or "?"


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
    check : callable, optional
        The kind check of plugins (entry points and ``module:attribute``
        paths): returns None for an acceptable object, else what is wrong
        with it. It may also admit the object (a method's client operations).
        Built-ins registered by decorator are not checked.
    plugins : bool
        Whether installed entry points are loaded (False for engines, which the
        runner starts by name).

    Notes
    -----
    Reads (:meth:`get`, :meth:`names`, ``in``, iteration...) discover first.
    A read during discovery in the same thread (a discovered module reading
    its own registry while it is imported) sees what is registered so far
    instead of starting discovery again. Another thread runs its own walk,
    which the import system serialises module by module, so it never sees a
    half-filled registry.
    """

    def __init__(self, kind: str, packages: tuple[str, ...] = (), check: Check | None = None,
                 plugins: bool = True) -> None:
        self.kind = kind
        self.packages = tuple(packages)
        self.check = check
        self.plugins = plugins
        self._entries: dict[str, T] = {}
        self._origins: dict[str, str] = {}
        self._broken: dict[str, PluginError] = {}  # plugin name -> why it cannot be used
        self._plugins_seen: set[tuple[str, str]] = set()  # (distribution, entry point name) loaded or failed
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
                f"{self.kind} {name!r} registered twice: by {self._described(name)} and by {_origin_of(obj)}"
            )
        self._entries[name] = obj
        self._origins.setdefault(name, getattr(obj, "__module__", "?"))

    def _described(self, name: str) -> str:
        """The registered ``name``'s definition, for clash messages: its
        ``module.qualname``, and for a plugin where it came from."""
        origin = self._origins.get(name, "")
        where = _origin_of(self._entries[name])
        return f"{origin} ({where})" if origin.startswith("plugin ") else where

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
        """Import the built-in packages once, then load installed plugins
        (idempotent; see the class notes)."""
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
        """The entry-point group installed plugins of this kind use."""
        return f"fedforget.{self.kind}s"

    def load_plugins(self) -> None:
        """Load the installed entry points of :attr:`entry_point_group` not
        loaded yet, registering each object under its entry point's name.

        Called after each discovery walk of the built-ins (again only when a
        walk was incomplete); an entry point is tried once per process. A
        plugin that fails (its import raises, its object is the wrong kind,
        its name is taken) is recorded as a :class:`PluginError` that reading
        its name raises (:meth:`get`) and :meth:`plugin_errors` lists; the
        other entries stay usable.
        """
        if not self.plugins:
            return
        for ep in _entry_points(self.entry_point_group):
            dist, version = _distribution(ep)
            if (dist, ep.name) in self._plugins_seen:
                continue
            self._plugins_seen.add((dist, ep.name))
            origin = f"plugin {dist} {version} ({ep.value})"
            where = (f"{self.kind} plugin {ep.name!r} (entry point '{ep.name} = {ep.value}' in group "
                     f"{self.entry_point_group} of {dist} {version})")
            try:
                self._load_entry_point(ep, origin, where)
            except PluginError as err:
                self._broken[ep.name] = err

    def _load_entry_point(self, ep: importlib.metadata.EntryPoint, origin: str, where: str) -> None:
        name = ep.name
        if ":" in name or not name:
            raise PluginError(f"{where}: the name must not be empty nor contain ':'")
        if name in self._broken:  # a second plugin of a clashing name: both are named already
            raise PluginError(f"{self._broken[name]}; and {where} takes the same name")
        try:
            obj = ep.load()
        except Exception as err:  # whatever the plugin's import raises is the plugin's error
            raise PluginError(f"{where} cannot be loaded: {type(err).__name__}: {err}") from None
        own = getattr(obj, "name", None) if isinstance(obj, type) else None
        if isinstance(own, str) and own and own != name:
            raise PluginError(f"{where}: the entry point's name differs from the class's name {own!r}; "
                              "use the same name in both places")
        problem = self.check(obj) if self.check is not None else None
        if problem:
            raise PluginError(f"{where}: {ep.value} {problem}")
        old = self._entries.get(name)
        if old is not None and old is not obj:
            raise PluginError(f"{self.kind} {name!r} is defined twice: by {self._described(name)} and by {origin}")
        # Registered by its own decorator under this name already (old is obj): fine.
        self._entries[name] = obj
        self._origins[name] = origin

    def plugin_errors(self) -> list[PluginError]:
        """The installed plugins of this kind that cannot be used, with why."""
        self.load()
        return [self._broken[name] for name in sorted(self._broken)]

    # -- reading ---------------------------------------------------------------
    def get(self, name: str) -> T:
        """The object registered as ``name``, or the one a ``module:attribute`` path names.

        Raises
        ------
        UnknownNameError
            ``name`` is neither registered nor a path; the message lists the
            known names.
        PluginError
            ``name`` is an installed plugin that cannot be used, or a
            ``module:attribute`` path whose module cannot be imported, that
            lacks the attribute, or names an object of the wrong kind
            (a ``ValueError``).
        """
        self.load()
        if name in self._broken:
            raise self._broken[name]
        if name in self._entries:
            return self._entries[name]
        if isinstance(name, str) and ":" in name:
            return self._resolve(name)
        raise self._unknown(name)

    __getitem__ = get

    def _resolve(self, path: str) -> T:
        """Import ``module`` of ``module:attribute``, take the attribute and check its kind."""
        module_name, _, attr = path.partition(":")
        if not module_name or not attr:
            raise PluginError(f"{self.kind} {path!r}: a path must read module:attribute")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            raise PluginError(
                f"{self.kind} {path!r}: cannot import module {module_name!r} (ModuleNotFoundError: {err})"
            ) from None
        except Exception as err:  # the module's own code raised while it was imported
            raise PluginError(
                f"{self.kind} {path!r}: cannot import module {module_name!r}: its import raised "
                f"{type(err).__name__}: {err}"
            ) from None
        obj: Any = module
        for part in attr.split("."):
            if not hasattr(obj, part):
                raise PluginError(
                    f"{self.kind} {path!r}: module {module_name!r} has no attribute {attr!r} (AttributeError)"
                )
            obj = getattr(obj, part)
        problem = self.check(obj) if self.check is not None else None
        if problem:
            raise PluginError(f"{self.kind} {path!r}: {attr} {problem}")
        return obj

    def _unknown(self, name: object) -> UnknownNameError:
        return UnknownNameError(f"unknown {self.kind} {name!r}; expected one of {', '.join(self.names())}")

    def names(self) -> list[str]:
        """Registered names, sorted (names a broken plugin makes unusable are not among them)."""
        self.load()
        return sorted(n for n in self._entries if n not in self._broken)

    def items(self) -> list[tuple[str, T]]:
        """``(name, object)`` pairs, sorted by name."""
        return [(n, self._entries[n]) for n in self.names()]

    def values(self) -> list[T]:
        """Registered objects, sorted by name."""
        return [obj for _, obj in self.items()]

    def __contains__(self, name: object) -> bool:
        # Registered names only: a module:attribute path is resolved by get().
        self.load()
        return name in self._entries and name not in self._broken

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
        """Where ``name`` came from (for listings): the module of a built-in,
        ``plugin <dist> <version> (<entry point value>)`` for an installed plugin."""
        obj = self.get(name)
        if name in self._origins:
            return self._origins[name]
        return name.partition(":")[0] if ":" in name else getattr(obj, "__module__", "?")

    def is_builtin(self, name: str) -> bool:
        """Whether ``name`` is registered by a module of this registry's packages
        (not a plugin, not a path, not a registration from elsewhere)."""
        if name in self._broken or name not in self:
            return False
        if self._origins.get(name, "").startswith("plugin "):
            return False
        module = getattr(self._entries[name], "__module__", "") or ""
        return any(module == p or module.startswith(p + ".") for p in self.packages)

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
            ``"<name>.<param>: <what is wrong>"``; a :class:`PluginError` for a
            plugin that cannot be used.
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


# -- kind checks of plugins -------------------------------------------------------
def _callable_as(*args: Any, what: str, **kwargs: Any) -> Check:
    """A check that ``obj`` is callable as ``obj(*args, **kwargs)`` (by its signature)."""

    def check(obj: Any) -> str | None:
        if not callable(obj) or inspect.ismodule(obj):
            return f"is {_what(obj)}, not callable as {what}"
        try:
            signature = inspect.signature(obj)
        except (TypeError, ValueError):  # no signature to read (a C function): accept it
            return None
        try:
            signature.bind(*args, **kwargs)
        except TypeError as err:
            return f"cannot be called as {what}: its signature is {signature} ({err})"
        return None

    return check


def _subclass_of(module: str, base: str) -> Check:
    """A check that ``obj`` is a concrete, named subclass of ``module.base``."""

    def check(obj: Any) -> str | None:
        cls = getattr(importlib.import_module(module), base)
        if not (isinstance(obj, type) and issubclass(obj, cls)):
            return f"is {_what(obj)}, not a subclass of {module}.{base}"
        if inspect.isabstract(obj):
            return f"is abstract: it does not implement {', '.join(sorted(obj.__abstractmethods__))}"
        name = getattr(obj, "name", None)
        if not isinstance(name, str) or not name:
            return "has no name (set its class attribute `name`)"
        params = getattr(obj, "Params", None)
        if not (isinstance(params, type) and issubclass(params, BaseModel)):
            return "has a Params that is not a pydantic model"
        return None

    return check


_is_method = _subclass_of("fedforget.unlearning.base", "UnlearningMethod")


def _check_method(obj: Any) -> str | None:
    """A method plugin: an ``UnlearningMethod`` subclass; admitted by registering
    its client operations as ``<name>.<op>`` (unless another function has that key)."""
    problem = _is_method(obj)
    if problem:
        return problem
    ops = importlib.import_module("fedforget.unlearning.base").CLIENT_OPS
    keys = {f"{obj.name}.{op}": fn for op, fn in dict(obj.client_ops).items()}
    for key, fn in keys.items():
        if not callable(fn):
            return f"has client op {key!r} that is {_what(fn)}, not a function"
        if ops.get(key, fn) is not fn:
            return (f"has client op {key!r}, which {_origin_of(ops[key])} already is "
                    f"(method name {obj.name!r} is taken: give it a name of its own)")
    ops.update(keys)
    return None


#: Unlearning methods (classes deriving from ``UnlearningMethod``).
methods: Registry[Any] = Registry("method", ("fedforget.unlearning",), _check_method)
#: Membership attacks of the oracle (classes deriving from ``Attack``).
attacks: Registry[Any] = Registry("attack", ("fedforget.oracle.attacks",),
                                  _subclass_of("fedforget.oracle.attacks.base", "Attack"))
#: Model builders ``(input_shape, num_classes, hidden) -> nn.Sequential``.
models: Registry[Any] = Registry("model", ("fedforget.models",),
                                 _callable_as((1,), 2, [8], what="(input_shape, num_classes, hidden)"))
#: Embedded dataset loaders ``(seed, **options) -> RawDataset`` (``hf:<id>`` is not registered).
datasets: Registry[Any] = Registry("dataset", ("fedforget.data.datasets",), _callable_as(seed=0, what="(seed=...)"))
#: flwr-datasets partitioner builders ``(num_partitions, seed, **scenario keys)``.
partitioners: Registry[Any] = Registry(
    "partitioner", ("fedforget.data.partition",),
    _callable_as(2, 0, alpha=0.5, classes_per_client=2, shards_per_client=2,
                 what="(num_partitions, seed, alpha=..., classes_per_client=..., shards_per_client=...)"),
)
#: Engine runners: start a ServerApp and a ClientApp on a runtime (no plugins:
#: the runner starts engines by name).
engines: Registry[Any] = Registry("engine", ("fedforget.flower.engines",), plugins=False)
