"""Finding a reward by name: built-ins, dataset names, import paths and third-party entry points.

Resolution order for a name:

1. a built-in name (``gsm8k``) or a dataset name it is registered for (``openai/gsm8k``; case-insensitive);
2. a reward registered at run time with :func:`register`;
3. an entry point in the group ``rewardflow.rewards`` (how third-party packages ship rewards:
   ``[project.entry-points."rewardflow.rewards"] my_reward = "my_pkg.rewards:my_reward"``);
4. an import path, ``package.module:function`` or ``package.module.function``.

Anything else raises :class:`~rewardflow.errors.UnknownRewardError` listing close matches. Built-ins are declared
as import paths and imported only when resolved, so listing them never imports sympy or torch.

A *factory* entry (``factory=True``) is called with the spec's ``params`` to build the reward (``format`` with a
custom pattern, a judge with its endpoint). For a plain function, ``params`` are bound as keyword arguments.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from rewardflow.errors import ConfigError, RewardflowError, UnknownRewardError

__all__ = ["ENTRY_POINT_GROUP", "Entry", "Registry", "default_registry", "register", "resolve"]

ENTRY_POINT_GROUP = "rewardflow.rewards"


@dataclass(frozen=True)
class Entry:
    """A named reward: where it lives (``module:attr``), what it is for, which datasets it serves."""

    name: str
    target: str | Callable[..., Any]
    description: str
    datasets: tuple[str, ...] = ()
    factory: bool = False
    extra: str | None = None  # optional dependency group it needs, shown by `rewardflow list`

    def load(self) -> Callable[..., Any]:
        if callable(self.target):
            return self.target
        return import_target(self.target)


def import_target(path: str) -> Callable[..., Any]:
    """Import ``package.module:attr`` or ``package.module.attr``; raise UnknownRewardError with the cause."""
    if ":" in path:
        module_name, _, attr = path.partition(":")
    elif "." in path:
        module_name, _, attr = path.rpartition(".")
    else:
        raise UnknownRewardError(path)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise UnknownRewardError(path, detail=f"no module named {exc.name!r}") from exc
        # the module exists but one of its own imports is missing: say which
        raise ConfigError(f"importing {module_name!r} for reward {path!r} failed: {exc}") from exc
    except RewardflowError:  # already one clear line (a missing extra: "pip install 'rewardflow[judge]'")
        raise
    except Exception as exc:  # the module itself raised at import: one line, the cause chained
        raise ConfigError(f"importing {module_name!r} for reward {path!r} failed: {type(exc).__name__}: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise UnknownRewardError(path, detail=f"module {module_name!r} has no attribute {attr!r}") from exc
    if not callable(obj):
        raise ConfigError(f"{path!r} is a {type(obj).__name__}, not a callable reward")
    return obj


class Registry:
    """Name -> reward table. Thread-safe; entry points are read once, on first miss."""

    def __init__(self, entries: Iterable[Entry] = ()) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, Entry] = {}
        self._datasets: dict[str, str] = {}
        self._entry_points: dict[str, Any] | None = None
        for entry in entries:
            self.add(entry)

    def add(self, entry: Entry, *, replace: bool = False) -> None:
        with self._lock:
            if entry.name in self._entries and not replace:
                raise ConfigError(f"a reward named {entry.name!r} is already registered")
            self._entries[entry.name] = entry
            for dataset in entry.datasets:
                self._datasets[dataset.lower()] = entry.name

    def entries(self) -> list[Entry]:
        with self._lock:
            return sorted(self._entries.values(), key=lambda e: e.name)

    def names(self) -> list[str]:
        return [e.name for e in self.entries()]

    def _plugins(self) -> dict[str, Any]:
        with self._lock:
            if self._entry_points is None:
                self._entry_points = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
            return self._entry_points

    def lookup(self, name: str) -> Entry | None:
        """The entry for a built-in/registered name or dataset name, else ``None``."""
        with self._lock:
            entry = self._entries.get(name)
            if entry is None:
                alias = self._datasets.get(name.lower())
                entry = self._entries.get(alias) if alias else None
        return entry

    def resolve(self, name: str, params: Mapping[str, Any] | None = None) -> Callable[..., Any]:
        """The callable for ``name`` (see the module docstring), built with ``params`` if given."""
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"a reward name must be a non-empty string, got {name!r}")
        name = name.strip()
        entry = self.lookup(name)
        if entry is not None:
            return _build(entry.load(), params, factory=entry.factory, label=name)
        plugin = self._plugins().get(name)
        if plugin is not None:
            return _build(plugin.load(), params, factory=False, label=name)
        if "." in name or ":" in name:
            try:
                return _build(import_target(name), params, factory=False, label=name)
            except UnknownRewardError as exc:
                raise UnknownRewardError(name, self._suggest(name), detail=_detail(exc)) from exc
        raise UnknownRewardError(name, self._suggest(name))

    def _suggest(self, name: str) -> list[str]:
        with self._lock:
            candidates = list(self._entries) + list(self._datasets)
        candidates += list(self._plugins())
        # a name that is both an entry and a dataset alias is offered once
        return list(dict.fromkeys(difflib.get_close_matches(name.lower(), candidates, n=6, cutoff=0.6)))[:3]


def _detail(exc: UnknownRewardError) -> str | None:
    text = str(exc)
    start = text.find("(")
    end = text.find(")")
    return text[start + 1 : end] if 0 <= start < end else None


def _build(
    target: Callable[..., Any], params: Mapping[str, Any] | None, *, factory: bool, label: str
) -> Callable[..., Any]:
    if factory:
        try:
            return target(**dict(params or {}))
        except TypeError as exc:
            raise ConfigError(f"reward {label!r}: bad params {dict(params or {})}: {exc}") from exc
    if params:
        _check_params(target, params, label)
        bound = functools.partial(target, **params)
        bound.__name__ = getattr(target, "__name__", label)  # type: ignore[attr-defined]
        return bound
    return target


def _check_params(target: Callable[..., Any], params: Mapping[str, Any], label: str) -> None:
    """Refuse ``params`` a plain reward function does not name (a ``**kwargs`` for row columns does not count).

    Without this an unknown param (a typo, a setting of another reward) is silently swallowed by ``**row``.
    """
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return
    named = [
        p.name
        for p in sig.parameters.values()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    unknown = [k for k in params if k not in named]
    if unknown:
        close = difflib.get_close_matches(unknown[0], named, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"reward {label!r}: unknown params {sorted(unknown)}; it accepts {', '.join(named) or 'none'}{hint}"
        )


def _builtin_entries() -> list[Entry]:
    from rewardflow import code, judge, models, rules

    return [*rules.BUILTINS, *judge.BUILTINS, *models.BUILTINS, *code.BUILTINS]


@functools.lru_cache(maxsize=1)
def default_registry() -> Registry:
    """The process-wide registry of built-ins, created on first use."""
    return Registry(_builtin_entries())


def resolve(name: str, params: Mapping[str, Any] | None = None) -> Callable[..., Any]:
    """Resolve ``name`` in the default registry (see :class:`Registry`)."""
    return default_registry().resolve(name, params)


def register(
    name: str,
    target: str | Callable[..., Any],
    *,
    description: str = "",
    datasets: Iterable[str] = (),
    factory: bool = False,
    replace: bool = False,
) -> None:
    """Register a reward under ``name`` in the default registry (and optionally for dataset names)."""
    default_registry().add(Entry(name, target, description, tuple(datasets), factory), replace=replace)
