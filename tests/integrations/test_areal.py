"""AsyncRewardWrapper, called exactly as AReaL's workflows call AReaL's own wrapper.

The calls mirror AReaL: ``areal/workflow/rlvr.py`` awaits ``self.async_reward_fn(prompt_str, completions_str,
resp.input_tokens, resp.output_tokens, **data)``; the vision workflow passes the same by keyword
(``prompt=..., completions=..., prompt_ids=..., completion_ids=..., **task_data``); the agent examples
(``examples/.../*agent*.py``) call ``await self.async_reward_fn(result=content, answer=data["answer"])``; and a
workflow with ``n_samples > 1`` awaits several calls at once with ``asyncio.gather``.
"""

from __future__ import annotations

import asyncio
import pickle
import sys
import time
from pathlib import Path

import pytest

from rewardflow.errors import ConfigError, RewardFailedError
from rewardflow.integrations.areal import (
    AsyncRewardWrapper,
    areal_sample,
    default_max_workers,
    positional_names,
    workers_for,
)
from rewardflow.types import Status
from tests.integrations import _rewards_integrations as R


def test_positional_call_like_the_rlvr_workflow() -> None:
    wrapper = AsyncRewardWrapper(R.areal_exact, timeout_seconds=10, max_workers=2)
    data = {"answer": "42", "query_id": "q-7", "messages": [{"role": "user", "content": "6*7?"}]}

    async def run() -> list[float]:
        return [
            await wrapper("6*7?", "42", [1, 2], [3], **data),
            await wrapper("6*7?", " 41", [1, 2], [3], **data),
        ]

    assert asyncio.run(run()) == [1.0, 0.0]


def test_keyword_call_like_the_vision_workflow() -> None:
    wrapper = AsyncRewardWrapper(R.areal_exact, timeout_seconds=10, max_workers=1)
    value = asyncio.run(wrapper(prompt="p", completions="7", prompt_ids=[1], completion_ids=[2], answer="7"))
    assert value == 1.0


def test_keywords_only_call_like_the_agent_workflows() -> None:
    # result/answer are not sample fields: they reach the reward as the columns they are
    wrapper = AsyncRewardWrapper(R.agent_style, timeout_seconds=10, max_workers=1)
    assert asyncio.run(wrapper(result="18", answer="18")) == 1.0
    assert asyncio.run(wrapper(result="17", answer="18")) == 0.0


def test_positional_call_binds_to_the_rewards_own_signature() -> None:
    # AReaL's Anthropic agent: `await reward_fn(completion_text, data["answer"])` for math_reward_fn(completions,
    # answer); bound in AReaL's order it would be prompt=text, completions=answer and miss `answer`
    wrapper = AsyncRewardWrapper(R.agent_style, timeout_seconds=10, max_workers=1)
    assert asyncio.run(wrapper("18", "18")) == 1.0
    assert asyncio.run(wrapper("17", "18")) == 0.0
    with pytest.raises(TypeError, match="multiple values for argument 'answer'"):
        asyncio.run(wrapper("18", "18", answer="18"))


def test_positional_names() -> None:
    assert positional_names(R.agent_style) == ("result", "answer")
    assert positional_names(R.areal_exact) == ("prompt", "completions", "prompt_ids", "completion_ids")
    assert positional_names("gsm8k") == ("prompt", "completions", "prompt_ids", "completion_ids")  # no signature
    assert positional_names(lambda *args: 0.0) == ("prompt", "completions", "prompt_ids", "completion_ids")


def test_rewardflow_style_reward_under_areal_call() -> None:
    # exact(completion, answer) binds AReaL's `completions` by name; a None return is a failure, not a 0
    wrapper = AsyncRewardWrapper(R.exact, timeout_seconds=10, max_workers=1)
    assert asyncio.run(wrapper("p", "5", [], [], answer="5")) == 1.0
    result = asyncio.run(wrapper.score("p", "none", [], [], answer="5"))
    assert (result.value, result.status, result.reason) == (None, Status.ERROR, "reward returned None")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_timeout_raises_kills_the_worker_and_is_not_retried(tmp_path: Path) -> None:
    pid_file = tmp_path / "pids"
    wrapper = AsyncRewardWrapper(R.hang_with_pid, timeout_seconds=0.5, max_workers=1, max_retries=3)
    start = time.monotonic()
    with pytest.raises(RewardFailedError) as info:
        asyncio.run(wrapper("p", "hang", [1], [2], pid_file=str(pid_file)))
    assert time.monotonic() - start < 5.5  # 0.5 s timeout plus worker start-up, never a retry loop
    assert info.value.status == "timeout"
    assert info.value.result.value is None
    assert "timed out after 0.5s" in str(info.value)
    # AReaL's wrapper retried timeouts max_retries times and left each hung call running; here it ran once
    pids = [int(line) for line in pid_file.read_text().split()]
    assert len(pids) == 1
    deadline = time.monotonic() + 5
    while R.proc_alive(pids[0]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not R.proc_alive(pids[0]), "the hung worker is still running"
    # the pool replaced it and keeps scoring
    assert asyncio.run(wrapper("p", "ok", [1], [2], pid_file=str(pid_file))) == 1.0
    assert wrapper.engine.pool.stats.killed_timeout == 1


def test_exception_raises_with_the_reason_and_score_returns_the_result() -> None:
    wrapper = AsyncRewardWrapper(R.areal_exact, timeout_seconds=10, max_workers=1)
    with pytest.raises(RewardFailedError, match="RuntimeError: reward crashed") as info:
        asyncio.run(wrapper("p", "raise", [1], [2], answer="1"))
    assert info.value.status == "error"
    result = asyncio.run(wrapper.score("p", "raise", [1], [2], answer="1"))
    assert (result.value, result.status) == (None, Status.ERROR)
    assert result.reason == "RuntimeError: reward crashed"


@pytest.mark.parametrize("max_retries, expected", [(1, 1.0), (0, None)])
def test_max_retries_covers_dead_workers(tmp_path: Path, max_retries: int, expected: float | None) -> None:
    wrapper = AsyncRewardWrapper(R.die_once, timeout_seconds=10, max_workers=1, max_retries=max_retries)
    result = asyncio.run(wrapper.score("p", "x", [], [], marker=str(tmp_path / "died")))
    assert result.value == expected
    if expected is None:
        assert result.status is Status.ERROR and "exit code 3" in (result.reason or "")


def test_wrappers_share_one_engine_per_configuration() -> None:
    # AReaL builds one wrapper per workflow instance; they must not each start their own workers
    first = AsyncRewardWrapper(R.areal_exact, timeout_seconds=10, max_workers=1)
    second = AsyncRewardWrapper(R.areal_exact, timeout_seconds=10, max_workers=1)
    other = AsyncRewardWrapper(R.areal_exact, timeout_seconds=3, max_workers=1)
    assert first.engine is second.engine
    assert other.engine is not first.engine
    assert asyncio.run(first("p", "1", [], [], answer="1")) == 1.0
    pool = first.engine.pool
    AsyncRewardWrapper.close_all()
    assert pool.pids == []
    # a wrapper used after close_all gets a fresh engine instead of an error
    assert asyncio.run(second("p", "1", [], [], answer="1")) == 1.0


def test_concurrent_rollouts_run_in_parallel(tmp_path: Path) -> None:
    # n_samples rollouts of one prompt are awaited together; proven from the workers' own clocks
    wrapper = AsyncRewardWrapper(R.span, timeout_seconds=10, max_workers=3)

    async def run() -> list[float]:
        calls = [wrapper("p", "sleep 0.6", [], [], span_dir=str(tmp_path)) for _ in range(3)]
        return list(await asyncio.gather(*calls))

    assert asyncio.run(run()) == [1.0, 1.0, 1.0]
    assert R.max_overlap(R.read_spans(tmp_path)) >= 2


def test_lambda_is_rejected_at_construction() -> None:
    with pytest.raises(ConfigError, match="module-level function"):
        AsyncRewardWrapper(lambda prompt, completions, prompt_ids, completion_ids, **data: 1.0, max_workers=1)


def test_failure_error_survives_pickling() -> None:
    wrapper = AsyncRewardWrapper(R.exact, timeout_seconds=10, max_workers=1)
    with pytest.raises(RewardFailedError) as info:
        asyncio.run(wrapper("p", "raise", [], [], answer="1"))
    copy = pickle.loads(pickle.dumps(info.value))
    assert str(copy) == str(info.value)
    assert copy.result == info.value.result


def test_sample_binding_of_areal_arguments() -> None:
    s = areal_sample(("q", "a", [1], [2]), {"answer": "a", "group": 3})
    assert (s.prompt, s.completion, s.prompt_ids, s.completion_ids, s.group) == ("q", "a", [1], [2], "3")
    assert s.row == {"answer": "a", "group": 3}  # **data still receives every column unchanged
    with pytest.raises(TypeError, match="more than once"):
        areal_sample(("q", "a"), {"completion": "b"})
    with pytest.raises(TypeError, match="at most 4"):
        areal_sample(("q", "a", [], [], "extra"), {})


@pytest.mark.parametrize(
    "cpus, devices, expected",
    [
        (64, ["nvidia0", "nvidia1", "nvidia2", "nvidia3", "nvidia4", "nvidia5", "nvidia6", "nvidia7"], 4),
        (32, ["nvidia0", "nvidia1", "nvidiactl"], 8),  # nvidiactl is not a device
        (32, ["davinci0", "davinci1", "davinci2", "davinci3"], 4),  # Ascend NPUs
        (32, [], 2),  # nothing readable: assume 8 accelerators, as AReaL does
        (2, ["nvidia0"], 1),  # never below one
    ],
)
def test_default_worker_count_follows_areal(cpus: int, devices: list[str], expected: int) -> None:
    assert workers_for(cpus, ["null", "tty", *devices]) == expected
    assert default_max_workers() >= 1


def test_a_model_reward_is_refused_per_rollout() -> None:
    # a reward model scores the training batch in the training step, never once per rollout
    pytest.importorskip("torch")
    from rewardflow.spec import RewardSpec, Spec

    spec = Spec(rewards=[RewardSpec(reward=f"{R.__name__}:exact"), RewardSpec(name="sim", reward="similarity")])
    with pytest.raises(ConfigError, match=r"'sim' is a model reward .*score_training_batch"):
        AsyncRewardWrapper(spec, max_workers=1)
