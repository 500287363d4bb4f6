"""A process pool for sync rewards with killable per-call timeouts.

Why not ``concurrent.futures.ProcessPoolExecutor``: it cannot kill one hung call (cancelling a running future
does nothing), a dead worker breaks the whole pool, and its timeouts count queue time. This pool is built for
rewards on untrusted model output:

* **Timeouts count from the start of the call.** A worker reports each result the moment it has it; the next
  sample of its chunk starts then, so the deadline is ``result_of_previous + timeout``. Queue time never counts,
  nor does worker start-up (a worker only gets work after it said ``ready``).
* **A hung call costs only itself.** At its deadline the worker is SIGKILLed and replaced; its sample gets
  ``status=timeout``; the rest of its chunk goes back to the front of the queue.
* **Hung calls do not starve the batch.** A call running far longer than its reward usually takes (a
  *straggler*) does not count against the pool size: a spare worker is started so the other samples keep
  flowing, up to ``max_workers`` processes. Stragglers are killed at their deadline, so the spare capacity is
  bounded in time.
* **A dead worker costs only its sample.** ``os._exit``, a segfault or the OOM killer end the worker; the sample
  it was running is retried once on a fresh worker (a dead process may be an infrastructure accident), and if
  it kills that one too it gets ``status=error`` naming the exit code or signal. Deterministic exceptions and
  timeouts are never retried: they would fail the same way again.
* **Dispatch in chunks** sized to the backlog, so inter-process overhead stays small next to the work.
* **No process is left behind:** workers are killed on :meth:`ProcessPool.close`, at interpreter exit, and by
  the kernel if the parent dies (``PR_SET_PDEATHSIG``).

Workers are started with the ``forkserver`` method by default (fork from a clean, preloaded server: no threads or
CUDA state inherited, and a replacement starts in milliseconds).
"""

from __future__ import annotations

import atexit
import itertools
import logging
import multiprocessing as mp
import pickle
import signal
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import Enum
from multiprocessing.connection import Connection, wait
from typing import Any

from rewardflow.errors import ConfigError, EngineClosedError
from rewardflow.executors.worker import worker_main
from rewardflow.reward import Reward
from rewardflow.types import RewardResult, Sample, Status

__all__ = ["PoolStats", "ProcessPool"]

logger = logging.getLogger(__name__)

_MIN_STRAGGLER_S = 0.25
_LATENCY_WINDOW = 512


class PoolState(str, Enum):
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


@dataclass(slots=True)
class _Task:
    future: Future[RewardResult]
    reward_id: str
    sample: Sample
    timeout: float | None
    attempts: int = 0


@dataclass(slots=True)
class _Worker:
    proc: Any
    conn: Connection
    ready: bool = False
    chunk: list[_Task] = field(default_factory=list)
    chunk_id: int = -1
    position: int = 0  # index in chunk of the call now running
    started: float = 0.0  # monotonic start of the call now running
    cancel_from: int | None = None  # chunk[cancel_from:] was handed to other workers

    @property
    def busy(self) -> bool:
        return self.position < len(self.chunk)

    @property
    def current(self) -> _Task:
        return self.chunk[self.position]


_LIVE_POOLS: weakref.WeakSet[ProcessPool] = weakref.WeakSet()


def _close_all_at_exit() -> None:
    for pool in list(_LIVE_POOLS):
        pool.close(wait=False)


atexit.register(_close_all_at_exit)


class ProcessPool:
    """Worker processes for sync rewards; see the module docstring for the guarantees."""

    def __init__(
        self,
        rewards: Mapping[str, Reward],
        *,
        workers: int = 2,
        max_workers: int | None = None,
        retries: int = 1,
        max_chunk: int = 64,
        start_method: str = "forkserver",
        preload: Sequence[str] = (),
    ) -> None:
        if workers < 1:
            raise ConfigError(f"workers must be >= 1, got {workers}")
        if retries < 0:
            raise ConfigError(f"retries must be >= 0, got {retries}")
        self.workers = workers
        self.max_workers = max_workers if max_workers is not None else 4 * workers
        if self.max_workers < workers:
            raise ConfigError("max_workers must be >= workers")
        self.retries = retries
        self.max_chunk = max_chunk
        self.stats = PoolStats()
        try:
            self._blob = pickle.dumps(dict(rewards))
        except Exception as exc:
            names = ", ".join(rewards)
            raise ConfigError(
                f"reward(s) {names} cannot be sent to worker processes ({type(exc).__name__}: {exc}). "
                "Define rewards as module-level functions or picklable class instances, or use kind='inline'."
            ) from exc
        self._ctx = mp.get_context(start_method)
        modules = {"rewardflow.executors.worker", *preload}
        modules.update(m for rw in rewards.values() if (m := getattr(rw.fn, "__module__", None)) and m != "__main__")
        self._preload = sorted(modules)
        self._lock = threading.Lock()
        self._pending: deque[_Task] = deque()
        self._workers: list[_Worker] = []
        self._latency_ring: dict[str, deque[float]] = {rid: deque(maxlen=_LATENCY_WINDOW) for rid in rewards}
        self._wake_r, self._wake_w = mp.Pipe(duplex=False)
        self._state = PoolState.NEW
        self._thread: threading.Thread | None = None
        self._ids = itertools.count()
        self._start_failures = 0

    # ------------------------------------------------------------------ public API

    def submit(self, reward_id: str, samples: Sequence[Sample], timeout: float | None) -> list[Future[RewardResult]]:
        """Queue samples for one reward; returns one future per sample, in order. Never raises per sample."""
        tasks = [_Task(Future(), reward_id, s, timeout) for s in samples]
        with self._lock:
            if self._state is PoolState.CLOSED:
                raise EngineClosedError("the process pool is closed")
            if reward_id not in self._latency_ring:
                raise ConfigError(f"reward {reward_id!r} is not registered with this pool")
            self._pending.extend(tasks)
            if self._state is PoolState.NEW:
                self._start()
        self._wake()
        return [t.future for t in tasks]

    def close(self, wait: bool = True) -> None:
        """Kill every worker and fail queued samples with :class:`EngineClosedError`. Idempotent."""
        with self._lock:
            if self._state is PoolState.CLOSED:
                return
            started = self._state is PoolState.RUNNING
            self._state = PoolState.CLOSED
        if started:
            self._wake()
            if wait and self._thread is not None and self._thread is not threading.current_thread():
                self._thread.join(timeout=10)
        self._shutdown_workers()
        _LIVE_POOLS.discard(self)

    def __enter__(self) -> ProcessPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pids(self) -> list[int]:
        """PIDs of the live worker processes (for tests and monitoring)."""
        return [w.proc.pid for w in list(self._workers) if w.proc.pid is not None]

    # ------------------------------------------------------------------ internals

    def _start(self) -> None:
        if self._ctx.get_start_method() == "forkserver":
            self._ctx.set_forkserver_preload(self._preload)
        self._state = PoolState.RUNNING
        _LIVE_POOLS.add(self)
        self._thread = threading.Thread(target=self._run, name="rewardflow-pool", daemon=True)
        self._thread.start()

    def _wake(self) -> None:
        try:
            self._wake_w.send_bytes(b"")
        except OSError:
            pass

    def _spawn(self) -> _Worker:
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=worker_main, args=(child, self._blob), name=f"rewardflow-worker-{next(self._ids)}", daemon=True
        )
        proc.start()
        child.close()
        worker = _Worker(proc, parent)
        self._workers.append(worker)
        self.stats.spawned += 1
        return worker

    def _run(self) -> None:
        try:
            self._loop()
        except Exception:  # pragma: no cover - a bug here must not leave callers waiting forever
            logger.exception("rewardflow process pool dispatcher crashed")
            self._fail_pending(EngineClosedError("the process pool dispatcher crashed; see the log"))
            self._shutdown_workers()

    def _loop(self) -> None:
        while True:
            with self._lock:
                closed = self._state is PoolState.CLOSED
            if closed:
                self._fail_pending(EngineClosedError("the process pool was closed"))
                return
            self._steal_from_stragglers(time.monotonic())
            self._ensure_capacity()
            self._dispatch()
            now = time.monotonic()
            timeout = self._next_deadline(now)
            waitables: list[Any] = [self._wake_r]
            for w in self._workers:
                waitables.append(w.conn)
                waitables.append(w.proc.sentinel)
            ready = wait(waitables, timeout=timeout)
            if self._wake_r in ready:
                while self._wake_r.poll():
                    self._wake_r.recv_bytes()
            for w in list(self._workers):
                if w.conn in ready:
                    self._drain(w)
            for w in list(self._workers):
                if w.proc.sentinel in ready and w in self._workers:
                    self._drain(w)
                    if w in self._workers:
                        self._on_death(w)
            self._check_deadlines(time.monotonic())

    def _drain(self, w: _Worker) -> None:
        """Read every message the worker has sent; a broken pipe means it died."""
        try:
            while w.conn.poll():
                message = w.conn.recv()
                self._on_message(w, message)
        except (EOFError, OSError):
            if w in self._workers:
                self._on_death(w)

    def _on_message(self, w: _Worker, message: Any) -> None:
        now = time.monotonic()
        if message[0] == "ready":
            w.ready = True
            return
        if message[0] == "init-error":
            reason = f"worker could not load the rewards: {message[1]}"
            self._retire(w, kill=True)
            self._fail_pending_with_result(RewardResult(None, Status.ERROR, reason))
            return
        if message[0] == "abandoned":
            _, chunk_id, index = message
            if chunk_id == w.chunk_id and index >= 0:
                w.chunk = w.chunk[:index]
            if chunk_id == w.chunk_id and not w.busy:
                self._idle(w)
            return
        chunk_id, index, result = message
        if chunk_id != w.chunk_id:  # cannot happen with the sequential protocol; never misattribute
            logger.warning("stale result from worker %s ignored", w.proc.pid)
            return
        task = w.chunk[index]
        self._latency_ring[task.reward_id].append(result.latency)
        self._resolve(task, result)
        w.position = index + 1
        w.started = now
        if not w.busy:
            self._idle(w)

    def _idle(self, w: _Worker) -> None:
        w.chunk = []
        w.position = 0
        w.cancel_from = None
        if self._idle_surplus():
            self._retire(w, kill=False)

    def _resolve(self, task: _Task, result: RewardResult) -> None:
        self.stats.completed += 1
        if not task.future.done():
            task.future.set_result(result)

    def _requeue_rest(self, w: _Worker, skip_current: bool) -> None:
        end = w.cancel_from if w.cancel_from is not None else len(w.chunk)  # beyond it: already handed over
        rest = [t for t in w.chunk[w.position + (1 if skip_current else 0) : end] if not t.future.done()]
        with self._lock:
            self._pending.extendleft(reversed(rest))
        w.chunk = []
        w.position = 0
        w.cancel_from = None

    def _steal_from_stragglers(self, now: float) -> None:
        """Hand the unstarted rest of a straggler's chunk to other workers, and tell the straggler to drop it."""
        for w in self._workers:
            if not w.busy or w.cancel_from is not None or w.position + 1 >= len(w.chunk):
                continue
            if now - w.started < self._straggler_threshold(w.current):
                continue
            try:
                w.conn.send(("cancel", w.chunk_id))
            except OSError:
                continue  # it died; the sentinel will report it
            w.cancel_from = w.position + 1
            rest = [t for t in w.chunk[w.cancel_from :] if not t.future.done()]
            with self._lock:
                self._pending.extendleft(reversed(rest))

    def _on_death(self, w: _Worker) -> None:
        w.proc.join(timeout=1.0)
        code = w.proc.exitcode
        if not w.ready:
            # Died before saying ready: the worker cannot start at all (bad environment, unimportable main).
            self._start_failures += 1
            self._retire(w, kill=True)
            if self._start_failures >= 3:
                reason = f"worker processes fail to start ({_describe_exit(code)}); see the log for the traceback"
                self._fail_pending_with_result(RewardResult(None, Status.ERROR, reason))
            return
        self._start_failures = 0
        if w.busy:
            task = w.current
            task.attempts += 1
            how = _describe_exit(code)
            if task.attempts <= self.retries:
                self.stats.retried += 1
                logger.warning("reward worker %s %s; retrying its sample on a fresh worker", w.proc.pid, how)
                self._requeue_rest(w, skip_current=False)
            else:
                reason = f"worker process {how} while scoring this sample (tried {task.attempts} times)"
                self._resolve(task, RewardResult(None, Status.ERROR, reason, latency=time.monotonic() - w.started))
                self._requeue_rest(w, skip_current=True)
        self.stats.died += 1
        self._retire(w, kill=True)

    def _check_deadlines(self, now: float) -> None:
        for w in list(self._workers):
            if not w.busy:
                continue
            task = w.current
            if task.timeout is not None and now - w.started >= task.timeout:
                self._drain(w)  # a result may have arrived in the meantime
                if w not in self._workers or not w.busy or w.current is not task:
                    continue
                self.stats.killed_timeout += 1
                reason = f"timed out after {task.timeout:g}s (worker killed and replaced)"
                self._resolve(task, RewardResult(None, Status.TIMEOUT, reason, latency=now - w.started))
                self._requeue_rest(w, skip_current=True)
                self._retire(w, kill=True)

    def _next_deadline(self, now: float) -> float | None:
        deadlines: list[float] = []
        for w in self._workers:
            if w.busy:
                task = w.current
                if task.timeout is not None:
                    deadlines.append(w.started + task.timeout)
                threshold = self._straggler_threshold(task)
                if now - w.started < threshold:
                    deadlines.append(w.started + threshold)
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - now)

    def _straggler_threshold(self, task: _Task) -> float:
        """How long a call may run before it stops counting against the pool size."""
        ring = self._latency_ring[task.reward_id]
        if len(ring) < 16:
            base = task.timeout / 2 if task.timeout is not None else float("inf")
            return max(_MIN_STRAGGLER_S, base)
        ordered = sorted(ring)
        p90 = ordered[int(0.9 * (len(ordered) - 1))]
        return max(_MIN_STRAGGLER_S, 20.0 * p90)

    def _healthy(self, now: float) -> int:
        """Workers that count against the pool size: starting, idle, or busy with a call of normal length."""
        count = 0
        for w in self._workers:
            if not w.busy or now - w.started < self._straggler_threshold(w.current):
                count += 1
        return count

    def _ensure_capacity(self) -> None:
        with self._lock:
            backlog = len(self._pending)
        now = time.monotonic()
        healthy = self._healthy(now)
        while healthy < self.workers and len(self._workers) < self.max_workers:
            # Always keep `workers` processes ready; beyond that only when there is work to do.
            if len(self._workers) >= self.workers and backlog == 0:
                break
            try:
                self._spawn()
            except Exception as exc:  # e.g. a script without `if __name__ == "__main__":` under forkserver/spawn
                logger.exception("could not start a reward worker process")
                reason = (
                    f"worker processes could not be started ({type(exc).__name__}: {str(exc).strip()[:200]}); "
                    "scripts that use process rewards need an `if __name__ == '__main__':` guard"
                )
                self._fail_pending_with_result(RewardResult(None, Status.ERROR, reason))
                break
            healthy += 1

    def _idle_surplus(self) -> bool:
        """Whether an idle worker may exit: spares go once the stragglers they stood in for are gone."""
        if len(self._workers) <= self.workers:
            return False
        with self._lock:
            backlog = len(self._pending)
        return backlog == 0 or self._healthy(time.monotonic()) > self.workers

    def _dispatch(self) -> None:
        for w in self._workers:
            if not w.ready or w.busy:
                continue
            with self._lock:
                if not self._pending:
                    return
                idle = sum(1 for x in self._workers if x.ready and not x.busy)
                size = max(1, min(self.max_chunk, len(self._pending) // (4 * max(idle, self.workers)) or 1))
                first = self._pending[0].reward_id
                chunk: list[_Task] = []
                while self._pending and len(chunk) < size and self._pending[0].reward_id == first:
                    task = self._pending.popleft()
                    if task.future.done():  # cancelled by the caller
                        continue
                    chunk.append(task)
            if not chunk:
                continue
            try:
                chunk_id = next(self._ids)
                w.conn.send(("run", chunk_id, first, [(i, t.sample) for i, t in enumerate(chunk)]))
            except (OSError, EOFError, pickle.PicklingError, TypeError, AttributeError) as exc:
                if isinstance(exc, (OSError, EOFError)):
                    with self._lock:
                        self._pending.extendleft(reversed(chunk))
                    continue
                for t in chunk:
                    self._resolve(t, RewardResult(None, Status.ERROR, f"sample cannot be sent to a worker: {exc}"))
                continue
            w.chunk = chunk
            w.chunk_id = chunk_id
            w.position = 0
            w.cancel_from = None
            w.started = time.monotonic()

    def _retire(self, w: _Worker, kill: bool) -> None:
        if w in self._workers:
            self._workers.remove(w)
        try:
            if kill:
                w.proc.kill()
            else:
                w.conn.send(None)
        except (OSError, ValueError):
            pass
        w.proc.join(timeout=2.0 if kill else 0.5)
        if w.proc.is_alive():
            w.proc.kill()
            w.proc.join(timeout=2.0)
        w.conn.close()

    def _fail_pending(self, exc: Exception) -> None:
        with self._lock:
            tasks = list(self._pending)
            self._pending.clear()
        for w in self._workers:
            tasks.extend(t for t in w.chunk[w.position :] if not t.future.done())
            w.chunk = []
        for t in tasks:
            if not t.future.done():
                t.future.set_exception(exc)

    def _fail_pending_with_result(self, result: RewardResult) -> None:
        with self._lock:
            tasks = list(self._pending)
            self._pending.clear()
        for t in tasks:
            self._resolve(t, result)

    def _shutdown_workers(self) -> None:
        for w in list(self._workers):
            self._retire(w, kill=True)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "stopped responding"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"died (killed by {name})"
    return f"died (exit code {code})"
