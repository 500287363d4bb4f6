"""The training-step hook: score the whole batch with every reward of a spec, then leave the device free.

A trainer calls :func:`score_training_batch` once per step, between rollout and advantage computation::

    results, report = score_training_batch(engine, samples)   # rule + judge + model components together
    rewards = [r.value for r in results]                      # None where a component failed: mask those

The engine scores the batch as usual: rule rewards in worker processes, judges on the event loop, and each
model-based reward (:class:`~rewardflow.models.RewardModel`, :class:`~rewardflow.models.SimilarityReward`) in
one ``batch`` call that onloads, scores the whole batch in micro-batches and offloads. Model components land in
``result.components`` next to the others and are weighted into ``result.value`` like any component.

What the hook adds is the guarantee and the accounting: whatever happened (a reward raised, the engine timed a
model call out, the caller was interrupted), every model reward of the engine is offloaded before the hook
returns or raises, except a model the caller holds on the device with ``with model.onloaded():`` (its
block decides when it leaves). A model call that outlived its engine timeout is waited for, because it still holds the
device. The :class:`TrainingStepReport` gives each model's :class:`~rewardflow.models.ScoreReport` for this
step and CUDA memory before and after (empty on machines without CUDA).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rewardflow.engine import Engine
from rewardflow.models.base import ManagedModel, ModelState, ScoreReport
from rewardflow.models.weights import OffloadMode, device_memory
from rewardflow.types import RewardResult, Sample

__all__ = ["TrainingStepReport", "ascore_training_batch", "model_rewards", "score_training_batch"]


@dataclass(frozen=True)
class TrainingStepReport:
    """What a training step's reward scoring cost, per model, and whether the device was left free."""

    seconds: float
    models: Mapping[str, ScoreReport] = field(default_factory=dict)  # component -> this step's call
    device_memory_before: Mapping[str, int] = field(default_factory=dict)  # CUDA device -> bytes allocated
    device_memory_after: Mapping[str, int] = field(default_factory=dict)
    offloaded: bool = True  # no model reward holds device memory (``none``-mode and held models excepted)

    def to_dict(self) -> dict[str, Any]:
        return {
            "seconds": self.seconds,
            "models": {name: report.to_dict() for name, report in self.models.items()},
            "device_memory_before": dict(self.device_memory_before),
            "device_memory_after": dict(self.device_memory_after),
            "offloaded": self.offloaded,
        }


def model_rewards(engine: Engine) -> list[tuple[str, ManagedModel]]:
    """The engine's model-based components as ``(component name, model)``."""
    return [(c.name, c.reward.fn) for c in engine.components if isinstance(c.reward.fn, ManagedModel)]


def score_training_batch(
    engine: Engine, samples: Iterable[Sample | Mapping[str, Any]]
) -> tuple[list[RewardResult], TrainingStepReport]:
    """Score one training batch with every reward of ``engine``; every model reward is offloaded afterwards."""
    models = model_rewards(engine)
    previous = {name: model.last_report for name, model in models}
    before = _cuda_memory(models)
    start = time.perf_counter()
    try:
        results = engine.score(samples)
    finally:
        for _, model in models:
            if not model.held:  # a caller's onloaded() block keeps its model on the device until it exits
                model.offload()
    return results, _report(models, previous, before, time.perf_counter() - start)


async def ascore_training_batch(
    engine: Engine, samples: Iterable[Sample | Mapping[str, Any]]
) -> tuple[list[RewardResult], TrainingStepReport]:
    """Async :func:`score_training_batch`, for trainers that run an event loop (offloads run in a thread)."""
    models = model_rewards(engine)
    previous = {name: model.last_report for name, model in models}
    before = _cuda_memory(models)
    start = time.perf_counter()
    try:
        results = await engine.ascore(samples)
    finally:
        for _, model in models:
            if not model.held:
                await asyncio.to_thread(model.offload)
    return results, _report(models, previous, before, time.perf_counter() - start)


def _cuda_memory(models: list[tuple[str, ManagedModel]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for _, model in models:
        used = device_memory(model.device)
        if used is not None:
            out[str(model.device)] = used
    return out


def _report(
    models: list[tuple[str, ManagedModel]],
    previous: Mapping[str, ScoreReport | None],
    before: dict[str, int],
    seconds: float,
) -> TrainingStepReport:
    reports = {
        name: model.last_report
        for name, model in models
        if model.last_report is not None and model.last_report is not previous[name]
    }
    offloaded = all(
        m.state is not ModelState.ONLOADED or m.offload_mode is OffloadMode.NONE or m.held for _, m in models
    )
    return TrainingStepReport(seconds, reports, before, _cuda_memory(models), offloaded)
