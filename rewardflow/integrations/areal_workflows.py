"""AReaL's built-in workflows with their rewards run through rewardflow, importable by string path.

AReaL's workflows build AReaL's own ``AsyncRewardWrapper`` inside their constructors. Replacing that name in
the training script does not reach AReaL's default single-controller mode: there the rollout controller sends
the workflow as an import path plus JSON-serialisable ``workflow_kwargs`` to separate rollout worker
processes, and each worker imports and builds it (``RolloutController._resolve_workflow_str`` and
``RemoteInfEngine._resolve_workflow`` in areal 1.0.4). A patch made in the driver never runs there. These
subclasses are what the workers import instead::

    workflow="rewardflow.integrations.areal_workflows.RLVRWorkflow",
    workflow_kwargs=dict(reward_fn="my_project.rewards.gsm8k_reward", gconfig=..., tokenizer=...)

Each class takes exactly AReaL's arguments (passed through unchanged, so it follows AReaL's signature) plus
``reward_timeout_seconds``, ``reward_max_workers`` and ``reward_max_retries`` for
:class:`~rewardflow.integrations.areal.AsyncRewardWrapper`. ``reward_fn`` may be a function, an import path
string (what single-controller mode needs, since a function cannot cross the RPC), a rewardflow reward name,
or the path of a rewardflow spec file (``"/abs/path/spec.yaml"``).

Every score's components go to AReaL's stats tracker next to AReaL's own ``reward`` (scope ``rollout``, or
``eval-rollout``), as ``rewardflow/<component>``, and each failed sample adds ``rewardflow/failed = 1``; AReaL's
``StatsLogger`` exports them with the rest (console, wandb, TensorBoard).

What a failed sample becomes is AReaL's doing, not ours: the :class:`~rewardflow.errors.RewardFailedError`
leaves ``arun_episode``; with ``n_samples > 1`` it ends the whole group (see :mod:`rewardflow.integrations.areal`).

This module imports AReaL (it subclasses its workflows), so it is only importable where areal is installed;
the rest of rewardflow never imports it. Covered: ``RLVRWorkflow``, ``VisionRLVRWorkflow`` and
``MultiTurnWorkflow``. Not covered: the agent workflows (``areal.workflow.openai`` and friends), which build a
wrapper inside their own ``run``; wrap their reward with ``AsyncRewardWrapper`` in your agent instead.
"""

from __future__ import annotations

from typing import Any

from areal import workflow_context
from areal.utils import stats_tracker
from areal.workflow import multi_turn as _multi_turn
from areal.workflow import rlvr as _rlvr
from areal.workflow import vision_rlvr as _vision_rlvr

from rewardflow.integrations.areal import AsyncRewardWrapper
from rewardflow.types import RewardResult

__all__ = ["MultiTurnWorkflow", "RLVRWorkflow", "VisionRLVRWorkflow", "log_to_areal_stats"]

# Given to AReaL's constructor in place of the reward: RLVR treats a string reward as "import it on the first
# episode", so it builds no wrapper of its own; the real reward is installed right after.
_DEFERRED = "rewardflow.integrations.areal_workflows._deferred"


class _RewardflowRewards:
    """Mixin: AReaL's workflow constructor, same arguments plus the reward options; then rewardflow's wrapper is
    installed as the workflow's reward. First in each workflow's bases, so ``super()`` is AReaL's class."""

    def __init__(
        self,
        reward_fn: Any,
        *args: Any,
        reward_timeout_seconds: float | None = 15,
        reward_max_workers: int | None = None,
        reward_max_retries: int = 3,
        **kwargs: Any,
    ) -> None:
        super().__init__(_DEFERRED, *args, **kwargs)
        self._install_reward(reward_fn, reward_timeout_seconds, reward_max_workers, reward_max_retries)

    def _install_reward(self, reward_fn: Any, timeout_seconds: float | None, max_workers: int | None, retries: int):
        wrapper = AsyncRewardWrapper(
            reward_fn,
            timeout_seconds=timeout_seconds,
            max_workers=max_workers,
            max_retries=retries,
            on_result=log_to_areal_stats,
        )
        self.async_reward_fn = wrapper
        # AReaL re-imports a *string* ``reward_fn`` on the first episode and wraps it with its own wrapper; keeping
        # the wrapper object here (not a string) turns that branch off.
        self.reward_fn = wrapper


def log_to_areal_stats(result: RewardResult) -> None:
    """Record a result's components (or its failure) in AReaL's stats tracker, in the current rollout scope."""
    stats = {f"rewardflow/{name}": float(v) for name, v in result.components.items() if v is not None}
    if not result.ok:
        stats = {"rewardflow/failed": 1.0}
    if stats:
        stats_tracker.get(workflow_context.stat_scope()).scalar(**stats)


class RLVRWorkflow(_RewardflowRewards, _rlvr.RLVRWorkflow):
    """``areal.workflow.rlvr.RLVRWorkflow`` scoring through rewardflow; same arguments, plus the reward options."""


class VisionRLVRWorkflow(_RewardflowRewards, _vision_rlvr.VisionRLVRWorkflow):
    """``areal.workflow.vision_rlvr.VisionRLVRWorkflow`` scoring through rewardflow (keyword call, as AReaL's)."""


class MultiTurnWorkflow(_RewardflowRewards, _multi_turn.MultiTurnWorkflow):
    """``areal.workflow.multi_turn.MultiTurnWorkflow`` scoring through rewardflow.

    AReaL's constructor builds its own wrapper around whatever it is given (it starts no process until called);
    that wrapper is replaced before any episode runs. A failed turn ends the episode (and its group) instead of
    counting as a wrong answer that triggers another turn.
    """
