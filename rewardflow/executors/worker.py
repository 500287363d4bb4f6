"""The code that runs inside a reward worker process.

Kept apart from the pool so the forkserver can preload it cheaply. A worker receives chunks of samples, scores
them one by one, and sends one message per sample *as soon as it is done*. The parent infers that sample k+1
started the moment the result of sample k arrived, which is how timeouts are counted from the start of the
call, not from the time the chunk was queued. Before each sample it checks for a ``cancel`` from the parent
(sent when this worker is stuck on a straggler and the rest of its chunk was handed to others) and answers
``abandoned`` with the index where it stopped.

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
from multiprocessing.connection import Connection
from typing import Any

from rewardflow.reward import Reward, invoke

_PR_SET_PDEATHSIG = 1


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


def worker_main(conn: Connection, rewards_blob: bytes) -> None:
    """Entry point of a worker process: load the rewards, say ready, then score chunks until told to stop."""
    _die_with_parent(os.getppid())
    _release_forkserver()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        rewards: dict[str, Reward] = pickle.loads(rewards_blob)
    except Exception as exc:  # report and exit: the pool turns this into error results
        conn.send(("init-error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", os.getpid()))
    send, poll, recv = conn.send, conn.poll, conn.recv
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
        for index, sample in items:
            if index and poll():
                control = recv()
                if control is None:
                    return
                if control[1] == chunk_id:
                    # "cancel": the parent moved the rest of this chunk to other workers (we were a straggler)
                    send(("abandoned", chunk_id, index))
                    break
            send((chunk_id, index, invoke(rw, sample)))
