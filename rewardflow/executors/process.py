"""A process pool for sync rewards with killable per-call timeouts.

Why not ``concurrent.futures.ProcessPoolExecutor``: it cannot kill one hung call (cancelling a running future
does nothing), a dead worker breaks the whole pool, and its timeouts count queue time. This pool is built for
rewards on untrusted model output:

* **Timeouts count from the start of the call.** Each worker publishes which sample it is on and since when in
  a shared-memory slot (see :mod:`rewardflow.executors.worker`); the deadline is ``start + timeout``. Queue time
  never counts, nor does worker start-up (a worker only gets work after it said ``ready``).
* **A hung call costs only itself.** At its deadline the worker is SIGKILLed and replaced; its sample gets
  ``status=timeout``; the rest of its chunk goes back to the front of the queue.
* **Hung calls do not starve the batch.** A call running far longer than its reward usually takes (a
  *straggler*: 20x the p90 latency, at least 0.25 s; for a fresh worker's first call, which may be paying for
  lazy imports, at least 2 s or half the timeout) stops counting against the pool size: the unstarted rest of
  its chunk is handed to other workers and a spare worker is started, up to ``max_workers`` processes.
  Stragglers are killed at their deadline, so the spare capacity is bounded in time.
* **A dead worker costs only its sample.** ``os._exit``, a segfault or the OOM killer end the worker; the sample
  it was running is retried once on a fresh worker (a dead process may be an infrastructure accident), and if
  it kills that one too it gets ``status=error`` naming the exit code or signal. Deterministic exceptions and
  timeouts are never retried: they would fail the same way again.
* **Low overhead:** chunks sized to the backlog go out in one message; results come back in batches.
* **No oversubscription:** each worker caps OpenMP/BLAS/torch threads at ``cpus // workers`` (at least 1) unless
  the user set ``OMP_NUM_THREADS``; ``worker_threads`` overrides the share, ``0`` turns the cap off.
* **No process is left behind:** on :meth:`ProcessPool.close` and at interpreter exit, idle workers are asked to
  exit (so their exit handlers run) and busy ones are killed, as is any worker still alive 0.5 s later; the
  kernel kills them if the parent dies (``PR_SET_PDEATHSIG``).

Workers are started with the ``forkserver`` method by default (fork from a clean, preloaded server: no threads or
CUDA state inherited, and a replacement starts in milliseconds). A worker does not re-run the caller's main
script (and so does not re-import torch or the trainer) unless a reward is defined in it, and then the script runs
once, in the forkserver (:mod:`rewardflow.executors._forkserver`). Scripts using it need the usual
``if __name__ == "__main__":`` guard, as with any multiprocessing code.
"""

from __future__ import annotations

import atexit
import ctypes
import itertools
import logging
import multiprocessing as mp
import os
import pickle
import selectors
import signal
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from rewardflow.errors import ConfigError, EngineClosedError
from rewardflow.executors._forkserver import MAIN_ENV, describe_main
from rewardflow.executors.base import Batch, PoolState, PoolStats, StartsOnFirstUse, Task, new_batch
from rewardflow.executors.worker import worker_main
from rewardflow.reward import Reward
from rewardflow.types import RewardResult, Sample, Status

__all__ = ["Batch", "PoolStats", "ProcessPool"]

logger = logging.getLogger(__name__)

_MIN_STRAGGLER_S = 0.25
_STRAGGLER_FACTOR = 20.0
_FIRST_CALL_GRACE_S = 2.0
_LATENCY_WINDOW = 512


@dataclass(slots=True)
class _Worker:
    proc: Any
    conn: Connection
    slot: Any  # shared (chunk_id, index, start) written by the worker before each call
    ready: bool = False
    chunk: list[Task] = field(default_factory=list)
    chunk_id: int = -1
    received: int = 0  # results received for the current chunk
    completed: int = 0  # results received over the worker's life (its first call may pay for lazy imports)
    cancel_from: int | None = None  # chunk[cancel_from:] was handed to other workers

    @property
    def busy(self) -> bool:
        return self.received < len(self.chunk)

    def running(self) -> tuple[int, float] | None:
        """``(index, start)`` of the call in progress in this worker's current chunk, read consistently.

        The sample may already be resolved (it was handed to another worker that finished first); the call still
        runs here and its deadline still applies.
        """
        slot = self.slot
        first = (slot[0], slot[1], slot[2])
        second = (slot[0], slot[1], slot[2])
        if first != second or int(first[0]) != self.chunk_id or first[2] == 0.0:
            return None
        index = int(first[1])
        if index >= len(self.chunk):
            return None
        return index, first[2]


_LIVE_POOLS: weakref.WeakSet[ProcessPool] = weakref.WeakSet()


def _close_all_at_exit() -> None:
    for pool in list(_LIVE_POOLS):
        pool.close(wait=False)


atexit.register(_close_all_at_exit)


def default_worker_threads(workers: int) -> int:
    """Each worker's share of the CPUs this process may run on, at least one thread."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus // workers)


def _end(workers: Sequence[_Worker], *, kill: bool, grace: float) -> None:
    """Kill the workers, or ask them to exit; kill any still alive ``grace`` seconds later; close their pipes."""
    for w in workers:
        try:
            if kill:
                w.proc.kill()
            else:
                w.conn.send(None)
        except (OSError, ValueError):
            w.proc.kill()
    deadline = time.monotonic() + grace
    for w in workers:
        w.proc.join(timeout=max(0.0, deadline - time.monotonic()))
        if w.proc.is_alive():
            w.proc.kill()
            w.proc.join(timeout=2.0)
        w.conn.close()


class ProcessPool(StartsOnFirstUse):
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
        worker_threads: int | None = None,
    ) -> None:
        if workers < 1:
            raise ConfigError(f"workers must be >= 1, got {workers}")
        if worker_threads is not None and worker_threads < 0:
            raise ConfigError(f"worker_threads must be >= 0, got {worker_threads}")
        if retries < 0:
            raise ConfigError(f"retries must be >= 0, got {retries}")
        self.workers = workers
        self.max_workers = max_workers if max_workers is not None else 4 * workers
        if self.max_workers < workers:
            raise ConfigError("max_workers must be >= workers")
        self.retries = retries
        self.max_chunk = max_chunk
        self.worker_threads = default_worker_threads(workers) if worker_threads is None else worker_threads or None
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
        reward_modules = {getattr(rw.fn, "__module__", None) for rw in rewards.values()}
        modules.update(m for m in reward_modules if m and m != "__main__")
        self._preload = [*sorted(modules), "rewardflow.executors._forkserver"]
        self._main_rewards = "__main__" in reward_modules
        self._lock = threading.Lock()
        self._pending: deque[Task] = deque()
        self._workers: list[_Worker] = []
        self._latency_ring: dict[str, deque[float]] = {rid: deque(maxlen=_LATENCY_WINDOW) for rid in rewards}
        self._thresholds: dict[str, float] = {}
        self._wake_r, self._wake_w = mp.Pipe(duplex=False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._state = PoolState.NEW
        self._what = "process pool"
        self._thread: threading.Thread | None = None
        self._ids = itertools.count()
        self._start_failures = 0

    # ------------------------------------------------------------------ public API

    def submit(self, reward_id: str, samples: Sequence[Sample], timeout: float | None) -> Batch:
        """Queue samples for one reward; ``batch.future`` resolves to one result per sample, in input order.

        Individual samples never raise: every failure is a result. The future fails only if the pool is closed
        or broken while the batch is in flight.
        """
        batch, tasks = new_batch(reward_id, samples, timeout)
        with self._lock:
            if reward_id not in self._latency_ring and self._state is not PoolState.CLOSED:
                raise ConfigError(f"reward {reward_id!r} is not registered with this pool")
            self._ensure_running()
            self._pending.extend(tasks)
        self._wake()
        return batch

    def close(self, wait: bool = True) -> None:
        """Kill every worker and fail queued samples with :class:`EngineClosedError`. Idempotent."""
        with self._lock:
            started = self._mark_closed()
            if started is None:
                return
        if started:
            self._wake()
            if wait and self._thread is not None and self._thread is not threading.current_thread():
                self._thread.join(timeout=10)
        self._shutdown_workers()
        _LIVE_POOLS.discard(self)

    def start(self, wait: float = 120.0) -> bool:
        """Start the worker processes now, without scoring anything; True once ``workers`` of them are ready."""
        with self._lock:
            self._ensure_running()
        self._wake()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if sum(1 for w in list(self._workers) if w.ready) >= self.workers:
                return True
            time.sleep(0.02)
        return False

    def __enter__(self) -> ProcessPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pids(self) -> list[int]:
        """PIDs of the live worker processes (for tests and monitoring)."""
        return [w.proc.pid for w in list(self._workers) if w.proc.pid is not None]

    # ------------------------------------------------------------------ lifecycle

    def _start(self) -> None:
        if self._ctx.get_start_method() == "forkserver":
            # Tell the forkserver (if this call starts it) how to stand in for our __main__: see _forkserver.
            main = describe_main(eager=self._main_rewards)
            if main is None:
                os.environ.pop(MAIN_ENV, None)
            else:
                os.environ[MAIN_ENV] = main
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
        slot = self._ctx.RawArray(ctypes.c_double, 3)
        proc = self._ctx.Process(
            target=worker_main,
            args=(child, self._blob, slot, self.worker_threads),
            name=f"rewardflow-worker-{next(self._ids)}",
            daemon=True,
        )
        proc.start()
        child.close()
        worker = _Worker(proc, parent, slot)
        self._workers.append(worker)
        self._selector.register(parent, selectors.EVENT_READ, worker)
        self._selector.register(proc.sentinel, selectors.EVENT_READ, worker)
        self.stats.spawned += 1
        return worker

    def _detach(self, w: _Worker) -> bool:
        """Forget a worker (the caller ends it); ``False`` if it was already gone."""
        if w not in self._workers:
            return False
        self._workers.remove(w)
        for fileobj in (w.conn, w.proc.sentinel):
            try:
                self._selector.unregister(fileobj)
            except (KeyError, ValueError, OSError):
                pass
        return True

    def _retire(self, w: _Worker, kill: bool) -> None:
        if not self._detach(w):
            return
        _end([w], kill=kill, grace=2.0 if kill else 0.5)

    def _shutdown_workers(self) -> None:
        """Ask idle workers to exit and kill busy ones (their call may be hung); kill what is left after 0.5 s.

        A worker that exits by itself runs its exit handlers, so what its reward created (semaphores, temporary
        files) is cleaned up instead of being reported as leaked by the resource tracker.
        """
        workers = [w for w in list(self._workers) if self._detach(w)]
        _end([w for w in workers if w.busy], kill=True, grace=2.0)
        _end([w for w in workers if not w.busy], kill=False, grace=0.5)

    # ------------------------------------------------------------------ dispatcher loop

    def _run(self) -> None:
        try:
            self._loop()
        except Exception:  # pragma: no cover - a bug here must not leave callers waiting forever
            logger.exception("rewardflow process pool dispatcher crashed")
            with self._lock:
                self._mark_closed()  # later submits fail fast (the engine replaces a closed pool), never hang
            self._fail_pending(EngineClosedError("the process pool dispatcher crashed; see the log"))
            self._shutdown_workers()

    def _loop(self) -> None:
        while True:
            with self._lock:
                closed = self._state is PoolState.CLOSED
            if closed:
                self._fail_pending(EngineClosedError("the process pool was closed"))
                return
            now = time.monotonic()
            self._steal_from_stragglers(now)
            self._ensure_capacity(now)
            self._dispatch()
            events = self._selector.select(self._next_wakeup(time.monotonic()))
            dead: list[_Worker] = []
            for key, _ in events:
                w = key.data
                if w is None:
                    while self._wake_r.poll():
                        self._wake_r.recv_bytes()
                elif key.fileobj is w.conn:
                    self._drain(w)
                else:
                    dead.append(w)
            for w in dead:
                if w in self._workers:
                    self._drain(w)
                    if w in self._workers:
                        self._on_death(w)
            self._check_deadlines(time.monotonic())

    def _drain(self, w: _Worker) -> None:
        """Read every message the worker has sent; a broken pipe means it died."""
        try:
            while w.conn.poll():
                self._on_message(w, w.conn.recv())
                if w not in self._workers:
                    return
        except (EOFError, OSError):
            if w in self._workers:
                self._on_death(w)

    def _on_message(self, w: _Worker, message: Any) -> None:
        kind = message[0]
        if kind == "ready":
            w.ready = True
            self._start_failures = 0
            return
        if kind == "init-error":
            reason = f"worker could not load the rewards: {message[1]}"
            self._retire(w, kill=True)
            self._fail_pending_with_result(RewardResult(None, Status.ERROR, reason))
            return
        if kind == "abandoned":
            _, chunk_id, index = message
            if chunk_id == w.chunk_id:
                if index >= 0:
                    del w.chunk[index:]
                if not w.busy:
                    self._idle(w)
            return
        chunk_id, batch = message
        if chunk_id != w.chunk_id:  # cannot happen with this protocol; never misattribute a result
            logger.warning("stale results from worker %s ignored", w.proc.pid)
            return
        for index, result in batch:
            task = w.chunk[index]
            self._latency_ring[task.reward_id].append(result.latency)
            self._resolve(task, result)
            w.received += 1
            w.completed += 1
        if not w.busy:
            self._idle(w)

    def _idle(self, w: _Worker) -> None:
        w.chunk = []
        w.received = 0
        w.cancel_from = None
        if self._idle_surplus():
            self._retire(w, kill=False)

    def _resolve(self, task: Task, result: RewardResult) -> None:
        if task.batch.set(task.index, result):
            self.stats.completed += 1

    def _requeue_unfinished(self, w: _Worker, skip: int | None) -> None:
        """Put the worker's unresolved samples back at the front of the queue (except index ``skip``)."""
        end = w.cancel_from if w.cancel_from is not None else len(w.chunk)  # beyond it: already handed over
        rest = [t for i, t in enumerate(w.chunk[:end]) if i != skip and not t.done]
        with self._lock:
            self._pending.extendleft(reversed(rest))
        w.chunk = []
        w.received = 0
        w.cancel_from = None

    def _on_death(self, w: _Worker) -> None:
        running = w.running()
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
        self.stats.died += 1
        if running is not None:
            index, started = running
            task = w.chunk[index]
            task.attempts += 1
            how = _describe_exit(code)
            if task.attempts <= self.retries:
                self.stats.retried += 1
                logger.warning("reward worker %s %s; retrying its sample on a fresh worker", w.proc.pid, how)
                self._requeue_unfinished(w, skip=None)
            else:
                reason = f"worker process {how} while scoring this sample (tried {task.attempts} times)"
                self._resolve(task, RewardResult(None, Status.ERROR, reason, latency=time.monotonic() - started))
                self._requeue_unfinished(w, skip=index)
        else:
            self._requeue_unfinished(w, skip=None)
        self._retire(w, kill=True)

    def _check_deadlines(self, now: float) -> None:
        for w in list(self._workers):
            running = w.running() if w.busy else None
            if running is None:
                continue
            index, started = running
            task = w.chunk[index]
            if task.timeout is None or now - started < task.timeout:
                continue
            self._drain(w)  # results sent just before the deadline still count
            if w not in self._workers or w.running() != running:
                continue
            self.stats.killed_timeout += 1
            reason = f"timed out after {task.timeout:g}s (worker killed and replaced)"
            self._resolve(task, RewardResult(None, Status.TIMEOUT, reason, latency=now - started))
            self._requeue_unfinished(w, skip=index)
            self._retire(w, kill=True)

    # ------------------------------------------------------------------ scheduling

    def _straggler_threshold(self, reward_id: str, timeout: float | None) -> float:
        """How long a call may run before it stops counting against the pool size."""
        ring = self._latency_ring[reward_id]
        if len(ring) < 16:
            base = timeout / 2 if timeout is not None else float("inf")
            return max(_MIN_STRAGGLER_S, base)
        if len(ring) % 32 == 0 or reward_id not in self._thresholds:
            ordered = sorted(ring)
            self._thresholds[reward_id] = ordered[int(0.9 * (len(ordered) - 1))]
        return max(_MIN_STRAGGLER_S, _STRAGGLER_FACTOR * self._thresholds[reward_id])

    def _is_straggler(self, w: _Worker, now: float) -> bool:
        running = w.running() if w.busy else None
        if running is None:
            return False
        task = w.chunk[running[0]]
        threshold = self._straggler_threshold(task.reward_id, task.timeout)
        if w.completed == 0 and task.timeout is not None:
            # a fresh worker's first call may be paying for lazy imports: give it a grace period
            threshold = max(threshold, min(task.timeout / 2, _FIRST_CALL_GRACE_S))
        return now - running[1] >= threshold

    def _steal_from_stragglers(self, now: float) -> None:
        """Hand the unstarted rest of a straggler's chunk to other workers, and tell the straggler to drop it."""
        for w in self._workers:
            if w.cancel_from is not None or not self._is_straggler(w, now):
                continue
            running = w.running()
            if running is None or running[0] + 1 >= len(w.chunk):
                continue
            try:
                w.conn.send(("cancel", w.chunk_id))
            except OSError:
                continue  # it died; its sentinel will report it
            w.cancel_from = running[0] + 1
            rest = [t for t in w.chunk[w.cancel_from :] if not t.done]
            with self._lock:
                self._pending.extendleft(reversed(rest))

    def _ensure_capacity(self, now: float) -> None:
        with self._lock:
            backlog = len(self._pending)
        healthy = sum(1 for w in self._workers if not self._is_straggler(w, now))
        while healthy < self.workers and len(self._workers) < self.max_workers:
            # Always keep `workers` processes ready; spares only while there is work waiting.
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
        now = time.monotonic()
        return backlog == 0 or sum(1 for w in self._workers if not self._is_straggler(w, now)) > self.workers

    def _next_wakeup(self, now: float) -> float | None:
        """Seconds until the next deadline or straggler check, ``None`` to wait for messages only."""
        wakeups: list[float] = []
        for w in self._workers:
            if not w.busy:
                continue
            running = w.running()
            if running is None:  # the chunk was just sent, or the worker is between two calls
                wakeups.append(now + 0.002)
                continue
            task = w.chunk[running[0]]
            if task.timeout is not None:
                wakeups.append(running[1] + task.timeout)
            threshold = self._straggler_threshold(task.reward_id, task.timeout)
            if w.cancel_from is None and threshold != float("inf"):  # inf: no timeout and no latencies yet
                wakeups.append(running[1] + threshold)
        if not wakeups:
            return None
        return max(0.001, min(wakeups) - now)

    def _dispatch(self) -> None:
        for w in self._workers:
            if not w.ready or w.busy:
                continue
            with self._lock:
                if not self._pending:
                    return
                idle = sum(1 for x in self._workers if x.ready and not x.busy)
                size = max(1, min(self.max_chunk, len(self._pending) // (4 * max(idle, self.workers))))
                first = self._pending[0].reward_id
                chunk: list[Task] = []
                while self._pending and len(chunk) < size and self._pending[0].reward_id == first:
                    task = self._pending.popleft()
                    if not task.done:  # done: cancelled by the caller, or finished elsewhere
                        chunk.append(task)
            if not chunk:
                continue
            chunk_id = next(self._ids)
            try:
                w.conn.send(("run", chunk_id, first, [(i, t.sample) for i, t in enumerate(chunk)]))
            except (OSError, EOFError):
                with self._lock:
                    self._pending.extendleft(reversed(chunk))
                continue
            except Exception as exc:  # a sample that cannot be pickled
                for t in chunk:
                    self._resolve(t, RewardResult(None, Status.ERROR, f"sample cannot be sent to a worker: {exc}"))
                continue
            w.chunk = chunk
            w.chunk_id = chunk_id
            w.received = 0
            w.cancel_from = None

    def _fail_pending(self, exc: Exception) -> None:
        with self._lock:
            tasks = list(self._pending)
            self._pending.clear()
        for w in self._workers:
            tasks.extend(w.chunk)
            w.chunk = []
        for t in tasks:
            t.batch.fail(exc)

    def _fail_pending_with_result(self, result: RewardResult) -> None:
        with self._lock:
            tasks = list(self._pending)
            self._pending.clear()
        for t in tasks:
            self._resolve(t, result)


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
