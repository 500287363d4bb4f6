"""Rewards for the real-TRL tests: module-level functions, so worker processes import them by name."""

from __future__ import annotations

import sys
import time


def hang_or_length(completion: str, hang: bool = False, **_: object) -> float:
    """A length score; rows flagged ``hang`` never return (a runaway verifier)."""
    if hang:
        time.sleep(3600)
    return min(len(completion), 20) / 20.0


def trl_in_worker(completion: str) -> float:
    """1.0 if the process scoring this sample has imported trl: a reward worker must not pay for the trainer's
    imports (on rewardflow 0.1 every worker re-ran the training script, and so imported torch and trl)."""
    return float("trl" in sys.modules)


def digits(completion: str) -> float:
    """The fraction of digits in the completion: a cheap rule that varies with random text."""
    return sum(ch.isdigit() for ch in completion) / max(len(completion), 1)
