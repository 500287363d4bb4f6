"""Engine behaviour: composition, gates, order, malformed rows, async limits, group and batch kinds."""

from __future__ import annotations

import asyncio
import time

import pytest

from rewardflow import Component, Engine, Reward, Sample, Score, Status, reward
from rewardflow.errors import ConfigError, EngineClosedError


def exact(completion: str, answer: str) -> float:
    return float(completion == answer)


def short(completion: str) -> float:
    return float(len(completion) <= 3)


ROWS = [
    {"prompt": "p1", "completion": "4", "answer": "4"},
    {"prompt": "p2", "completion": "five", "answer": "5"},
    {"prompt": "p3", "completion": "6", "answer": "6"},
]


def test_composition_weights_and_components() -> None:
    with Engine({"acc": (exact, 1.0), "short": (short, 0.5)}, kind="inline") as engine:
        results = engine.score(ROWS)
    assert [r.value for r in results] == [1.5, 0.0, 1.5]
    assert results[1].components == {"acc": 0.0, "short": 0.0}


def test_gate_zeroes_the_total_but_keeps_components() -> None:
    comps = [
        Component("short", Reward.wrap(short, kind="inline"), 0.1, gate=True),
        Component("acc", Reward.wrap(exact, kind="inline"), 1.0),
    ]
    with Engine(comps) as engine:
        result = engine.score([{"prompt": "p", "completion": "long but right", "answer": "long but right"}])[0]
    assert result.value == 0.0
    assert result.components == {"short": 0.0, "acc": 1.0}
    assert "gate 'short' not passed" in result.reason


def test_failed_component_fails_the_sample_with_its_status() -> None:
    def broken(completion: str) -> float:
        raise KeyError("oops")

    with Engine({"acc": exact, "broken": broken}, kind="inline") as engine:
        result = engine.score(ROWS[:1])[0]
    assert result.status is Status.ERROR and result.value is None
    assert result.components == {"acc": 1.0, "broken": None}
    assert result.reason.startswith("component 'broken': KeyError")


def test_malformed_rows_keep_their_place() -> None:
    rows = [ROWS[0], {"prompt": "no completion"}, "not a mapping", {"completion": 7}, ROWS[2]]
    with Engine(exact, kind="inline") as engine:
        results = engine.score(rows)  # type: ignore[arg-type]
    assert len(results) == 5
    assert [r.status for r in results] == [Status.OK, Status.ERROR, Status.ERROR, Status.ERROR, Status.OK]
    assert "row 1: missing field 'completion'" == results[1].reason
    assert "row 3" in results[3].reason and "string" in results[3].reason


def test_same_results_inline_and_in_processes() -> None:
    rows = [{"prompt": "p", "completion": str(i % 7), "answer": str(i % 5)} for i in range(300)]
    with Engine(exact, kind="inline") as inline, Engine(exact, workers=2) as pooled:
        assert [r.value for r in inline.score(rows)] == [r.value for r in pooled.score(rows)]


def test_async_rewards_respect_the_concurrency_limit() -> None:
    state = {"now": 0, "peak": 0}

    @reward(concurrency=3)
    async def judge(completion: str) -> float:
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        await asyncio.sleep(0.02)
        state["now"] -= 1
        return 1.0

    with Engine(judge) as engine:
        results = engine.score([Sample("p", str(i)) for i in range(20)])
    assert all(r.ok for r in results)
    assert state["peak"] == 3


def test_async_timeout_cancels_only_the_slow_call() -> None:
    async def slow(completion: str) -> float:
        await asyncio.sleep(600 if completion == "slow" else 0)
        return 1.0

    start = time.monotonic()
    with Engine(slow, timeout=0.2) as engine:
        results = engine.score([Sample("p", "fast"), Sample("p", "slow"), Sample("p", "fast")])
    assert time.monotonic() - start < 60  # hang guard: the 600 s call was cancelled, not awaited
    assert [r.status for r in results] == [Status.OK, Status.TIMEOUT, Status.OK]
    assert "timed out after 0.2s" in results[1].reason


def test_group_reward_gets_one_call_per_group_in_order() -> None:
    calls: list[list[str]] = []

    @reward(kind="group")
    def rank(completions: list[str]) -> list[float]:
        calls.append(list(completions))
        order = sorted(completions, key=len)
        return [order.index(c) / max(1, len(completions) - 1) for c in completions]

    samples = [Sample("a", "xx", group="g1"), Sample("b", "y", group="g2"), Sample("a", "x", group="g1")]
    with Engine(rank) as engine:
        results = engine.score(samples)
    assert sorted(map(sorted, calls)) == [["x", "xx"], ["y"]]
    assert [r.value for r in results] == [1.0, 0.0, 0.0]


def test_batch_reward_length_mismatch_is_an_error_for_every_sample() -> None:
    @reward(kind="batch")
    def bad(completions: list[str]) -> list[float]:
        return [1.0]

    with Engine(bad) as engine:
        results = engine.score([Sample("p", "a"), Sample("p", "b")])
    assert all(r.status is Status.ERROR and "returned 1 values for 2 samples" in r.reason for r in results)


def test_ascore_one_streams_from_a_running_loop() -> None:
    async def judge(completion: str) -> Score:
        return Score(1.0, info={"tokens": len(completion)})

    async def main() -> list[float]:
        async with Engine({"j": judge, "acc": exact}) as engine:
            one = await engine.ascore_one({"prompt": "p", "completion": "4", "answer": "4"})
            many = await engine.ascore(ROWS)
        return [one.value, *[r.value for r in many], one.info["j"]["tokens"]]

    assert asyncio.run(main()) == [2.0, 2.0, 1.0, 2.0, 1]


def test_closed_engine_refuses_work() -> None:
    engine = Engine(exact, kind="inline")
    engine.close()
    with pytest.raises(EngineClosedError):
        engine.score(ROWS)


def test_duplicate_component_names_rejected() -> None:
    with pytest.raises(ConfigError, match="unique"):
        Engine([Component("a", Reward.wrap(exact)), Component("a", Reward.wrap(short))])


def test_sub_components_are_kept_under_the_component_name() -> None:
    def rubric(completion: str) -> Score:
        return Score(0.75, components={"clarity": 0.5, "correct": 1.0})

    with Engine({"judge": rubric, "acc": exact}, kind="inline") as engine:
        result = engine.score(ROWS[:1])[0]
    assert result.components == {"judge": 0.75, "judge.clarity": 0.5, "judge.correct": 1.0, "acc": 1.0}
    with Engine(rubric, kind="inline") as engine:
        assert engine.score(ROWS[:1])[0].components == {"rubric": 0.75, "rubric.clarity": 0.5, "rubric.correct": 1.0}


def test_timeout_error_from_reward_code_is_a_timeout_status() -> None:
    async def remote(completion: str) -> float:
        raise TimeoutError("judge did not answer in 30s (3 attempts)")

    with Engine(remote) as engine:
        result = engine.score(ROWS[:1])[0]
    assert result.status is Status.TIMEOUT and "3 attempts" in result.reason


def test_failed_batch_call_keeps_exception_info() -> None:
    @reward(kind="group")
    async def judge_group(completions: list[str]) -> list[float]:
        failure = RuntimeError("server down")
        failure.info = {"requests": 3}  # type: ignore[attr-defined]
        raise failure

    with Engine(judge_group) as engine:
        results = engine.score([Sample("p", "a"), Sample("p", "b")])
    assert all(r.status is Status.ERROR and r.info == {"requests": 3} for r in results)


def test_close_awaits_rewards_aclose() -> None:
    class Client:
        closed = 0

        async def __call__(self, completion: str) -> float:
            return 1.0

        async def aclose(self) -> None:
            Client.closed += 1

    engine = Engine(Client())
    assert engine.score(ROWS[:1])[0].value == 1.0
    engine.close()
    engine.close()  # idempotent
    assert Client.closed == 1
