"""trl_reward, called exactly as TRL's GRPOTrainer calls reward functions.

``GRPOTrainer._calculate_rewards`` (trl/trainer/grpo_trainer.py) builds ``reward_kwargs`` from every dataset
column except prompt/completion/completion_ids, as lists, adds ``trainer_state`` (and, in recent versions,
``log_extra``/``log_metric``), then calls each sync function as
``reward_func(prompts=prompts, completions=completions, completion_ids=completion_ids_list, **reward_kwargs)``,
converts ``None`` to NaN, and names it by ``reward_func.__name__``. Async functions (``inspect.iscoroutinefunction``)
are gathered with ``asyncio.run_coroutine_threadsafe(..., self.async_loop)`` on a trainer-owned loop thread.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from rewardflow.errors import RewardFailedError
from rewardflow.integrations.trl import message_text, trl_reward
from tests.integrations import _rewards_integrations as R


class TrainerState:  # stands for transformers' TrainerState: an object, not a column
    global_step = 3


def trl_kwargs(**columns: list[Any]) -> dict[str, Any]:
    """What TRL adds to the dataset columns."""
    return {**columns, "trainer_state": TrainerState(), "log_extra": lambda *a: None, "log_metric": lambda *a: None}


def nansum_like_trl(values: list[float | None]) -> float:
    """TRL turns None into NaN and sums reward functions with nansum."""
    return sum(0.0 if v is None or math.isnan(v) else v for v in values)


def test_batch_call_like_grpo_trainer() -> None:
    fn = trl_reward(R.exact, workers=2, timeout=10)
    try:
        out = fn(
            prompts=["2+2?", "2+2?", "3+3?"],
            completions=["4", "5", "6"],
            completion_ids=[[19], [20], [21]],
            **trl_kwargs(answer=["4", "4", "6"], source=["a", "b", "c"]),
        )
        assert out == [1.0, 0.0, 1.0]
    finally:
        fn.close()


def test_completion_ids_are_optional_for_older_trl() -> None:
    fn = trl_reward(R.exact, kind="inline")
    assert fn(prompts=["q"], completions=["1"], answer=["1"]) == [1.0]


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"rewards_or_spec": R.exact}, "exact"),
        ({"rewards_or_spec": R.exact, "name": "accuracy"}, "accuracy"),
        ({"rewards_or_spec": "gsm8k"}, "gsm8k"),  # a built-in name
        ({"rewards_or_spec": "tests.integrations._rewards_integrations:exact"}, "exact"),  # an import path
        ({"rewards_or_spec": {"a": R.exact, "b": R.length_bonus}}, "rewardflow"),  # a composition
    ],
)
def test_name_used_for_logging(kwargs: dict[str, Any], expected: str) -> None:
    fn = trl_reward(**kwargs, kind="inline")
    assert fn.__name__ == expected
    fn.close()


def test_spec_file_name_and_weights(spec_file: Path) -> None:
    fn = trl_reward(spec_file)
    try:
        assert fn.__name__ == "reward_spec"
        # spec: verl_style (weight 1) + length_bonus (weight 0.1); TRL passes data_source/ground_truth columns
        out = fn(
            prompts=["q", "q"],
            completions=["Yes", "no"],
            **trl_kwargs(data_source=["lenient", "strict"], ground_truth=["yes", "No"]),
        )
        assert out == pytest.approx([1.03, 0.02])
    finally:
        fn.close()


def test_conversational_completions_are_reduced_to_assistant_text() -> None:
    fn = trl_reward(R.exact, kind="inline")
    prompts = [[{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2?"}]] * 3
    completions = [
        [{"role": "assistant", "content": "4"}],
        [{"role": "assistant", "content": [{"type": "text", "text": "4"}, {"type": "image"}]}],
        # a tool-calling turn: the final assistant message is the answer
        [
            {"role": "assistant", "content": None, "tool_calls": [{"type": "function"}]},
            {"role": "tool", "content": "4"},
            {"role": "assistant", "content": "5"},
        ],
    ]
    assert fn(prompts=prompts, completions=completions, **trl_kwargs(answer=["4", "4", "4"])) == [1.0, 1.0, 0.0]


@pytest.mark.parametrize(
    "value, role, expected",
    [
        ("plain text", "assistant", "plain text"),  # standard format: unchanged
        ([{"role": "user", "content": "q1"}, {"role": "user", "content": "q2"}], "user", "q2"),  # last one wins
        ([{"role": "assistant", "content": None}], "assistant", ""),  # a tool call without text
        ([{"role": "user", "content": "q"}], "assistant", ""),  # no assistant message at all
        (
            [{"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
            "assistant",
            "ab",
        ),
    ],
)
def test_message_text(value: Any, role: str, expected: str) -> None:
    assert message_text(value, role) == expected


def test_batch_is_scored_in_parallel_not_one_by_one(tmp_path: Path) -> None:
    # TRL calls a sync reward function once per batch; one-by-one scoring would never overlap two calls
    fn = trl_reward(R.span, workers=3, timeout=10)
    try:
        out = fn(prompts=["p"] * 3, completions=["sleep 0.6"] * 3, **trl_kwargs(span_dir=[str(tmp_path)] * 3))
        assert out == [1.0, 1.0, 1.0]
        assert R.max_overlap(R.read_spans(tmp_path)) >= 2
    finally:
        fn.close()


def test_failures_are_none_logged_and_never_zero(caplog: pytest.LogCaptureFixture) -> None:
    fn = trl_reward(R.exact, workers=2, timeout=0.5)
    try:
        start = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="rewardflow.integrations.trl"):
            out = fn(prompts=["q"] * 4, completions=["1", "hang", "raise", "2"], **trl_kwargs(answer=["1"] * 4))
        assert time.monotonic() - start < 6
        assert out == [1.0, None, None, 0.0]
        assert nansum_like_trl(out) == 1.0  # what TRL makes of it: the failures do not count
        message = caplog.text
        assert "2 of 4 samples failed" in message
        assert "#1 timeout: timed out after 0.5s" in message
        assert "#2 error: ValueError: cannot score this completion" in message
    finally:
        fn.close()


def test_on_failure_raise() -> None:
    fn = trl_reward(R.exact, kind="inline", on_failure="raise")
    with pytest.raises(RewardFailedError, match="ValueError: cannot score this completion"):
        fn(prompts=["q", "q"], completions=["1", "raise"], **trl_kwargs(answer=["1", "1"]))


def test_non_column_keywords_are_ignored() -> None:
    # a keyword that is not one value per sample (a config scalar, a list of another length) is not a column
    fn = trl_reward(R.exact, kind="inline")
    out = fn(prompts=["q", "q"], completions=["1", "2"], num_generations=2, tags=["x"], **trl_kwargs(answer=["1", "2"]))
    assert out == [1.0, 1.0]


def test_async_variant_is_awaited_on_the_trainers_loop_thread() -> None:
    fn = trl_reward(R.exact, asynchronous=True, workers=2, timeout=10)
    assert inspect.iscoroutinefunction(fn)  # how TRL decides to gather it
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:

        async def gather() -> list[list[float | None]]:
            kwargs = trl_kwargs(answer=["1", "2"])
            return list(
                await asyncio.gather(fn(prompts=["q", "q"], completions=["1", "3"], completion_ids=None, **kwargs))
            )

        assert asyncio.run_coroutine_threadsafe(gather(), loop).result(timeout=30) == [[1.0, 0.0]]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        fn.close()


def test_a_model_reward_scores_the_whole_batch(tmp_path: Path) -> None:
    # TRL hands the reward the whole generation batch: one model call, then the model is offloaded again
    pytest.importorskip("torch")
    spec = tmp_path / "rm.yaml"
    spec.write_text("rewards:\n  - name: sim\n    reward: similarity\n")
    fn = trl_reward(spec)
    try:
        out = fn(
            prompts=["How much does Janet make?"] * 3,
            completions=["She earns 18 dollars every day.", "The capital of France is Paris.", "She makes $18 daily."],
            completion_ids=[[1], [2], [3]],
            **trl_kwargs(answer=["She makes 18 dollars a day."] * 3),
        )
        model = fn.engine.components[0].reward.fn
        report = model.last_report
        assert model.load_count == 1 and report.samples == 4  # one call: 3 completions + their shared reference
    finally:
        fn.close()
    assert out[0] > out[1] and out[2] > out[1]


def test_components_and_failures_reach_trl_log_hooks() -> None:
    # TRL hands reward functions log_metric(name, value) and log_extra(column, values); dropping them loses every
    # component of a composed reward from the trainer's logs.
    metrics: dict[str, float] = {}
    columns: dict[str, list[Any]] = {}
    fn = trl_reward({"acc": R.exact, "len": R.length_bonus}, name="mix", kind="inline")
    out = fn(
        prompts=["q", "q", "q"],
        completions=["4", "5", "raise"],  # exact raises for "raise" (see _rewards_integrations)
        answer=["4", "4", "4"],
        trainer_state=TrainerState(),
        log_metric=lambda name, value: metrics.__setitem__(name, value),
        log_extra=lambda column, values: columns.__setitem__(column, values),
    )
    fn.close()
    assert set(metrics) == {"mix/acc", "mix/len", "mix/failed"}
    assert metrics["mix/failed"] == pytest.approx(1 / 3)
    assert metrics["mix/acc"] == pytest.approx(0.5)  # mean over the two samples where acc scored: 1.0 and 0.0
    assert columns["mix/acc"] == [1.0, 0.0, None]
    assert out[2] is None and len(columns["mix/len"]) == 3
