"""What the engine needs from an executor of sync rewards, and the batch handle every executor returns.

The engine hands a batch of samples for one reward to an :class:`Executor` and gets a :class:`Batch` back, which
the executor fills in, one :class:`~rewardflow.types.RewardResult` per sample, in input order. Data flows one way:
samples -> engine -> executor -> rewards -> results; an executor never calls back into the engine.

Two implementations: :class:`~rewardflow.executors.process.ProcessPool` (worker processes on this machine, the
default) and :class:`~rewardflow.executors.ray_pool.RayPool` (Ray actors on a cluster). Both promise the same:
a per-call timeout counted from the start of the call, a hung call killed and reported ``timeout``, a sample
whose worker died retried once and then reported ``error`` naming the cause, and every sample answered exactly
once. :func:`make_executor` builds one by name (``"process"`` or ``"ray"``).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol, runtime_checkable

from rewardflow.errors import ConfigError, EngineClosedError
from rewardflow.types import RewardResult, Sample

__all__ = [
    "EXECUTORS",
    "Batch",
    "Executor",
    "PoolState",
    "PoolStats",
    "StartsOnFirstUse",
    "Task",
    "make_executor",
    "new_batch",
]

#: Names accepted by ``Engine(executor=...)``, ``executor:`` in a spec and ``--executor``.
EXECUTORS = ("process", "ray")


class PoolState(str, Enum):
    """An executor's lifecycle: created, started (workers on first use), closed."""

    NEW = "new"
    RUNNING = "running"
    CLOSED = "closed"


@dataclass
class PoolStats:
    """Counters a benchmark or dashboard can read."""

    spawned: int = 0
    killed_timeout: int = 0
    died: int = 0
    retried: int = 0
    completed: int = 0


class Batch:
    """Results of one :meth:`Executor.submit` call, filled in as they arrive (input order).

    One handle per batch instead of one ``Future`` per sample: at tens of thousands of samples per second the
    per-sample future (a lock and a condition each) was the parent's largest cost.
    """

    __slots__ = ("_lock", "_remaining", "cancelled", "future", "results")

    def __init__(self, size: int) -> None:
        self.results: list[RewardResult | None] = [None] * size
        self._remaining = size
        self._lock = threading.Lock()
        self.cancelled = False
        self.future: Future[list[RewardResult]] = Future()
        # The engine awaits ``future`` through ``asyncio.wrap_future``: when the awaiting task is cancelled (a
        # request deadline, a client that left), the future is cancelled too. Stop dispatching what is left.
        self.future.add_done_callback(self._on_done)
        if size == 0:
            self.future.set_result([])

    def _on_done(self, future: Future[list[RewardResult]]) -> None:
        if future.cancelled():
            self.cancelled = True

    def set(self, index: int, result: RewardResult) -> bool:
        """Record a result; False if that sample already had one (first result wins)."""
        with self._lock:
            if self.results[index] is not None:
                return False
            self.results[index] = result
            self._remaining -= 1
            finished = self._remaining == 0
        if finished:
            # The caller may have cancelled the future meanwhile; its late results are dropped, and the
            # dispatcher thread that delivers them must not die of InvalidStateError (that hung every later call).
            with contextlib.suppress(InvalidStateError):
                self.future.set_result(self.results)  # type: ignore[arg-type]
        return True

    def fail(self, exc: BaseException) -> None:
        with contextlib.suppress(InvalidStateError):
            self.future.set_exception(exc)

    def cancel(self) -> None:
        """Stop dispatching this batch's samples (the caller gave up on it)."""
        self.cancelled = True


@dataclass(slots=True)
class Task:
    """One sample of one batch on its way through an executor."""

    batch: Batch
    index: int
    reward_id: str
    sample: Sample
    timeout: float | None
    attempts: int = 0

    @property
    def done(self) -> bool:
        return self.batch.cancelled or self.batch.results[self.index] is not None or self.batch.future.done()


def new_batch(reward_id: str, samples: Sequence[Sample], timeout: float | None) -> tuple[Batch, list[Task]]:
    """The batch handle and one task per sample, for :meth:`Executor.submit`."""
    batch = Batch(len(samples))
    return batch, [Task(batch, i, reward_id, s, timeout) for i, s in enumerate(samples)]


class StartsOnFirstUse:
    """The lifecycle both executors share: workers start on the first batch (or :meth:`Executor.start`)."""

    _state: PoolState
    _what: str  # "process pool", "Ray pool": how errors name the executor

    def _start(self) -> None:
        raise NotImplementedError

    def _ensure_running(self) -> None:
        """With the executor's lock held: refuse if closed, start if new."""
        if self._state is PoolState.CLOSED:
            raise EngineClosedError(f"the {self._what} is closed")
        if self._state is PoolState.NEW:
            self._start()

    @property
    def closed(self) -> bool:
        """True once closed, by :meth:`close` or because its dispatcher crashed (the engine then builds a new one)."""
        return self._state is PoolState.CLOSED

    def _mark_closed(self) -> bool | None:
        """With the executor's lock held: ``None`` if it was closed already, else whether it had started."""
        if self._state is PoolState.CLOSED:
            return None
        started = self._state is PoolState.RUNNING
        self._state = PoolState.CLOSED
        return started


@runtime_checkable
class Executor(Protocol):
    """An executor of sync rewards, as the engine sees it."""

    #: How many calls run at once (worker processes, Ray actors): one limit shared by every caller.
    workers: int

    def submit(self, reward_id: str, samples: Sequence[Sample], timeout: float | None) -> Batch:
        """Queue samples for one reward; ``batch.future`` resolves to one result per sample, in input order.

        Individual samples never raise: every failure is a result. The future fails only if the executor is
        closed or broken while the batch is in flight.
        """
        ...

    def start(self, wait: float) -> bool:
        """Start the workers now instead of on the first batch; True once all are up (at most ``wait`` s)."""
        ...

    def close(self, wait: bool = True) -> None:
        """Stop every worker (hung ones are killed) and fail queued samples. Idempotent."""
        ...


def make_executor(name: str, rewards: Mapping[str, Any], **options: Any) -> Executor:
    """Build the executor called ``name`` for ``rewards`` (component name -> :class:`~rewardflow.reward.Reward`).

    ``options`` are the process pool's (``workers``, ``retries``, ...) plus, for Ray, the ``ray_*`` ones; options
    that belong to the other executor are ignored.
    """
    ray_options = {k[4:]: v for k, v in options.items() if k.startswith("ray_")}
    common = {k: v for k, v in options.items() if not k.startswith("ray_")}
    if name == "process":
        from rewardflow.executors.process import ProcessPool

        return ProcessPool(rewards, **common)
    if name == "ray":
        from rewardflow.executors.ray_pool import RayPool

        return RayPool(rewards, workers=common.get("workers", 2), retries=common.get("retries", 1), **ray_options)
    raise ConfigError(f"executor must be one of {', '.join(EXECUTORS)}; got {name!r}")
