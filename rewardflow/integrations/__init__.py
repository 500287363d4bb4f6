"""Adapters that plug rewardflow into training frameworks, each keeping the framework's calling convention.

* :mod:`rewardflow.integrations.areal` — ``AsyncRewardWrapper``, a drop-in for AReaL's wrapper;
* :mod:`rewardflow.integrations.trl` — ``trl_reward``, a reward function for TRL's ``GRPOTrainer``;
* :mod:`rewardflow.integrations.verl` — ``compute_score`` functions for verl's ``custom_reward_function``;
* :mod:`rewardflow.integrations.openrlhf` — ``reward_func`` for OpenRLHF's ``--remote_rm_url``.

None of them imports its framework (none is needed to use or test them); the names below are imported on first
access, so ``import rewardflow.integrations`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["AsyncRewardWrapper", "make_compute_score", "make_reward_func", "trl_reward"]

_LAZY = {
    "AsyncRewardWrapper": "rewardflow.integrations.areal",
    "trl_reward": "rewardflow.integrations.trl",
    "make_compute_score": "rewardflow.integrations.verl",
    "make_reward_func": "rewardflow.integrations.openrlhf",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
