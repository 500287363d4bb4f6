"""The training-step hook: whole batch, every component, and the device left free whatever happened."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from rewardflow import Engine, Status, reward
from rewardflow.models import ModelState, RewardModel
from rewardflow.models.training import ascore_training_batch, score_training_batch

ROWS = [
    {"prompt": "what is two plus two?", "completion": "four.", "answer": "4"},
    {"prompt": "what is two plus two?", "completion": "the answer is five.", "answer": "4"},
    {"prompt": "janet has sixteen eggs", "completion": "she makes 18 dollars every day.", "answer": "18"},
    {"prompt": "janet has sixteen eggs", "completion": "the quick brown fox", "answer": "18"},
]


@reward(kind="inline")
def contains_answer(completion: str, answer: str) -> float:
    return 1.0 if answer in completion else 0.0


def released(rm: RewardModel) -> bool:
    return rm.state is ModelState.OFFLOADED and all(p.is_meta for p in rm.weights.model.parameters())


def test_hook_scores_every_component_and_offloads(zoo: dict[str, Path]) -> None:
    rm = RewardModel(str(zoo["token_cls"]), head="token-cls", offload="release")
    expected = rm([r["prompt"] for r in ROWS], [r["completion"] for r in ROWS])
    with Engine({"rm": (rm, 0.5), "exact": contains_answer}) as engine:
        results, report = score_training_batch(engine, ROWS)
    assert [r.components["exact"] for r in results] == [0.0, 0.0, 1.0, 0.0]
    assert [r.components["rm"] for r in results] == pytest.approx(expected, abs=1e-6)
    assert [r.value for r in results] == pytest.approx(
        [0.5 * e + x for e, x in zip(expected, [0.0, 0.0, 1.0, 0.0], strict=True)], abs=1e-6
    )
    assert report.offloaded and released(rm)
    step = report.models["rm"]
    assert step.samples == len(ROWS) and step.real_tokens > 0 and 0.0 <= step.padding_waste < 1.0
    assert step.device_memory_before is None and report.device_memory_before == {}  # no CUDA here
    assert report.to_dict()["models"]["rm"]["samples"] == len(ROWS)


def test_hook_offloads_when_the_model_fails(zoo: dict[str, Path]) -> None:
    rm = RewardModel(str(zoo["token_cls"]), head="token-cls", offload="release")
    bad = [{"prompt": "[INST] hi [/INST] hello [INST] again", "completion": "x"}]  # cannot be re-templated
    with Engine({"rm": rm}) as engine:
        results, report = score_training_batch(engine, bad)
    assert results[0].status is Status.ERROR and "multi-turn" in (results[0].reason or "")
    assert report.offloaded and released(rm)


class SlowRewardModel(RewardModel):
    """A reward model whose forward pass outlives the engine's timeout."""

    def _forward(self, inputs: dict[str, Any], read: Any) -> Any:
        time.sleep(0.6)
        return super()._forward(inputs, read)


def test_hook_waits_for_a_timed_out_call_before_returning(zoo: dict[str, Path]) -> None:
    rm = SlowRewardModel(str(zoo["token_cls"]), head="token-cls", offload="release", timeout=0.1)
    rm.load()
    start = time.perf_counter()
    with Engine({"rm": rm}) as engine:
        results, report = score_training_batch(engine, ROWS[:1])
    assert results[0].status is Status.TIMEOUT
    assert report.offloaded and released(rm)  # the background call finished and offloaded before we returned
    assert time.perf_counter() - start < 10


def test_async_hook(zoo: dict[str, Path]) -> None:
    rm = RewardModel(str(zoo["token_cls"]), head="token-cls", offload="release")

    async def step() -> Any:
        async with Engine({"rm": rm, "exact": contains_answer}) as engine:
            return await ascore_training_batch(engine, ROWS)

    results, report = asyncio.run(step())
    assert all(r.ok for r in results) and report.offloaded and released(rm)
    assert report.models["rm"].samples == len(ROWS)


def test_spec_with_a_process_rule_and_a_model(zoo: dict[str, Path]) -> None:
    from rewardflow import RewardSpec, Spec

    spec = Spec(
        workers=1,
        rewards=[
            RewardSpec(reward="gsm8k", name="accuracy"),
            RewardSpec(
                reward="reward_model",
                name="rm",
                weight=0.1,
                params={"path": str(zoo["token_cls"]), "head": "token-cls", "offload": "release"},
            ),
        ],
    )
    rows = [
        {"prompt": "janet has sixteen eggs", "completion": "she makes 18 dollars. #### 18", "answer": "#### 18"},
        {"prompt": "janet has sixteen eggs", "completion": "she makes 16 dollars. #### 16", "answer": "#### 18"},
    ]
    with Engine(spec) as engine:
        results, report = score_training_batch(engine, rows)
        (rm,) = (c.reward.fn for c in engine.components if c.name == "rm")
    assert [r.components["accuracy"] for r in results] == [1.0, 0.0]  # scored in a worker process
    assert all(r.ok and r.value == pytest.approx(r.components["accuracy"] + 0.1 * r.components["rm"]) for r in results)
    assert report.offloaded and released(rm)
