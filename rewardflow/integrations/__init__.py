"""Adapters that plug rewardflow into training frameworks, each keeping the framework's calling convention.

* :mod:`rewardflow.integrations.areal` — ``AsyncRewardWrapper``, a drop-in for AReaL's wrapper;
* :mod:`rewardflow.integrations.areal_workflows` — AReaL's workflows using it, by string path (imports areal);
* :mod:`rewardflow.integrations.trl` — ``trl_reward``, a reward function for TRL's ``GRPOTrainer``;
* :mod:`rewardflow.integrations.verl` — ``compute_score`` functions for verl's ``custom_reward_function``;
* :mod:`rewardflow.integrations.openrlhf` — ``reward_func`` for OpenRLHF's ``--reward.remote_url``.

Only ``areal_workflows`` and ``verl_manager`` import their framework (the others need none to be used or tested);
the names below are imported on first access, so ``import rewardflow.integrations`` stays light.
"""

from __future__ import annotations

from rewardflow._lazy import lazy_exports

__all__ = ["AsyncRewardWrapper", "make_compute_score", "make_reward_func", "trl_reward"]

_LAZY = {
    "AsyncRewardWrapper": "rewardflow.integrations.areal",
    "trl_reward": "rewardflow.integrations.trl",
    "make_compute_score": "rewardflow.integrations.verl",
    "make_reward_func": "rewardflow.integrations.openrlhf",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
