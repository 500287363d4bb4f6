"""What the framework adapters share: building an engine from what a user passes, and engines shared per process.

Frameworks call rewards through plain functions loaded from a file (verl, OpenRLHF) or create a wrapper per
workflow instance (AReaL), so an adapter cannot own its engine the way a user's ``with Engine(...)`` does.
:class:`SharedEngines` keeps one engine per configuration key, created lazily under a lock on first use,
and closes them all at interpreter exit (worker processes are also killed by the kernel if the process dies,
see :mod:`rewardflow.executors.process`). An engine created before a ``fork`` is never used by the child: the
child gets its own (its parent's worker processes are not its children).

Not covered: sharing engines across processes (each Ray actor or rank has its own workers, which is what
those frameworks expect).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any

from rewardflow.engine import Engine
from rewardflow.errors import ConfigError
from rewardflow.types import RewardResult

__all__ = [
    "SPEC_ENV",
    "SharedEngines",
    "build_engine",
    "engine_key",
    "log_failures",
    "refuse_batch_only_rewards",
    "shared_engines",
    "spec_from_env",
]

logger = logging.getLogger(__name__)

#: Environment variable naming the spec file for adapters that frameworks load as plain functions.
SPEC_ENV = "REWARDFLOW_SPEC"

_SPEC_SUFFIXES = (".yaml", ".yml")
_SPEC_FIELDS = frozenset({"workers", "timeout", "concurrency", "retries", "worker_threads"})


def is_spec_path(target: Any) -> bool:
    """A ``str``/``PathLike`` ending in ``.yaml``/``.yml`` is a spec file; any other string is a reward name."""
    return isinstance(target, (str, os.PathLike)) and str(target).endswith(_SPEC_SUFFIXES)


def build_engine(target: Any, **options: Any) -> Engine:
    """An engine for whatever an adapter was given: a spec (object or YAML path), or anything ``Engine`` takes.

    For a spec, ``workers``/``timeout``/``concurrency``/``retries``/``worker_threads`` override the spec's
    engine-level values (per-reward settings in the spec still win); other options go to :class:`Engine` unchanged.
    """
    from rewardflow.client import remote_engine_for
    from rewardflow.spec import Spec, load_spec, parse_spec

    remote = remote_engine_for(target)  # $REWARDFLOW_URL or the spec's `url:`: score on the service
    if remote is not None:
        return remote  # type: ignore[return-value]
    if isinstance(target, Spec) or is_spec_path(target):
        spec = target if isinstance(target, Spec) else load_spec(target)
        overrides = {k: v for k, v in options.items() if k in _SPEC_FIELDS}
        rest = {k: v for k, v in options.items() if k not in _SPEC_FIELDS}
        if "kind" in rest:
            raise ConfigError("`kind` cannot be set for a spec; give `kind:` to the rewards in the spec file")
        if overrides:
            spec = parse_spec({**spec.model_dump(), **overrides}, "spec")
        return Engine(spec, **rest)
    return Engine(target, **options)


def refuse_batch_only_rewards(engine: Engine, caller: str, instead: str) -> None:
    """Raise :class:`ConfigError` if ``engine`` has a reward that must score whole batches (a reward model).

    For adapters the framework calls once per rollout: a reward model there would run one forward pass and one
    onload/offload cycle per completion, the pattern rewardflow exists to replace.
    """
    names = [c.name for c in engine.components if getattr(c.reward.fn, "per_batch_only", False)]
    if names:
        raise ConfigError(
            f"{caller} scores one rollout at a time, but {', '.join(map(repr, names))} is a model reward that "
            f"scores whole batches; {instead}"
        )


def engine_key(target: Any, options: dict[str, Any]) -> tuple[Hashable, ...]:
    """A key identifying one engine configuration: equal keys share an engine.

    Spec paths are resolved (two spellings of one file share); spec objects are keyed by their content; other
    targets by value when hashable (functions hash by identity), else by identity.
    """
    from rewardflow.spec import Spec

    if isinstance(target, Spec):
        ident: Hashable = ("spec", target.model_dump_json())
    elif is_spec_path(target):
        ident = ("spec-file", str(Path(target).resolve()))
    else:
        try:
            hash(target)
            ident = ("reward", target)
        except TypeError:
            ident = ("reward-id", id(target))
    return (ident, tuple(sorted((k, _hashable(v)) for k, v in options.items())))


def _hashable(value: Any) -> Hashable:
    try:
        hash(value)
        return value
    except TypeError:
        return repr(value)


class SharedEngines:
    """Engines keyed by configuration, one set per process; see the module docstring."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._engines: dict[Hashable, tuple[int, Engine, Any]] = {}
        self._atexit_registered = False

    def get(self, key: Hashable, factory: Callable[[], Engine], keep: Any = None) -> Engine:
        """The engine for ``key``, built with ``factory()`` the first time (in this process).

        ``keep`` is held as long as the engine, so an identity-keyed target cannot be collected and its id reused.
        """
        pid = os.getpid()
        with self._lock:
            entry = self._engines.get(key)
            if entry is not None and entry[0] == pid and not _is_closed(entry[1]):
                return entry[1]
            engine = factory()  # raises ConfigError on a bad reward or spec, before anything is cached
            self._engines[key] = (pid, engine, keep)
            if not self._atexit_registered:
                atexit.register(self.close_all)
                self._atexit_registered = True
            return engine

    def close_all(self, adapter: str | None = None) -> None:
        """Close the engines this process created (kills their workers); idempotent, called at exit.

        ``adapter`` limits it to the keys of one adapter (keys are tuples starting with the adapter's name).
        """
        pid = os.getpid()
        with self._lock:
            keys = [k for k in self._engines if adapter is None or (isinstance(k, tuple) and k[:1] == (adapter,))]
            entries = [self._engines.pop(k) for k in keys]
        for owner, engine, _ in entries:
            if owner == pid:  # an engine inherited through fork belongs to the parent
                try:
                    engine.close()
                except Exception:  # closing must not raise at exit
                    logger.debug("closing a shared engine failed", exc_info=True)

    def __len__(self) -> int:
        with self._lock:
            return sum(1 for owner, _, _ in self._engines.values() if owner == os.getpid())


def _is_closed(engine: Engine) -> bool:
    # A user may close a shared engine by hand; the next caller then gets a fresh one instead of an error.
    return engine.closed


#: The process-wide table used by the adapters. Creating it does no work; engines appear on first use.
shared_engines = SharedEngines()


def spec_from_env(adapter: str) -> str:
    """The spec path from ``$REWARDFLOW_SPEC``, or a ConfigError telling the user how to set it."""
    path = os.environ.get(SPEC_ENV, "").strip()
    if not path:
        raise ConfigError(
            f"{adapter}: set the environment variable {SPEC_ENV} to the path of a rewardflow spec file "
            "(or build the function yourself with the adapter's make_* factory)"
        )
    return path


def log_failures(results: Sequence[RewardResult], where: str, log: logging.Logger, limit: int = 3) -> None:
    """Log how many results failed and the first few reasons, so a failure is seen even where it cannot be raised."""
    failed = [(i, r) for i, r in enumerate(results) if not r.ok]
    if not failed:
        return
    shown = "; ".join(f"#{i} {r.status.value}: {r.reason}" for i, r in failed[:limit])
    more = f" (+{len(failed) - limit} more)" if len(failed) > limit else ""
    log.warning("%s: %d of %d samples failed: %s%s", where, len(failed), len(results), shown, more)
