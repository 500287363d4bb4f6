"""The code that runs inside a reward worker process.

Kept apart from the pool so the forkserver can preload it cheaply. Protocol, chosen to keep the parent's
per-sample cost small (on 2 cores the parent's CPU is the second core's budget):

* The parent sends a chunk of samples: ``("run", chunk_id, reward_id, [(index, sample), ...])``.
* Before each call the worker writes ``(chunk_id, index, start_time)`` into a shared-memory slot (three
  doubles, no lock, no message). The parent reads that slot to count a timeout from the start of the call and to
  know which sample a hung or dead worker was on. ``start_time`` is CLOCK_MONOTONIC, shared by all processes.
* Results are sent in batches ``(chunk_id, [(index, result), ...])``: at the end of a chunk, whenever the oldest
  unsent result is 1 ms old, and at once after any non-ok result (so an exception is reported before anything
  else can hang and is never run twice). If a later call hangs, ok results younger than 1 ms are lost with the
  killed worker and recomputed elsewhere.
* Before each call the worker checks for ``("cancel", chunk_id)``: the parent hands the rest of a straggler's
  chunk to other workers and the worker answers ``("abandoned", chunk_id, index)`` with where it stopped.

Each worker caps the thread pools of numeric libraries (OpenMP, MKL, OpenBLAS, torch) at its share of the CPUs,
unless the user set them: N workers that each start one thread per CPU oversubscribe the machine N-fold, and
OpenMP's spinning threads then slow a torch reward 3-15x (measured in bench/p4: 160-910 ms instead of 60 ms
per MiniLM forward pass with 2 workers on 2 cores).

The worker ignores SIGINT (Ctrl-C is the parent's to handle; the parent then kills its workers) and asks the
kernel to SIGKILL it when its parent dies (Linux ``PR_SET_PDEATHSIG``), so a hung reward cannot outlive the
trainer that started it.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import signal
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

from rewardflow.reward import Reward, invoke
from rewardflow.types import RewardResult, Status

_FLUSH_AFTER_S = 0.001

_PR_SET_PDEATHSIG = 1

#: Environment variables read by numeric libraries when they start their thread pools.
THREAD_ENV_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


def limit_threads(threads: int | None) -> None:
    """Cap numeric libraries' thread pools in this process at ``threads`` (``None``: leave them alone).

    Only the variables the user has not set are written, so an explicit ``OMP_NUM_THREADS`` always wins. The
    variables take effect for libraries imported later (the usual case: a reward imports torch or numpy on its
    first call); torch, if a forkserver preload already imported it, is capped directly.
    """
    if threads is None or "OMP_NUM_THREADS" in os.environ:
        return
    for var in THREAD_ENV_VARS:
        os.environ.setdefault(var, str(threads))
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            torch.set_num_threads(threads)
        except (AttributeError, RuntimeError):  # pragma: no cover - a partial or unusual torch
            pass


def _die_with_parent(expected_parent: int) -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - exotic libc
        return
    if os.getppid() != expected_parent:  # parent already gone before prctl took effect
        os._exit(0)


def _release_forkserver() -> None:
    """Close this process's copy of the forkserver's "alive" pipe.

    The forkserver exits when every holder of that pipe is gone, and it hands a copy to each child so children
    could start processes too. Workers never do; if they kept the copy, a SIGKILLed trainer would leave the
    forkserver waiting on its hung workers and the workers (whose death signal is tied to the forkserver) waiting
    on it: both would live forever.
    """
    try:
        from multiprocessing import forkserver

        server = forkserver._forkserver  # type: ignore[attr-defined]
        fd = getattr(server, "_forkserver_alive_fd", None)
        if fd is not None:
            os.close(fd)
            server._forkserver_alive_fd = None
    except (ImportError, AttributeError, OSError):  # pragma: no cover - other start methods / Python internals
        return


def worker_main(conn: Connection, rewards_blob: bytes, slot: Any, threads: int | None = None) -> None:
    """Entry point of a worker process: load the rewards, say ready, then score chunks until told to stop."""
    _die_with_parent(os.getppid())
    _release_forkserver()
    limit_threads(threads)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        rewards: dict[str, Reward] = pickle.loads(rewards_blob)
    except Exception as exc:  # report and exit: the pool turns this into error results
        conn.send(("init-error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", os.getpid()))
    try:
        _serve(conn, rewards, slot)
    except (BrokenPipeError, ConnectionResetError):
        return  # the parent is gone (killed, or stopped by SIGTERM): nobody to report to, no traceback


def _serve(conn: Connection, rewards: dict[str, Reward], slot: Any) -> None:
    send, poll, recv, now = conn.send, conn.poll, conn.recv, time.monotonic
    while True:
        try:
            message: Any = recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        if message[0] == "cancel":  # arrived after the chunk was done: nothing left to abandon
            send(("abandoned", message[1], -1))
            continue
        _, chunk_id, reward_id, items = message
        rw = rewards[reward_id]
        batch: list[tuple[int, RewardResult]] = []
        oldest = 0.0
        for index, sample in items:
            if index and poll():
                control = recv()
                if control is None:
                    return
                if control[1] == chunk_id:  # "cancel": the rest of this chunk went to other workers
                    if batch:
                        send((chunk_id, batch))
                        batch = []
                    send(("abandoned", chunk_id, index))
                    break
            slot[0] = chunk_id
            slot[1] = index
            slot[2] = now()
            result = invoke(rw, sample)
            if not batch:
                oldest = now()
            batch.append((index, result))
            if result.status is not Status.OK or now() - oldest >= _FLUSH_AFTER_S:
                send((chunk_id, batch))
                batch = []
        slot[2] = 0.0
        if batch:
            send((chunk_id, batch))
