"""A pool of Ray actors for sync rewards: the process pool's guarantees, across a cluster.

:class:`RayPool` implements :class:`~rewardflow.executors.base.Executor`, so ``Engine(..., executor="ray")`` runs
``process`` rewards here instead of in local worker processes, with the same typed results:

* **Actors, placed across the cluster.** ``workers`` actors of class ``RewardActor``, each reserving ``num_cpus``
  CPUs (default 1) and ``num_gpus`` GPUs (default 0), placed with Ray's ``SPREAD`` strategy, or in a placement
  group of one bundle per actor (``strategy="placement_group"``, bundles spread over nodes). An actor gets work
  only after it answered ``ready()`` (its rewards loaded), so a replacement that cannot be placed never holds
  samples.
* **One global limit.** Each actor scores one chunk at a time; every caller of the pool (threads, async tasks,
  the HTTP service's requests) shares one queue, so at most ``workers`` calls run at once, whoever submits.
* **Chunked dispatch.** A chunk is sized to the backlog (``backlog / (4 * actors)``, at most ``max_chunk``), so a
  cheap reward pays Ray's per-call cost (a few hundred microseconds to milliseconds) once per chunk, not per
  sample.
* **Timeouts from the start of the call, measured inside the actor** (:mod:`rewardflow.executors.ray_actor`).
  A hung call: the actor returns what it finished and the hung index; the pool ``ray.kill`` s the actor, starts
  a replacement, reports that sample ``timeout`` and puts the rest of the chunk back at the front of the queue.
  A call that holds the GIL cannot be watched from inside; the driver's backstop (every call of the chunk at its
  full timeout, plus ``backstop_grace`` seconds) kills such an actor.
* **A dead actor or a lost node costs one retry.** The samples of a chunk whose actor died (its process killed,
  its node removed) are retried once on another actor, one sample per call (so a sample that kills its actor
  cannot take others down with it), then reported ``error`` with Ray's cause (e.g. "the actor died because its
  node has died"). Exceptions and timeouts are never retried.
* **Where each sample ran:** every result from an actor carries the node's id in ``info["ray_node_id"]``.
* **Nothing left behind.** :meth:`RayPool.close` asks idle actors to exit, kills busy ones, kills any still there
  after 5 s and removes the placement group. Actors are owned by this process, so Ray also ends them if it dies.

Connecting: ``address=None`` joins the cluster this process is already connected to, else starts a local one
(usage statistics off, no dashboard; it stays up until this process exits, so later engines reuse it, and Ray
shuts it down at exit); ``"auto"`` joins the cluster started on this machine with ``ray start``;
``"ray://host:10001"`` goes through Ray Client.

How the rewards reach the actors: by value for functions defined in ``__main__`` (cloudpickle), by reference
(module and name) for everything else, so their modules must import on every node: ``rewardflow`` and the
reward's own packages installed in each node's Python (the same environment on every node, as Ray itself
requires), or shipped with Ray's runtime environment (``runtime_env={"py_modules": [...]}`` or
``{"working_dir": "."}``). A reward module that is a single ``.py`` file in the current directory, not installed,
is shipped automatically (``py_modules``), which is how ``rewardflow score -r my_rewards:fn --executor ray`` works
from a project directory.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import sysconfig
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rewardflow.errors import ConfigError, EngineClosedError, MissingDependencyError
from rewardflow.executors.base import Batch, PoolState, PoolStats, StartsOnFirstUse, Task, new_batch
from rewardflow.executors.ray_actor import NODE_KEY, RewardActor
from rewardflow.reward import Reward
from rewardflow.types import RewardResult, Sample, Status

__all__ = ["RayPool", "RayStats"]

logger = logging.getLogger(__name__)

_POLL_S = 0.02
_START_FAILURES = 3
STRATEGIES = ("SPREAD", "DEFAULT", "placement_group")


@dataclass
class RayStats(PoolStats):
    """The process pool's counters, plus actor start times."""

    start_s: list[float] = field(default_factory=list)  # seconds from creating an actor to its ready()


@dataclass(slots=True)
class _Actor:
    handle: Any
    ready_ref: Any
    created: float
    node: str | None = None  # set once ready() answered
    chunk: list[Task] = field(default_factory=list)
    ref: Any = None  # the chunk's ObjectRef while one runs
    backstop: float | None = None


def import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise MissingDependencyError("ray", "ray") from exc
    return ray


def connect(
    ray: Any,
    address: str | None,
    runtime_env: Mapping[str, Any] | None,
    shipped: Sequence[str] = (),
    init_kwargs: Mapping[str, Any] | None = None,
) -> None:
    """``ray.init`` for a process not yet connected (``address=None``: a new local instance).

    A local instance is not shut down when the pool closes: another engine of this process may be using it.

    Local files (``shipped`` modules) can be uploaded only at the job level, so the runtime environment goes to
    ``ray.init``. A local instance of our own reports no usage statistics and runs no dashboard.
    """
    env = dict(runtime_env or {})
    if shipped:
        env["py_modules"] = [*env.get("py_modules", []), *shipped]
    # "local": always a new instance, never a stale or foreign cluster this machine happens to have recorded
    kwargs: dict[str, Any] = {"address": address or "local", "runtime_env": env or None}
    if address is None:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        kwargs["include_dashboard"] = False
    kwargs.update(init_kwargs or {})
    ray.init(**kwargs)


def _installed(path: str) -> bool:
    roots = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    return any(path.startswith(os.path.join(r, "")) for r in roots)


def cwd_modules(rewards: Mapping[str, Reward]) -> list[str]:
    """Single-file reward modules in the current directory that are not installed: what actors must be sent."""
    here = Path.cwd().resolve()
    out: list[str] = []
    for rw in rewards.values():
        name = getattr(rw.fn, "__module__", None) or getattr(type(rw.fn), "__module__", None)
        module = sys.modules.get(name or "")
        path = getattr(module, "__file__", None)
        if not name or "." in name or name == "__main__" or path is None or hasattr(module, "__path__"):
            continue
        file = Path(path).resolve()
        if file.parent == here and not _installed(str(file)) and str(file) not in out:
            out.append(str(file))
    return out


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ERROR_LINE = re.compile(r"^[A-Za-z_.]*(Error|Exception): ")


def describe_ray_error(exc: BaseException) -> str:
    """Ray's cause in one line, e.g. ``ActorDiedError: The actor died because its node has died. ...``.

    For an actor whose rewards did not load, the last ``SomeError: message`` line of the remote traceback (the
    ``ModuleNotFoundError``) is added: it is the part that tells the user what to fix.
    """
    lines = [line.strip() for line in _ANSI.sub("", str(exc)).splitlines() if line.strip()]
    head = next((line for line in lines if "died" in line.lower()), lines[0] if lines else "")
    cause = next((line for line in reversed(lines) if _ERROR_LINE.match(line)), "")
    head = head.split(", ray::")[0].split(" (pid=")[0]
    text = f"{head} ({cause})" if cause and cause not in head else head
    return f"{type(exc).__name__}: {text[:400]}" if text else type(exc).__name__


class RayPool(StartsOnFirstUse):
    """Ray actors for sync rewards; see the module docstring for the guarantees.

    Args:
        rewards: component name -> :class:`~rewardflow.reward.Reward`.
        workers: actors, i.e. calls in flight at once across every caller.
        retries: retries of a sample whose actor died (never for exceptions or timeouts).
        address: the cluster (``"auto"``, ``"ray://..."``, ``"host:port"``); ``None``: see the module docstring.
        num_cpus / num_gpus: resources each actor reserves.
        strategy: ``"SPREAD"`` (default), ``"DEFAULT"`` (Ray packs), or ``"placement_group"``.
        max_chunk: most samples in one actor call.
        runtime_env: Ray runtime environment for the actors (merged with the automatic ``py_modules``).
        start_timeout: if no actor is ready this long after work arrived, queued samples fail with ``error``.
        backstop_grace: seconds past a chunk's whole time budget before the driver kills an unanswering actor.
        init_kwargs: extra keyword arguments for ``ray.init`` when this pool starts or joins Ray itself.
    """

    def __init__(
        self,
        rewards: Mapping[str, Reward],
        *,
        workers: int = 2,
        retries: int = 1,
        address: str | None = None,
        num_cpus: float = 1.0,
        num_gpus: float = 0.0,
        strategy: str = "SPREAD",
        max_chunk: int = 64,
        runtime_env: Mapping[str, Any] | None = None,
        start_timeout: float = 120.0,
        backstop_grace: float = 30.0,
        init_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ConfigError(f"workers must be an integer >= 1, got {workers!r}")
        if retries < 0:
            raise ConfigError(f"retries must be >= 0, got {retries}")
        if num_cpus < 0 or num_gpus < 0:
            raise ConfigError("num_cpus and num_gpus must be >= 0")
        if strategy not in STRATEGIES:
            raise ConfigError(f"strategy must be one of {', '.join(STRATEGIES)}; got {strategy!r}")
        if max_chunk < 1:
            raise ConfigError(f"max_chunk must be >= 1, got {max_chunk}")
        self._ray = import_ray()
        self.workers = workers
        self.retries = retries
        self.address = address
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.strategy = strategy
        self.max_chunk = max_chunk
        self.start_timeout = start_timeout
        self.backstop_grace = backstop_grace
        self.stats = RayStats()
        self._rewards = dict(rewards)
        self._runtime_env = dict(runtime_env) if runtime_env else None
        self._init_kwargs = dict(init_kwargs or {})
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._pending: deque[Task] = deque()
        self._actors: list[_Actor] = []
        self._state = PoolState.NEW
        self._what = "Ray pool"
        self._thread: threading.Thread | None = None
        self._actor_cls: Any = None
        self._actor_options: dict[str, Any] = {}
        self._placement: Any = None
        self._start_failures = 0
        self._start_error = ""
        self._waiting_since: float | None = None

    # ------------------------------------------------------------------ public API

    def submit(self, reward_id: str, samples: Sequence[Sample], timeout: float | None) -> Batch:
        """Queue samples for one reward; ``batch.future`` resolves to one result per sample, in input order."""
        batch, tasks = new_batch(reward_id, samples, timeout)
        with self._lock:
            if reward_id not in self._rewards and self._state is not PoolState.CLOSED:
                raise ConfigError(f"reward {reward_id!r} is not registered with this pool")
            self._ensure_running()
            self._pending.extend(tasks)
            if tasks and self._start_failures >= _START_FAILURES:
                self._start_failures = 0  # new work: try starting actors again
            self._dispatch()
        self._wake.set()
        return batch

    def start(self, wait: float = 120.0) -> bool:
        """Connect and start the actors now; True once ``workers`` of them are ready (at most ``wait`` s)."""
        with self._lock:
            self._ensure_running()
        self._wake.set()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if len(self.nodes) >= self.workers:
                return True
            if self._start_failures >= _START_FAILURES:
                logger.warning("rewardflow Ray actors fail to start: %s", self._start_error)
                return False
            time.sleep(0.05)
        return False

    @property
    def nodes(self) -> list[str]:
        """Node ids of the ready actors, one entry per actor."""
        return [a.node for a in list(self._actors) if a.node is not None]

    def close(self, wait: bool = True) -> None:
        """Fail queued samples, end every actor, remove the placement group. Idempotent."""
        with self._lock:
            started = self._mark_closed()
            if started is None:
                return
            tasks = list(self._pending)
            self._pending.clear()
            actors, self._actors = self._actors, []
            for a in actors:
                tasks.extend(a.chunk)
        self._wake.set()
        for t in tasks:
            t.batch.fail(EngineClosedError("the Ray pool was closed"))
        if not started:
            return
        ray = self._ray
        goodbyes = []
        for a in actors:
            if a.ref is None and a.node is not None:  # idle: let it exit by itself (exit handlers run)
                try:
                    goodbyes.append(a.handle.__ray_terminate__.remote())
                except Exception:
                    self._kill(a)
            else:  # busy (maybe hung) or still starting
                self._kill(a)
        if goodbyes and wait:
            ray.wait(goodbyes, num_returns=len(goodbyes), timeout=5.0)
        for a in actors:
            self._kill(a)
        if self._placement is not None:
            try:
                ray.util.remove_placement_group(self._placement)
            except Exception:  # pragma: no cover - the cluster is gone
                logger.debug("removing the placement group failed", exc_info=True)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def __enter__(self) -> RayPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ lifecycle

    def _start(self) -> None:
        ray = self._ray
        options: dict[str, Any] = {
            "num_cpus": self.num_cpus,
            "num_gpus": self.num_gpus,
            "max_restarts": 0,
            "max_concurrency": 1,
        }
        if not ray.is_initialized():
            connect(ray, self.address, self._runtime_env, cwd_modules(self._rewards), self._init_kwargs)
        elif self._runtime_env:  # joined by the caller's ray.init: only URIs, pip, env_vars ... per actor
            options["runtime_env"] = self._runtime_env
        if self.strategy == "placement_group":
            bundle: dict[str, float] = {"CPU": self.num_cpus}
            if self.num_gpus:
                bundle["GPU"] = self.num_gpus
            self._placement = ray.util.placement_group([bundle] * self.workers, strategy="SPREAD")
        elif self.strategy == "SPREAD":
            options["scheduling_strategy"] = "SPREAD"
        self._actor_cls = ray.remote(RewardActor)
        self._actor_options = options
        self._state = PoolState.RUNNING
        self._thread = threading.Thread(target=self._run, name="rewardflow-ray-pool", daemon=True)
        self._thread.start()

    def _spawn(self) -> None:
        options: dict[str, Any] = {}
        if self._placement is not None:
            from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

            # any free bundle of the group (-1): a replacement takes the bundle its predecessor freed
            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                self._placement, placement_group_bundle_index=-1
            )
        handle = self._actor_cls.options(**self._actor_options, **options).remote(self._rewards)
        self._actors.append(_Actor(handle, handle.ready.remote(), time.monotonic()))
        self.stats.spawned += 1

    def _kill(self, a: _Actor) -> None:
        try:
            self._ray.kill(a.handle, no_restart=True)
        except Exception:  # already gone
            logger.debug("ray.kill failed", exc_info=True)

    def _remove(self, a: _Actor) -> None:
        if a in self._actors:
            self._actors.remove(a)
        self._kill(a)

    # ------------------------------------------------------------------ dispatcher

    def _run(self) -> None:
        try:
            self._loop()
        except Exception:  # pragma: no cover - a bug here must not leave callers waiting forever
            logger.exception("rewardflow Ray pool dispatcher crashed")
            # Fail what is queued, end the actors, and mark the pool closed: later submits fail fast (the engine
            # replaces a closed pool) instead of waiting on a dispatcher that is gone.
            self.close(wait=False)

    def _loop(self) -> None:
        ray = self._ray
        while True:
            with self._lock:
                if self._state is PoolState.CLOSED:
                    return
                self._maintain(time.monotonic())
                self._dispatch()
                watched = {a.ready_ref: a for a in self._actors if a.ready_ref is not None}
                watched.update({a.ref: a for a in self._actors if a.ref is not None})
            if not watched:
                self._wake.wait(_POLL_S * 5)
                self._wake.clear()
                continue
            refs = list(watched)
            done, rest = ray.wait(refs, num_returns=1, timeout=_POLL_S)
            if done and rest:
                more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
                done += more
            with self._lock:
                if self._state is PoolState.CLOSED:
                    return
                for ref in done:
                    a = watched[ref]
                    if a not in self._actors:
                        continue
                    if ref is a.ready_ref:
                        self._on_ready(a)
                    else:
                        self._on_chunk(a)
                self._check_backstops(time.monotonic())

    def _maintain(self, now: float) -> None:
        """Keep ``workers`` actors; fail queued samples when none can start."""
        while len(self._actors) < self.workers and self._start_failures < _START_FAILURES:
            self._spawn()
        if not self._pending or any(a.node is not None for a in self._actors):
            self._waiting_since = None
            return
        if self._start_failures >= _START_FAILURES:
            self._fail_queued(f"Ray actors fail to start: {self._start_error}")
            return
        if self._waiting_since is None:
            self._waiting_since = now
        elif now - self._waiting_since > self.start_timeout:
            self._fail_queued(
                f"no Ray actor became ready within {self.start_timeout:g}s: does the cluster have "
                f"{self.num_cpus:g} free CPU(s){f' and {self.num_gpus:g} GPU(s)' if self.num_gpus else ''} "
                "per actor?"
            )
            self._waiting_since = None

    def _on_ready(self, a: _Actor) -> None:
        ref, a.ready_ref = a.ready_ref, None
        try:
            a.node = self._ray.get(ref)
        except Exception as exc:  # the rewards did not load there, or the actor could not be placed/started
            self._start_failures += 1
            self._start_error = describe_ray_error(exc)
            logger.warning("a rewardflow Ray actor failed to start: %s", self._start_error)
            self._remove(a)
            return
        self._start_failures = 0
        self.stats.start_s.append(time.monotonic() - a.created)

    def _on_chunk(self, a: _Actor) -> None:
        ref, chunk = a.ref, a.chunk
        a.ref, a.chunk, a.backstop = None, [], None
        try:
            results, hung, elapsed = self._ray.get(ref)
        except Exception as exc:  # RayActorError (actor or node died), ObjectLostError, ...
            self._on_lost(a, chunk, describe_ray_error(exc))
            return
        for task, result in zip(chunk, results, strict=False):
            self._resolve(task, result)
        if hung is None:
            return
        if hung >= 0:
            task = chunk[hung]
            self.stats.killed_timeout += 1
            reason = f"timed out after {task.timeout:g}s (Ray actor killed and replaced)"
            self._resolve(task, RewardResult(None, Status.TIMEOUT, reason, latency=elapsed, info={NODE_KEY: a.node}))
        self._requeue(chunk[hung + 1 :] if hung >= 0 else chunk)  # -1: the actor refused the chunk
        self._remove(a)

    def _on_lost(self, a: _Actor, chunk: list[Task], cause: str, *, unanswered: bool = False) -> None:
        """The actor died (or stopped answering) with ``chunk`` in flight: retry each sample once, alone."""
        self.stats.died += 1
        self._remove(a)
        retry: list[Task] = []
        for t in chunk:
            if t.done:
                continue
            if unanswered and len(chunk) == 1:
                reason = f"timed out: no answer {t.timeout:g}s + {self.backstop_grace:g}s after the call was sent"
                self._resolve(t, RewardResult(None, Status.TIMEOUT, reason + " (Ray actor killed and replaced)"))
                continue
            t.attempts += 1
            if t.attempts <= self.retries:
                self.stats.retried += 1
                retry.append(t)
                continue
            where = f" on node {a.node}" if a.node else ""
            reason = f"Ray actor{where} died while scoring this sample (tried {t.attempts} times): {cause}"
            self._resolve(t, RewardResult(None, Status.ERROR, reason, info={NODE_KEY: a.node} if a.node else {}))
        if retry:
            logger.warning("a rewardflow Ray actor was lost (%s); retrying %d sample(s)", cause, len(retry))
        self._requeue(retry)

    def _check_backstops(self, now: float) -> None:
        for a in list(self._actors):
            if a.backstop is not None and now > a.backstop and a.ref is not None:
                chunk = a.chunk
                a.ref, a.chunk, a.backstop = None, [], None
                self._on_lost(a, chunk, "the actor stopped answering (a call holding the GIL?)", unanswered=True)

    def _dispatch(self) -> None:
        """Give each ready, idle actor a chunk (called with the lock held)."""
        if self._state is not PoolState.RUNNING:
            return
        ready = [a for a in self._actors if a.node is not None]
        for a in ready:
            if a.ref is not None:
                continue
            chunk = self._take(len(ready))
            if not chunk:
                return
            first = chunk[0]
            try:
                a.ref = a.handle.run.remote(first.reward_id, [t.sample for t in chunk], first.timeout)
            except Exception as exc:  # a sample that cannot be serialised
                for t in chunk:
                    self._resolve(t, RewardResult(None, Status.ERROR, f"sample cannot be sent to a Ray actor: {exc}"))
                continue
            a.chunk = chunk
            if first.timeout is not None:
                a.backstop = time.monotonic() + len(chunk) * first.timeout + self.backstop_grace

    def _take(self, actors: int) -> list[Task]:
        pending = self._pending
        while pending and pending[0].done:
            pending.popleft()
        if not pending:
            return []
        first = pending.popleft()
        if first.attempts:  # a retried sample runs alone
            return [first]
        size = max(1, min(self.max_chunk, len(pending) // (4 * actors)))
        chunk = [first]
        while pending and len(chunk) < size:
            t = pending[0]
            if t.reward_id != first.reward_id or t.timeout != first.timeout or t.attempts:
                break
            pending.popleft()
            if not t.done:
                chunk.append(t)
        return chunk

    def _requeue(self, tasks: Sequence[Task]) -> None:
        self._pending.extendleft(reversed([t for t in tasks if not t.done]))

    def _resolve(self, task: Task, result: RewardResult) -> None:
        if task.batch.set(task.index, result):
            self.stats.completed += 1

    def _fail_queued(self, reason: str) -> None:
        tasks = list(self._pending)
        self._pending.clear()
        for t in tasks:
            self._resolve(t, RewardResult(None, Status.ERROR, reason))
