"""Rewards for the server tests, importable by the server's worker processes (module-level, by reference)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rewardflow.reward import reward


def row_id(completion: str, id: Any) -> float:
    """The row's ``id`` column as the reward: a reply proves which row it belongs to."""
    if completion == "raise":
        raise ValueError("deterministic failure")
    return float(id)


@reward(kind="batch")
def slow_batch(completions: Sequence[str]) -> list[float]:
    """A stand-in for a reward model: a fixed cost per call (a forward pass), so concurrent calls pile up.

    ``SLOW_BATCH_LOG`` names a file that gets one line per successful call with the call's size; a batch
    holding the completion "boom" raises.
    """
    time.sleep(0.05)
    if "boom" in completions:
        raise ValueError("boom in the batch")
    log = os.environ.get("SLOW_BATCH_LOG")
    if log:
        with Path(log).open("a") as f:
            f.write(f"{len(completions)}\n")
    return [float(len(c)) for c in completions]


def row_id_slow(completion: str, id: Any) -> float:
    """``row_id`` with a 5 ms cost per call, so a run of a few thousand rows lasts long enough to be disturbed."""
    time.sleep(0.005)
    return float(id)


def row_id_wait(completion: str, id: Any) -> float:
    """``row_id`` that sleeps when the completion is ``"sleep <seconds>"``: one slow sample among fast ones."""
    if completion.startswith("sleep "):
        time.sleep(float(completion.split()[1]))
    return row_id(completion, id)
