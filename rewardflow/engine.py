"""The engine: samples in, one result per sample out, whatever the rewards do.

``Engine`` takes one reward or several weighted ones (composition), runs each the way its kind demands and
combines the per-component values:

* ``process`` rewards go to an executor (:mod:`rewardflow.executors.base`), created lazily on first use: the
  local :class:`~rewardflow.executors.process.ProcessPool` by default, or Ray actors across a cluster
  (``executor="ray"``, :class:`~rewardflow.executors.ray_pool.RayPool`); both give killable timeouts and
  dead-worker recovery;
* ``inline`` rewards are called in the caller; when every component is inline, :meth:`Engine.score` never touches
  asyncio, which keeps the overhead to a few microseconds per sample;
* ``async`` rewards are awaited on the event loop under a per-reward concurrency limit and timeout;
* ``group`` rewards get one call per group of samples (``Sample.group``, else samples sharing a prompt);
  ``batch`` rewards get the whole batch in one call. Sync batch/group rewards run in a thread so the event loop
  stays free; their timeout cannot kill the thread, so it is reported but the call is left to finish.

The core is async (:meth:`Engine.ascore`, :meth:`Engine.ascore_one`); :meth:`Engine.score` is the thin sync
wrapper, running the core on an event loop the engine owns (one loop for the engine's lifetime, so clients
created by async rewards, such as a judge's HTTP client, are reused across calls).

Combination: the value is ``sum(weight * component)``; if any component is not ok, the sample's status is that
component's status, its value is ``None``, and ``components`` still shows every component that did score. A
*gate* component (``gate=True``) that scores <= 0 sets the value to 0.0, with a reason, e.g. a format check in
front of an accuracy reward.

Checks made at construction, before any worker starts: weights and timeouts must be finite; when ``columns`` is
given, every parameter a reward requires must name a sample field or one of those columns
(:meth:`Engine.check_columns`). A sync reward that worker processes could not import (a lambda, a closure, a
function defined in a notebook cell or in ``python - <<EOF``) runs inline instead, with a warning, rather than
failing on every row; an inline reward with a timeout gets one warning that the timeout cannot be enforced there.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import os
import pickle
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from rewardflow.errors import ConfigError, EngineClosedError, InputError
from rewardflow.reward import Kind, Reward, check_timeout, error_results, invoke, invoke_async, invoke_many
from rewardflow.types import RewardResult, Sample, Status

__all__ = ["Component", "Engine"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
DEFAULT_TIMEOUT = 10.0
DEFAULT_CONCURRENCY = 64


@dataclass(frozen=True)
class Component:
    """One named, weighted reward inside an engine."""

    name: str
    reward: Reward
    weight: float = 1.0
    gate: bool = False

    def __post_init__(self) -> None:
        w = self.weight
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
            raise ConfigError(f"component {self.name!r}: weight must be a finite number, got {w!r}")


def _not_importable(fn: Any, executor: str = "process") -> str | None:
    """Why worker processes could not receive ``fn`` by reference, or ``None`` if they can.

    Ray actors receive rewards through cloudpickle, which sends what plain pickle cannot (lambdas, closures,
    functions of ``__main__``) by value.
    """
    if executor == "ray":
        from rewardflow.executors.ray_pool import import_ray

        try:
            import_ray().cloudpickle.dumps(fn)
        except Exception as exc:
            return f"it cannot be pickled for Ray ({type(exc).__name__}: {exc})"
        return None
    target = fn.func if isinstance(fn, functools.partial) else fn
    if getattr(target, "__module__", None) == "__main__":
        main_file = getattr(sys.modules.get("__main__"), "__file__", None)
        if not main_file or not os.path.isfile(main_file):
            return "it is defined in __main__ without a file (stdin, -c, a notebook cell, the REPL)"
    try:
        pickle.dumps(fn)
    except Exception as exc:  # PicklingError, AttributeError ("Can't pickle local object"), TypeError
        return f"it cannot be pickled ({type(exc).__name__}: {exc})"
    return None


class _Interrupted(Exception):
    """A ``KeyboardInterrupt``/``SystemExit`` raised inside a reward's thread, carried as an ordinary exception.

    Raised bare inside the engine's event loop, it would kill the loop's thread and leave the caller waiting
    forever; carried, it reaches the caller, who gets the original interrupt back.
    """

    def __init__(self, interrupt: BaseException) -> None:
        super().__init__(f"interrupted: {interrupt!r}")
        self.interrupt = interrupt


def _in_thread(fn: Any, kwargs: dict[str, Any]) -> Any:
    try:
        return fn(**kwargs)
    except (KeyboardInterrupt, SystemExit) as exc:
        raise _Interrupted(exc) from exc


class _LoopThread:
    """An event loop on a daemon thread, owned by one engine, for the sync API."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def started(self) -> bool:
        return self._loop is not None

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._loop.run_forever, name="rewardflow-loop", daemon=True)
                self._thread.start()
            loop = self._loop
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("Engine.score() called from inside a reward; use `await engine.ascore(...)`")
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result()
        except _Interrupted as exc:  # a reward's thread was interrupted: the caller is, too
            raise exc.interrupt from None
        except BaseException:
            future.cancel()
            raise

    def close(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return

        async def _drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await loop.shutdown_asyncgens()

        try:
            asyncio.run_coroutine_threadsafe(_drain(), loop).result(timeout=5)
        except Exception:  # closing must not raise; leftovers die with the daemon thread
            logger.debug("event loop drain failed", exc_info=True)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        if not thread.is_alive():
            loop.close()


RewardLike = Any  # callable, Reward, registry name / import path, or (any of those, weight)


class Engine:
    """Score samples with one or more rewards; see the module docstring.

    Args:
        rewards: a callable, a :class:`Reward`, a registry name or import path, a list of those, a mapping
            ``{component_name: reward or (reward, weight)}``, a list of :class:`Component`, or a
            :class:`~rewardflow.spec.Spec`.
        workers: worker processes for ``process`` rewards.
        timeout: default per-call timeout in seconds (``None`` disables it) for rewards without their own.
        kind: default kind for sync callables without one (``"process"``; ``"inline"`` for cheap rewards).
        concurrency: default in-flight limit for ``async`` rewards without their own.
        retries: retries of a sample whose worker process died (never for exceptions or timeouts).
        max_workers: hard cap on worker processes including spares standing in for hung calls.
        columns: the dataset's columns, when known: a required reward parameter that names neither a sample
            field nor one of them is a :class:`~rewardflow.errors.ConfigError` here, not an error on every row.
        worker_threads: OpenMP/BLAS/torch threads per worker process; default ``cpus // workers`` unless
            ``OMP_NUM_THREADS`` is set, ``0`` leaves the libraries' own defaults (oversubscribing the CPUs).
        executor: where ``process`` rewards run: ``"process"`` (local worker processes) or ``"ray"`` (``workers``
            Ray actors; see :mod:`rewardflow.executors.ray_pool`).
        ray_address: the Ray cluster (``"auto"``, ``"ray://host:10001"``); ``None`` joins the cluster this process
            is connected to, or starts a local one.
        ray_options: more :class:`~rewardflow.executors.ray_pool.RayPool` options (``num_cpus``, ``num_gpus``,
            ``strategy``, ``max_chunk``, ``runtime_env``, ...).
    """

    def __init__(
        self,
        rewards: RewardLike,
        *,
        workers: int = 2,
        timeout: float | None = DEFAULT_TIMEOUT,
        kind: str | Kind = Kind.PROCESS,
        concurrency: int = DEFAULT_CONCURRENCY,
        retries: int = 1,
        max_workers: int | None = None,
        start_method: str = "forkserver",
        worker_threads: int | None = None,
        columns: Iterable[str] | None = None,
        executor: str = "process",
        ray_address: str | None = None,
        ray_options: Mapping[str, Any] | None = None,
    ) -> None:
        from rewardflow.executors.base import EXECUTORS
        from rewardflow.spec import Spec

        explicit_timeout = timeout is not DEFAULT_TIMEOUT
        if isinstance(rewards, Spec):
            spec = rewards
            workers = spec.workers
            timeout = spec.timeout
            explicit_timeout = "timeout" in spec.model_fields_set
            concurrency = spec.concurrency
            retries = spec.retries
            worker_threads = spec.worker_threads if spec.worker_threads is not None else worker_threads
            executor = spec.executor
            ray_address = spec.ray_address if spec.ray_address is not None else ray_address
            ray_options = {**spec.ray_options(), **(ray_options or {})}
            rewards = spec.components()
        if executor not in EXECUTORS:
            raise ConfigError(f"executor must be one of {', '.join(EXECUTORS)}; got {executor!r}")
        self.executor = executor
        check_timeout(timeout, "engine")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ConfigError(f"workers must be an integer >= 1, got {workers!r}")
        self.workers = workers
        self.timeout = timeout
        self.concurrency = concurrency
        self._default_kind = Kind(kind)
        self.components: tuple[Component, ...] = tuple(self._components(rewards))
        if not self.components:
            raise ConfigError("an engine needs at least one reward")
        names = [c.name for c in self.components]
        if len(set(names)) != len(names):
            raise ConfigError(f"component names must be unique, got {names}")
        # names of process rewards that run inline because workers could not import them (see _runnable)
        self._inline: frozenset[str] = frozenset(
            c.name for c in self.components if not self._runnable(c, explicit_timeout)
        )
        if columns is not None:
            self.check_columns(columns)
        if executor == "ray":
            self._pool_args: dict[str, Any] = {"workers": workers, "retries": retries, "ray_address": ray_address}
            self._pool_args.update({f"ray_{k}": v for k, v in (ray_options or {}).items()})
        else:
            self._pool_args = {
                "workers": workers,
                "retries": retries,
                "max_workers": max_workers,
                "start_method": start_method,
                "worker_threads": worker_threads,
            }
        self._pool: Any = None
        self._pool_lock = threading.Lock()
        self._runner = _LoopThread()
        self._semaphores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Semaphore]] = (
            weakref.WeakKeyDictionary()
        )
        self._closed = False
        self._all_inline = all(c.reward.kind is Kind.INLINE or c.name in self._inline for c in self.components)
        self._single = self.components[0] if len(self.components) == 1 else None

    @classmethod
    def from_spec(cls, spec: Any, **overrides: Any) -> Engine:
        """Build an engine from a :class:`~rewardflow.spec.Spec` or the path of a YAML spec file."""
        from rewardflow.spec import Spec, load_spec

        loaded = spec if isinstance(spec, Spec) else load_spec(spec)
        if overrides:
            loaded = loaded.model_copy(update={k: v for k, v in overrides.items() if v is not None})
        return cls(loaded)

    # ------------------------------------------------------------------ construction

    def _components(self, rewards: RewardLike) -> Iterable[Component]:
        if isinstance(rewards, Component):
            yield rewards
            return
        if isinstance(rewards, Mapping):
            for name, entry in rewards.items():
                target, weight = entry if isinstance(entry, tuple) else (entry, 1.0)
                yield Component(str(name), self._as_reward(target, name=str(name)), float(weight))
            return
        if isinstance(rewards, (list, tuple)) and not (len(rewards) == 2 and isinstance(rewards[1], (int, float))):
            for entry in rewards:
                yield from self._components(entry)
            return
        target, weight = rewards if isinstance(rewards, tuple) else (rewards, 1.0)
        rw = self._as_reward(target)
        yield Component(rw.name, rw, float(weight))

    def _as_reward(self, target: Any, name: str | None = None) -> Reward:
        if isinstance(target, str):
            from rewardflow.registry import resolve

            name = name or target
            target = resolve(target)
        if isinstance(target, Reward) and name is not None and target.name != name:
            return Reward.wrap(target, name=name)
        return Reward.wrap(target, name=name, default_kind=self._default_kind)

    def _runnable(self, comp: Component, explicit_timeout: bool) -> bool:
        """Whether ``comp`` can run as declared; ``False`` for a process reward that workers cannot import.

        Such a reward runs inline instead, with a warning. Its :class:`Reward` keeps its declared kind, so an
        adapter that must refuse it (AReaL: a lambda cannot be shipped to AReaL's workers either) still can.
        Also warns once about an inline reward's timeout, which cannot be enforced.
        """
        rw = comp.reward
        if rw.kind is Kind.PROCESS:
            why = _not_importable(rw.fn, self.executor)
            if why is not None:
                warnings.warn(
                    f"reward {comp.name!r} runs inline in this process, without worker isolation or a killable "
                    f"timeout: {why}. To run it in worker processes, define it at the top level of a module file "
                    "and pass its import path (my_module:my_reward)",
                    UserWarning,
                    stacklevel=3,
                )
                return False
        if rw.kind is Kind.INLINE and (rw.timeout is not None or (explicit_timeout and self.timeout is not None)):
            timeout = rw.timeout if rw.timeout is not None else self.timeout
            warnings.warn(
                f"reward {comp.name!r} runs inline: its timeout of {timeout:g}s cannot be enforced (an inline call "
                "cannot be interrupted); use kind='process' for a killable timeout",
                UserWarning,
                stacklevel=3,
            )
        return True

    def check_columns(self, columns: Iterable[str]) -> None:
        """Raise :class:`ConfigError` if a reward requires a column that is not among ``columns``.

        The message names the component, the parameter and the available columns. Parameters that name a
        sample field, have a default, or that a ``**kwargs`` would absorb are never required.
        """
        have = sorted(set(columns))
        for comp in self.components:
            missing = comp.reward.plan.missing_columns(have)
            if missing:
                hint = ""
                if comp.reward.kind.per_sample and not comp.reward.positional and len(comp.reward.plan.params) >= 2:
                    hint = (
                        "; parameters bind by name (prompt, completion, answer, ...), or by AReaL's positions "
                        "only with @reward(positional=True)"
                    )
                raise ConfigError(
                    f"reward {comp.name!r}: parameter {missing[0]!r} names no sample field and no column; "
                    f"available columns: {', '.join(have) or 'none'}{hint}"
                )

    # ------------------------------------------------------------------ public API

    def score(self, samples: Iterable[Sample | Mapping[str, Any]]) -> list[RewardResult]:
        """Score a batch; one result per input, in input order. Never raises for a bad sample or reward."""
        self._check_open()
        prepared = self._prepare(samples)
        if self._all_inline:
            return self._score_inline(prepared)
        return self._runner.run(self._ascore_prepared(prepared))

    async def ascore(self, samples: Iterable[Sample | Mapping[str, Any]]) -> list[RewardResult]:
        """Async :meth:`score`, for callers that already run an event loop (AReaL workflows, servers)."""
        self._check_open()
        prepared = self._prepare(samples)
        if self._all_inline:
            return self._score_inline(prepared)
        try:
            return await self._ascore_prepared(prepared)
        except _Interrupted as exc:
            raise exc.interrupt from None

    async def ascore_one(self, sample: Sample | Mapping[str, Any]) -> RewardResult:
        """Score one rollout as soon as it is generated (streaming)."""
        return (await self.ascore([sample]))[0]

    def close(self) -> None:
        """Kill worker processes, close rewards that hold connections, stop the engine's loop. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
        if self._runner.started:
            try:
                self._runner.run(self._aclose_rewards())
            except Exception:  # closing must not raise
                logger.warning("closing a reward failed", exc_info=True)
        self._runner.close()

    async def aclose(self) -> None:
        """Async :meth:`close`: also closes rewards' connections opened on the *current* event loop."""
        await self._aclose_rewards()
        await asyncio.to_thread(self.close)

    async def _aclose_rewards(self) -> None:
        """Await ``aclose()`` of every reward callable that has one (judge clients: connection pools)."""
        for comp in self.components:
            closer = getattr(comp.reward.fn, "aclose", None)
            if closer is None:
                continue
            try:
                await closer()
            except Exception:
                logger.warning("aclose() of reward %r failed", comp.name, exc_info=True)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @property
    def pool(self) -> Any:
        """The executor of ``process`` rewards (process pool or Ray pool), or ``None`` before its first use."""
        return self._pool

    # ------------------------------------------------------------------ internals

    def _check_open(self) -> None:
        if self._closed:
            raise EngineClosedError("the engine is closed")

    @staticmethod
    def _prepare(samples: Iterable[Sample | Mapping[str, Any]]) -> list[Sample | RewardResult]:
        if isinstance(samples, (Mapping, Sample, str, bytes)):
            raise InputError(
                f"score() takes a list of samples, got one {type(samples).__name__}; "
                "wrap it in a list (engine.score([row])) or use ascore_one(row)"
            )
        out: list[Sample | RewardResult] = []
        for i, item in enumerate(samples):
            if isinstance(item, Sample):
                out.append(item)
                continue
            try:
                out.append(Sample.from_row(item))  # type: ignore[arg-type]
            except InputError as exc:
                out.append(RewardResult(None, Status.ERROR, f"row {i}: {exc}"))
        return out

    def _score_inline(self, prepared: list[Sample | RewardResult]) -> list[RewardResult]:
        single = self._single
        if single is not None:
            rw, name, weight = single.reward, single.name, single.weight
            out: list[RewardResult] = []
            for item in prepared:
                if not isinstance(item, Sample):
                    out.append(item)
                    continue
                r = invoke(rw, item)
                if r.components:
                    out.append(self._combine([r]))
                elif r.status is Status.OK:
                    value = r.value * weight if weight != 1.0 else r.value  # type: ignore[operator]
                    if single.gate and r.value <= 0:  # type: ignore[operator]
                        value = 0.0
                    out.append(RewardResult(value, Status.OK, r.reason, {name: r.value}, r.latency, r.info))
                else:
                    out.append(RewardResult(None, r.status, r.reason, {name: None}, r.latency, r.info))
            return out
        samples = [p for p in prepared if isinstance(p, Sample)]
        per_component = [[invoke(c.reward, s) for s in samples] for c in self.components]
        return self._merge(prepared, per_component)

    async def _ascore_prepared(self, prepared: list[Sample | RewardResult]) -> list[RewardResult]:
        samples = [p for p in prepared if isinstance(p, Sample)]
        if not samples:
            return [p for p in prepared if isinstance(p, RewardResult)]
        per_component = await asyncio.gather(*(self._run(c, samples) for c in self.components))
        return self._merge(prepared, list(per_component))

    def _merge(
        self, prepared: list[Sample | RewardResult], per_component: list[list[RewardResult]]
    ) -> list[RewardResult]:
        out: list[RewardResult] = []
        k = 0
        for item in prepared:
            if not isinstance(item, Sample):
                out.append(item)
                continue
            out.append(self._combine([results[k] for results in per_component]))
            k += 1
        return out

    def _combine(self, parts: Sequence[RewardResult]) -> RewardResult:
        components: dict[str, float | None] = {}
        info: dict[str, Any] = {}
        latency = 0.0
        failure: tuple[Component, RewardResult] | None = None
        total = 0.0
        reasons: list[str] = []
        gated: list[str] = []
        multi = len(self.components) > 1
        for comp, r in zip(self.components, parts, strict=True):
            components[comp.name] = r.value
            for key, sub in r.components.items():  # a reward's own sub-scores (rubric criteria, ...)
                components[f"{comp.name}.{key}"] = sub
            latency += r.latency
            if r.info:
                info[comp.name] = dict(r.info) if multi else r.info
            if r.status is not Status.OK:
                if failure is None:
                    failure = (comp, r)
                continue
            total += comp.weight * r.value  # type: ignore[operator]
            if comp.gate and r.value <= 0:  # type: ignore[operator]
                gated.append(comp.name)
            if r.reason:
                reasons.append(f"{comp.name}: {r.reason}" if multi else r.reason)
        if not multi and info:
            info = dict(next(iter(info.values())))
        if failure is not None:
            comp, r = failure
            reason = f"component {comp.name!r}: {r.reason}" if multi else r.reason
            return RewardResult(None, r.status, reason, components, latency, info)
        if gated:
            reasons.insert(0, "gate " + ", ".join(repr(g) for g in gated) + " not passed")
            total = 0.0
        return RewardResult(total, Status.OK, "; ".join(reasons) or None, components, latency, info)

    async def _run(self, comp: Component, samples: list[Sample]) -> list[RewardResult]:
        rw = comp.reward
        timeout = rw.timeout if rw.timeout is not None else self.timeout
        if rw.kind is Kind.INLINE or comp.name in self._inline:
            return [invoke(rw, s) for s in samples]
        if rw.kind is Kind.PROCESS:
            return await self._run_process(comp, samples, timeout)
        if rw.kind is Kind.ASYNC:
            sem = self._semaphore(comp)
            return list(await asyncio.gather(*(self._run_async_one(rw, s, sem, timeout) for s in samples)))
        if rw.kind is Kind.BATCH:
            return await self._run_batch(rw, samples, timeout, self._semaphore(comp))
        groups: dict[str, list[int]] = {}
        for i, s in enumerate(samples):
            key = s.group if s.group is not None else "prompt:" + s.prompt
            groups.setdefault(key, []).append(i)
        sem = self._semaphore(comp)
        results: list[RewardResult | None] = [None] * len(samples)
        outs = await asyncio.gather(
            *(self._run_batch(rw, [samples[i] for i in idx], timeout, sem) for idx in groups.values())
        )
        for idx, group_results in zip(groups.values(), outs, strict=True):
            for i, r in zip(idx, group_results, strict=True):
                results[i] = r
        return results  # type: ignore[return-value]

    def _semaphore(self, comp: Component) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        table = self._semaphores.setdefault(loop, {})
        sem = table.get(comp.name)
        if sem is None:
            limit = comp.reward.concurrency or self.concurrency
            sem = table[comp.name] = asyncio.Semaphore(limit)
        return sem

    @staticmethod
    async def _run_async_one(rw: Reward, sample: Sample, sem: asyncio.Semaphore, timeout: float | None) -> RewardResult:
        async with sem:
            start = time.perf_counter()
            try:
                return await asyncio.wait_for(invoke_async(rw, sample), timeout)
            except asyncio.TimeoutError:
                return RewardResult(
                    None,
                    Status.TIMEOUT,
                    f"timed out after {timeout:g}s (call cancelled)",
                    latency=time.perf_counter() - start,
                )

    @staticmethod
    async def _run_batch(
        rw: Reward, samples: list[Sample], timeout: float | None, sem: asyncio.Semaphore
    ) -> list[RewardResult]:
        async with sem:
            start = time.perf_counter()
            try:
                kwargs = rw.plan.batch_kwargs(samples)
                if rw.is_async:
                    raw = await asyncio.wait_for(rw.fn(**kwargs), timeout)
                else:
                    raw = await asyncio.wait_for(asyncio.to_thread(_in_thread, rw.fn, kwargs), timeout)
            except asyncio.TimeoutError as exc:
                status = Status.TIMEOUT
                how = "call cancelled" if rw.is_async else "the thread cannot be killed and finishes in the background"
                # a reward that enforces its own, narrower limit (RayModel) says which one in the message
                reason = str(exc) or f"timed out after {timeout:g}s ({how})"
                return [RewardResult(None, status, reason, latency=time.perf_counter() - start) for _ in samples]
            except _Interrupted:
                raise  # to the caller (see _Interrupted), never turned into error results
            except Exception as exc:  # the engine boundary
                return error_results(len(samples), exc, time.perf_counter() - start)
            return invoke_many(rw, samples, raw, time.perf_counter() - start)

    def _get_pool(self) -> Any:
        with self._pool_lock:
            self._check_open()
            if self._pool is None or self._pool.closed:  # closed under us: its dispatcher crashed (logged)
                from rewardflow.executors.base import make_executor

                rewards = {
                    c.name: c.reward
                    for c in self.components
                    if c.reward.kind is Kind.PROCESS and c.name not in self._inline
                }
                self._pool = make_executor(self.executor, rewards, **self._pool_args)
            return self._pool

    async def _run_process(self, comp: Component, samples: list[Sample], timeout: float | None) -> list[RewardResult]:
        batch = self._get_pool().submit(comp.name, samples, timeout)
        try:
            return list(await asyncio.wrap_future(batch.future))
        except asyncio.CancelledError:
            batch.cancel()  # the caller gave up (Ctrl-C, timeout around the call): stop dispatching the rest
            raise
