"""SampleBatcher: concurrent one-sample calls become one engine call (verl's reward loop calls run_single once per
sample, all gathered at once)."""

from __future__ import annotations

import asyncio

from rewardflow.integrations._batcher import SampleBatcher
from rewardflow.types import RewardResult, Sample, Status


def make_scorer(calls: list[int], fail: bool = False):
    async def score(samples: list[Sample]) -> list[RewardResult]:
        calls.append(len(samples))
        await asyncio.sleep(0)
        if fail:
            raise RuntimeError("engine closed")
        return [RewardResult(float(len(s.completion)), Status.OK) for s in samples]

    return score


def test_a_gathered_chunk_is_scored_in_one_call_and_results_go_back_in_order() -> None:
    calls: list[int] = []
    batcher = SampleBatcher(make_scorer(calls), window_s=0.01)

    async def run() -> list[RewardResult]:
        return await asyncio.gather(*(batcher.score(Sample("p", "x" * n)) for n in range(1, 9)))

    results = asyncio.run(run())
    assert [r.value for r in results] == [float(n) for n in range(1, 9)]
    assert calls == [8]


def test_max_batch_splits_and_late_arrivals_form_a_new_batch() -> None:
    calls: list[int] = []
    batcher = SampleBatcher(make_scorer(calls), window_s=0.01, max_batch=3)

    async def run() -> None:
        await asyncio.gather(*(batcher.score(Sample("p", "x")) for _ in range(7)))
        await batcher.score(Sample("p", "late"))

    asyncio.run(run())
    assert calls == [3, 3, 1, 1]


def test_an_engine_failure_reaches_every_caller_and_a_new_loop_starts_clean() -> None:
    batcher = SampleBatcher(make_scorer([], fail=True), window_s=0.0)

    async def run() -> list[object]:
        return await asyncio.gather(*(batcher.score(Sample("p", "x")) for _ in range(3)), return_exceptions=True)

    outcomes = asyncio.run(run())
    assert all(isinstance(o, RuntimeError) for o in outcomes)
    calls: list[int] = []
    batcher._score = make_scorer(calls)
    outcomes = asyncio.run(run())  # a second event loop: fresh state, nothing stale from the first
    assert [getattr(o, "value", o) for o in outcomes] == [1.0, 1.0, 1.0]
    assert calls == [3]
