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
