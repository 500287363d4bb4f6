"""Module-level rewards for tests that need worker processes (pickled by reference into workers)."""

from __future__ import annotations

import ctypes
import os
import time
from pathlib import Path
from typing import Any


def length_reward(completion: str) -> float:
    return float(len(completion))


def sleepy(completion: str, **_: Any) -> float:
    """Sleeps for the number of seconds written in the completion ("sleep 0.5"), then scores 1."""
    if completion.startswith("sleep "):
        time.sleep(float(completion.split()[1]))
    return 1.0


def hang_or_score(completion: str) -> float:
    if completion == "hang":
        while True:  # a busy hang, like a runaway sympy computation
            pass
    return 1.0


def hang_marker_or_score(completion: str, marker_dir: str) -> float:
    """Like :func:`hang_or_score`, but a hang first records when it started (CLOCK_MONOTONIC, shared by processes)."""
    if completion == "hang":
        Path(marker_dir, f"{os.getpid()}-{time.monotonic_ns()}").write_text(repr(time.monotonic()))
        while True:
            pass
    return 1.0


def crashes(completion: str) -> float:
    if completion == "exit":
        os._exit(3)
    if completion == "segfault":
        ctypes.string_at(0)
    if completion == "memory":
        raise MemoryError("simulated allocation failure")
    if completion == "raise":
        raise ValueError("deterministic failure")
    return 1.0


def counting(completion: str, counter_dir: str) -> float:
    """Records one file per call in counter_dir, then fails deterministically for 'raise'."""
    Path(counter_dir, f"{os.getpid()}-{time.monotonic_ns()}").touch()
    if completion == "raise":
        raise RuntimeError("always fails")
    if completion.startswith("sleep "):
        time.sleep(float(completion.split()[1]))
    return 1.0


def report_pid(completion: str) -> float:
    """First call: write the worker pid to the path in the completion and sleep (the test kills the worker).
    A retry finds the file and scores 1 at once."""
    path = Path(completion)
    if path.exists():
        return 1.0
    path.write_text(str(os.getpid()))
    time.sleep(30)
    return 1.0


def areal_positional(prompt, completions, prompt_ids, completion_ids, **data):
    """AReaL's signature, with AReaL's parameter names."""
    return float(completions.strip() == str(data["answer"]))


def thread_env(completion: str) -> float:
    """The worker's thread cap for numeric libraries: the named variable, or -1 when it is unset."""
    return float(os.environ.get(completion, "-1"))


def torch_threads(completion: str) -> float:
    """torch's intra-op thread count in the worker, torch imported on the first call (the usual lazy case)."""
    import torch

    return float(torch.get_num_threads())


_exit_marker_registered = False


def exit_marker(completion: str, marker_dir: str) -> float:
    """Registers (once per worker) an exit handler that writes a file; scores the worker's pid, or hangs."""
    global _exit_marker_registered
    if not _exit_marker_registered:
        from multiprocessing import util

        util.Finalize(None, Path(marker_dir, str(os.getpid())).touch, exitpriority=10)
        _exit_marker_registered = True
    if completion == "hang":
        Path(marker_dir, "running").touch()
        time.sleep(60)
    return float(os.getpid())
