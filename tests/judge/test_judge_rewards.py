"""The four judge rewards through the engine, against the fake server: values, failures, accounting, config."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from rewardflow import Engine, Kind, Reward, Status, resolve
from rewardflow.errors import ConfigError
from rewardflow.judge import JudgeGroup, JudgeScore, judge_group, judge_reference, judge_rubric, judge_score
from rewardflow.judge.testing import FakeJudgeServer
from rewardflow.judge.usage import usage_summary
from rewardflow.spec import parse_spec
from rewardflow.types import Score


def rows(*completions: str, prompt: str = "What is 6 x 7?", **columns: Any) -> list[dict[str, Any]]:
    return [{"prompt": prompt, "completion": c, **columns} for c in completions]


# ---------------------------------------------------------------------------------------------------- judge_score


def test_judge_score_normalises_and_reports_usage(params: dict, server: FakeJudgeServer) -> None:
    with Engine(judge_score(**params)) as engine:
        results = engine.score(rows(*(f"answer [[score={s}]]" for s in (0, 3, 10))))
    assert [r.value for r in results] == [0.0, 0.3, 1.0]
    judge = results[1].info["judge"]
    assert judge["score"] == 3 and judge["requests"] == 1 and judge["structured"] is True
    assert judge["prompt_tokens"] > 0 and judge["completion_tokens"] > 0
    assert results[1].reason  # the judge's explanation
    assert server.stats()["requests"] == 3


def test_judge_score_custom_range(params: dict) -> None:
    with Engine(judge_score(**params, min_score=1, max_score=5)) as engine:
        results = engine.score(rows("a [[score=1]]", "b [[score=4]]"))
    assert [r.value for r in results] == [0.0, 0.75]


@pytest.mark.parametrize(
    "reply",
    [
        "I would rather not say.",  # prose without a score
        '{"score": 42}',  # out of range: an error, not a clamped 1.0
        "<html>oops</html>",  # garbage
    ],
)
def test_unparseable_reply_is_an_error_with_the_raw_text_never_a_zero(params: dict, reply: str) -> None:
    with Engine(judge_score(**params, structured=False)) as engine:
        (result,) = engine.score(rows(f"x [[reply:{reply}]]"))
    assert result.status is Status.ERROR and result.value is None
    assert "JudgeParseError" in result.reason and reply[:15] in result.reason
    assert result.info["judge"]["raw"] == reply and result.info["judge"]["requests"] == 1


def test_unparseable_reply_is_not_served_from_cache(params: dict, server: FakeJudgeServer) -> None:
    with Engine(judge_score(**params, structured=False)) as engine:
        engine.score(rows("x [[reply:no idea]]"))
        engine.score(rows("x [[reply:no idea]]"))
    assert server.stats()["requests"] == 2  # asked again, not replayed from the cache


@pytest.mark.parametrize("backend", ["aiohttp", "httpx"])
def test_every_fault_ends_ok_or_error_and_no_sample_is_lost(
    params: dict, server: FakeJudgeServer, backend: str
) -> None:
    """A batch mixing every fault: one result per row, ok after retries or a typed error with a reason."""
    transient = [f"t{k} [[fault:{k}*1]] [[score=5]]" for k in ("500", "503", "429", "drop", "hang")]
    final = [f"f{k} [[fault:{k}]]" for k in ("500", "429", "drop", "hang", "garbage", "nochoices", "400")]
    completions = ["plain [[score=8]]", *transient, *final]
    # server="vllm": a server that aborts abandoned requests, so a timed-out attempt is retried too
    reward = judge_score(**{**params, "timeout": 0.3}, structured=False, http_backend=backend, server="vllm")
    with Engine(reward) as engine:
        results = engine.score(rows(*completions))
        assert reward.client._states  # the connection pool is open while the engine is
    assert not reward.client._states  # closing the engine closed it, on the engine's loop
    assert reward.usage()["clients_created"] == 1
    assert len(results) == len(completions)
    assert [r.value for r in results[:6]] == [0.8] + [0.5] * 5
    assert all(r.ok for r in results[:6])
    expected = ["JudgeStatusError", "JudgeStatusError", "JudgeConnectionError", "JudgeTimeoutError"]
    expected += ["JudgeResponseError", "JudgeResponseError", "JudgeStatusError"]
    for result, error in zip(results[6:], expected, strict=True):
        status = Status.TIMEOUT if error == "JudgeTimeoutError" else Status.ERROR  # a TimeoutError is a timeout
        assert result.status is status and result.value is None
        assert result.reason.startswith(error)
        assert result.info["judge"]["failed"] is True
    # bounded: 1 + 2 retries for retryable faults, 1 request for final ones
    assert [r.info["judge"]["requests"] for r in results[6:]] == [3, 3, 3, 3, 1, 1, 1]
    summary = usage_summary(results)
    assert summary["calls"] == len(completions) and summary["failed"] == 7
    assert summary["requests"] == server.stats()["requests"]


def test_a_reward_outlives_the_engines_that_use_it(params: dict, server: FakeJudgeServer) -> None:
    """Engine.close() releases the judge's connections (aclose), not the reward: the next engine can use it."""
    reward = judge_score(**params)
    for i in range(2):
        with Engine(reward) as engine:
            (result,) = engine.score(rows(f"round {i} [[score=4]]"))
        assert result.ok and result.value == 0.4
        assert not reward.client._states  # released when that engine closed
    assert reward.usage()["clients_created"] == 2  # one pool per engine (per event loop)
    reward.close()
    with Engine(reward) as engine:
        (result,) = engine.score(rows("after close [[score=4]]"))
    assert result.status is Status.ERROR and "closed" in result.reason  # close() is for good


def test_engine_timeout_cancels_a_slow_judge_call(params: dict) -> None:
    rw = judge_score(**{**params, "timeout": 30}, reward_timeout=0.3)
    with Engine(rw) as engine:
        (result,) = engine.score(rows("slow [[fault:hang]]"))
    assert result.status is Status.TIMEOUT and "timed out after 0.3s" in result.reason


# ---------------------------------------------------------------------------------------------------- judge_reference


def test_judge_reference_verdicts(params: dict, server: FakeJudgeServer) -> None:
    with Engine(judge_reference(**params)) as engine:
        results = engine.score(
            [
                {"prompt": "6 x 7?", "completion": "42 [[verdict=correct]]", "answer": "42"},
                {"prompt": "6 x 7?", "completion": "41 [[verdict=incorrect]]", "answer": "42"},
            ]
        )
    assert [r.value for r in results] == [1.0, 0.0]
    assert results[1].reason.startswith("judge: incorrect") and results[1].ok  # a legitimate, explained zero
    assert "<reference_answer>\n42\n</reference_answer>" in server.bodies[0]["messages"][0]["content"]


def test_judge_reference_custom_column_and_missing_reference(params: dict, server: FakeJudgeServer) -> None:
    with Engine(judge_reference(**params, reference_key="gold")) as engine:
        ok, missing = engine.score(
            [
                {"prompt": "q", "completion": "x [[verdict=correct]]", "gold": "x"},
                {"prompt": "q", "completion": "y", "answer": "y"},  # has `answer`, but the judge reads `gold`
            ]
        )
    assert ok.value == 1.0
    assert missing.status is Status.ERROR and "no reference answer" in missing.reason and "'gold'" in missing.reason
    assert server.stats()["requests"] == 1  # no request for the row without a reference


# ---------------------------------------------------------------------------------------------------- judge_rubric

CRITERIA = [
    {"name": "accuracy", "description": "Is the final answer right?", "weight": 3},
    {"name": "clarity", "description": "Is it easy to follow?", "weight": 1, "min": 1, "max": 5},
]


def test_judge_rubric_weights_and_components(params: dict) -> None:
    reward = judge_rubric(**params, criteria=CRITERIA)
    score = asyncio.run(reward("q", "x [[accuracy=8]] [[clarity=2]]"))
    assert isinstance(score, Score)
    assert score.components == {"accuracy": 0.8, "clarity": 0.25}
    assert score.value == pytest.approx((3 * 0.8 + 1 * 0.25) / 4)
    assert score.info["judge"]["scores"] == {"accuracy": 8, "clarity": 2}
    with Engine(reward) as engine:
        (result,) = engine.score(rows("x [[accuracy=8]] [[clarity=2]]"))
    assert result.value == pytest.approx(score.value)
    assert result.info["judge"]["criteria"] == {"accuracy": 0.8, "clarity": 0.25}


def test_judge_rubric_missing_criterion_is_an_error(params: dict) -> None:
    with Engine(judge_rubric(**params, criteria=CRITERIA, structured=False)) as engine:
        (result,) = engine.score(rows('x [[reply:{"scores": {"accuracy": 9}}]]'))
    assert result.status is Status.ERROR and "clarity" in result.reason


def test_judge_rubric_config_errors(params: dict) -> None:
    with pytest.raises(ConfigError, match="criteria"):
        judge_rubric(**params)
    with pytest.raises(ConfigError, match="unique"):
        judge_rubric(**params, criteria=[CRITERIA[0], CRITERIA[0]])
    with pytest.raises(ConfigError, match=r"criteria\.0\.name"):
        judge_rubric(**params, criteria=[{"name": "has space", "description": "d"}])


# ---------------------------------------------------------------------------------------------------- judge_group


def test_judge_group_scores_each_group_in_one_call(params: dict, server: FakeJudgeServer) -> None:
    data = rows("a [[scores=2]]", "b [[scores=9]]", "c [[scores=5]]", prompt="P1")
    data += rows("d [[scores=10]]", "e [[scores=0]]", prompt="P2")
    with Engine(judge_group(**params)) as engine:
        results = engine.score(data)
    assert [r.value for r in results] == [0.2, 0.9, 0.5, 1.0, 0.0]
    assert server.stats()["requests"] == 2  # one call per prompt's group
    assert [r.info["judge"]["group_index"] for r in results] == [0, 1, 2, 0, 1]
    summary = usage_summary(results)
    assert summary["requests"] == 2  # the call's usage is counted once per group
    assert summary["prompt_tokens"] == sum(r.info["judge"]["prompt_tokens"] for r in results[::3][:1] + results[3:4])


def test_judge_group_rank_mode(params: dict) -> None:
    data = rows('a [[reply:{"reason": "b best", "ranking": [2, 1, 3]}]]', "b", "c")
    with Engine(judge_group(**params, mode="rank", structured=False)) as engine:
        results = engine.score(data)
    assert [r.value for r in results] == [0.5, 1.0, 0.0]
    assert [r.info["judge"]["rank"] for r in results] == [2.0, 1.0, 3.0]


def test_judge_group_rank_mode_needs_two(params: dict, server: FakeJudgeServer) -> None:
    with Engine(judge_group(**params, mode="rank")) as engine:
        (result,) = engine.score(rows("alone"))
    assert result.status is Status.ERROR and "at least 2" in result.reason
    assert server.stats()["requests"] == 0


def test_judge_group_shuffle_maps_scores_back(params: dict, server: FakeJudgeServer) -> None:
    completions = [f"response {i} [[scores={i}]]" for i in range(6)]
    with Engine(judge_group(**params, shuffle=True)) as engine:
        results = engine.score(rows(*completions))
    assert [r.value for r in results] == [i / 10 for i in range(6)]
    prompt = server.bodies[0]["messages"][0]["content"]
    shown = [prompt.index(f"response {i} ") for i in range(6)]
    assert shown != sorted(shown)  # the judge saw another order


def test_judge_group_wrong_count_is_an_error_for_every_sample(params: dict) -> None:
    data = rows('a [[reply:{"scores": [1, 2]}]]', "b", "c")
    with Engine(judge_group(**params, structured=False)) as engine:
        results = engine.score(data)
    assert all(r.status is Status.ERROR and "2 scores for 3 responses" in r.reason for r in results)


# ---------------------------------------------------------------------------------------------------- wiring


def test_registry_spec_and_engine_options(server: FakeJudgeServer, tmp_path: Path) -> None:
    base = {"base_url": server.base_url, "model": "spec-model", "concurrency": 7}
    score = resolve("judge_score", base)
    group = resolve("judge_group", base)
    assert isinstance(score, JudgeScore) and isinstance(group, JudgeGroup)
    wrapped, wrapped_group = Reward.wrap(score), Reward.wrap(group)
    assert (wrapped.kind, wrapped_group.kind) == (Kind.ASYNC, Kind.GROUP)
    assert wrapped.concurrency == 7
    assert wrapped.timeout == pytest.approx(4 * 30 + 3 * 30 + 30)  # the judge's own retry budget fits inside
    spec = parse_spec(
        {
            "rewards": [
                {"reward": "judge_score", "name": "quality", "weight": 0.5, "params": base},
                {"reward": "judge_reference", "name": "correct", "params": base},
            ]
        }
    )
    with Engine(spec) as engine:
        (result,) = engine.score([{"prompt": "q", "completion": "[[score=4]] [[verdict=correct]]", "answer": "a"}])
    assert result.components == {"quality": 0.4, "correct": 1.0} and result.value == pytest.approx(1.2)
    assert set(result.info) == {"quality", "correct"}
    assert usage_summary([result])["calls"] == 2


def test_bad_params_name_the_field(server: FakeJudgeServer) -> None:
    with pytest.raises(ConfigError, match="judge_score: timeout"):
        resolve("judge_score", {"base_url": server.base_url, "model": "m", "timeout": -1})
    with pytest.raises(ConfigError, match="judge_score: colour"):
        resolve("judge_score", {"base_url": server.base_url, "model": "m", "colour": "red"})
    with pytest.raises(ConfigError, match="max_score must be greater"):
        judge_score(base_url=server.base_url, model="m", min_score=5, max_score=5)
    with pytest.raises(ConfigError, match="NO_SUCH_VARIABLE_FOR_TEST"):
        judge_score(base_url=server.base_url, model="m", api_key_env="NO_SUCH_VARIABLE_FOR_TEST")


def test_rewards_on_one_endpoint_share_one_client_created_once(params: dict, server: FakeJudgeServer) -> None:
    a, b = judge_score(**params), judge_reference(**params)
    assert a.client is b.client
    with Engine({"a": a, "b": b}) as engine:
        for i in range(3):
            engine.score(rows(f"x{i} [[score=1]] [[verdict=correct]]", answer="x"))
    assert a.client.clients_created == 1  # one connection pool for both rewards, three batches
    assert a.usage()["calls"] == 6
    assert server.stats()["connections"] <= 2  # at most two calls were ever in flight at once


def test_templates_can_be_overridden(params: dict, server: FakeJudgeServer, tmp_path: Path) -> None:
    path = tmp_path / "mine.j2"
    path.write_text("Grade {{ completion }} for {{ topic }} from {{ min_score }} to {{ max_score }}.")
    fmt = "Answer: {completion} -- reply with a number [[reply:7]]"
    rewards = {
        "file": judge_score(**params, template=str(path)),
        "format": judge_score(**params, template=fmt, structured=False),
        "system": judge_score(**params, system="You are strict.", extra_body={"top_k": 1}),
    }
    with Engine(rewards) as engine:
        (result,) = engine.score(rows("ok [[score=3]]", topic="maths"))
    assert result.components == {"file": 0.3, "format": 0.7, "system": 0.3}
    sent = {b["messages"][-1]["content"] for b in server.bodies}
    assert "Grade ok [[score=3]] for maths from 0 to 10." in sent
    assert "Answer: ok [[score=3]] -- reply with a number [[reply:7]]" in sent
    with_system = next(b for b in server.bodies if len(b["messages"]) == 2)
    assert with_system["messages"][0] == {"role": "system", "content": "You are strict."}
    assert with_system["top_k"] == 1


def test_template_errors(params: dict, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read judge template"):
        judge_score(**params, template=str(tmp_path / "missing.j2"))
    with pytest.raises(ConfigError, match="syntax error"):
        judge_score(**params, template="{{ completion ")
    with pytest.raises(ConfigError, match="no built-in judge template"):
        judge_score(**params, template="builtin:nope")
    with Engine(judge_score(**params, template="{{ completion }} {{ not_a_column }}")) as engine:
        (result,) = engine.score(rows("x"))
    assert result.status is Status.ERROR and "not_a_column" in result.reason


def test_areal_positional_call(params: dict) -> None:
    """AReaL calls reward(prompt, completions, prompt_ids, completion_ids, **data); awaited natively."""
    reward = judge_score(**params)
    score = asyncio.run(reward("q", "x [[score=6]]", [1, 2], [3], answer="42"))
    assert score.value == 0.6


def test_importing_rewardflow_and_judge_is_light() -> None:
    code = textwrap.dedent(
        """
        import sys
        import rewardflow, rewardflow.judge
        from rewardflow.registry import default_registry
        assert {"judge_score", "judge_group"} <= set(default_registry().names())
        heavy = [m for m in ("aiohttp", "httpx", "jinja2", "openai") if m in sys.modules]
        assert not heavy, heavy
        """
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, env={"PYTHONPATH": str(root)}, timeout=60)


def test_a_failed_group_call_books_its_usage_once(params: dict, server: FakeJudgeServer) -> None:
    """Bug (issue 16): a failed judge_group call put its usage on every sample: 32 requests reported for 8 sent."""
    data = rows(*(f"r{i} [[fault:500]]" for i in range(4)), prompt="P1")
    data += rows(*(f"s{i} [[fault:500]]" for i in range(4)), prompt="P2")
    with Engine(judge_group(**params)) as engine:
        results = engine.score(data)
    assert all(r.status is Status.ERROR and "HTTP 500" in r.reason for r in results)
    sent = server.stats()["requests"]
    assert sent == 6  # two groups, 1 + 2 retries each
    assert usage_summary(results)["requests"] == sent
    assert [r.info["judge"]["requests"] for r in results] == [3, 0, 0, 0, 3, 0, 0, 0]
    assert [r.info["judge"]["group_index"] for r in results] == [0, 1, 2, 3, 0, 1, 2, 3]
    assert all(r.info["judge"]["failed"] for r in results)  # every sample still says its judgment failed
