"""rewardflow: the reward layer for RL post-training of LLMs.

One contract (any callable, sync or async, AReaL's signature included), typed results that never disguise a
failure as a 0, and an engine that runs each kind of reward the right way: rule rewards in killable worker
processes, LLM judges natively async, reward models batched and offloaded.
"""

from __future__ import annotations

from rewardflow.engine import Component, Engine
from rewardflow.errors import (
    ConfigError,
    EngineClosedError,
    InputError,
    JudgeError,
    MissingDependencyError,
    ModelError,
    RewardFailedError,
    RewardflowError,
    UndecidedError,
    UnknownRewardError,
)
from rewardflow.registry import register, resolve
from rewardflow.reward import Kind, Reward, reward
from rewardflow.spec import RewardSpec, Spec, load_spec
from rewardflow.types import RewardResult, Sample, Score, Status

__version__ = "0.1.0"

__all__ = [
    "Component",
    "ConfigError",
    "Engine",
    "EngineClosedError",
    "InputError",
    "JudgeError",
    "Kind",
    "MissingDependencyError",
    "ModelError",
    "Reward",
    "RewardFailedError",
    "RewardResult",
    "RewardSpec",
    "RewardflowError",
    "Sample",
    "Score",
    "Spec",
    "Status",
    "UndecidedError",
    "UnknownRewardError",
    "__version__",
    "load_spec",
    "register",
    "resolve",
    "reward",
]
