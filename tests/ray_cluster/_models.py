"""Model-like batch callables for the RayModel tests (imported by reference inside the actor)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

from rewardflow.reward import Kind, RewardOptions


class LengthModel:
    """Stands in for a reward model: one call per batch; "hang" never returns (a stuck forward pass)."""

    __rewardflow__ = RewardOptions(name="length_model", kind=Kind.BATCH)

    def __init__(self, scale: float) -> None:
        self.scale = scale
        self.pid = os.getpid()
        self.calls = 0

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        self.calls += 1
        if "hang" in completions:
            time.sleep(3600)
        return [self.scale * len(c) for c in completions]


async def async_judge(prompt: str, completion: str) -> float:
    """Stands in for a judge: per sample, async."""
    return 1.0 if completion.endswith("4") else 0.0
