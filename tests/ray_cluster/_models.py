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


class AsyncJudge:
    """Stands in for a judge: built from its settings, then called per sample, async."""

    def __init__(self, expected: str) -> None:
        self.expected = expected

    async def __call__(self, prompt: str, completion: str) -> float:
        return 1.0 if completion.endswith(self.expected) else 0.0
