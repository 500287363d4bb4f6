"""The reward contract: signatures, collisions and return-value validation (inline, no processes)."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

from rewardflow import Engine, Kind, Reward, Sample, Score, Status, reward
from rewardflow.errors import ConfigError
from rewardflow.reward import CallPlan

S = Sample(prompt="What is 2+2?", completion="4", prompt_ids=[1, 2], completion_ids=[3], row={"answer": "4"})


def score_inline(fn, sample=S):
    with Engine(fn, kind="inline") as engine:
        return engine.score([sample])[0]


def areal(prompt, completions, prompt_ids, completion_ids, **data):
    assert prompt == "What is 2+2?" and prompt_ids == [1, 2] and completion_ids == [3]
    return float(completions == data["answer"])


@reward(positional=True)
def renamed_positional(p, c, pi, ci, **data):
    # opted in to AReaL's positional convention: names that mean nothing to us get the four slots in order
    return float(c == data["answer"] and p.startswith("What") and pi == [1, 2] and ci == [3])


def keyword_style(completion: str, answer: str) -> float:
    return float(completion == answer)


def verl_style(data_source, solution_str, ground_truth, extra_info=None):
    return float(solution_str == ground_truth and data_source == "gsm8k" and extra_info is None)


async def async_areal(prompt, completions, prompt_ids, completion_ids, **data):
    await asyncio.sleep(0)
    return float(completions == data["answer"])


@pytest.mark.parametrize("fn", [areal, renamed_positional, keyword_style, async_areal])
def test_signatures_score_one(fn) -> None:
    result = score_inline(fn)
    assert result.status is Status.OK, result.reason
    assert result.value == 1.0


def test_verl_signature() -> None:
    sample = Sample("q", "7", row={"data_source": "gsm8k", "ground_truth": "7"})
    assert score_inline(verl_style, sample).value == 1.0


def test_async_callable_is_async_kind_even_if_asked_inline() -> None:
    assert Reward.wrap(async_areal, kind="inline").kind is Kind.ASYNC
    assert Reward.wrap(areal).kind is Kind.PROCESS


def test_column_named_like_a_field_does_not_raise_or_shadow() -> None:
    sample = Sample("real prompt", "4", row={"prompt": "column prompt", "completion": "x", "answer": "4"})

    def fn(prompt, completions, prompt_ids, completion_ids, **data):
        return float(prompt == "real prompt" and completions == "4" and "prompt" not in data)

    assert score_inline(fn, sample).value == 1.0


def pred_answer(pred, answer):
    return float(pred == answer)


def test_unknown_names_are_never_filled_by_position() -> None:
    # issue 11: `def r(pred, answer)` used to receive the prompt as `pred` and score a correct answer 0.0 "ok"
    result = score_inline(pred_answer, Sample("What is 2+2?", "4", row={"answer": "4"}))
    assert result.status is Status.ERROR and result.value is None
    assert "parameter 'pred'" in result.reason and "columns: answer" in result.reason
    # a column of that name binds it
    assert score_inline(pred_answer, Sample("q", "x", row={"pred": "4", "answer": "4"})).value == 1.0


def test_declared_columns_turn_a_mismatch_into_a_config_error_at_construction() -> None:
    with pytest.raises(ConfigError, match=r"parameter 'pred' names no sample field.*available columns: answer, id"):
        Engine(pred_answer, kind="inline", columns=["answer", "id"])
    Engine(keyword_style, kind="inline", columns=["answer"]).close()  # field + present column: fine
    Engine(verl_style, kind="inline", columns=["data_source", "ground_truth"]).close()  # default param may be absent
    with pytest.raises(ConfigError, match="positional=True"):
        Engine(lambda p, c, pi, ci: 1.0, kind="inline", columns=["answer"])


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_non_finite_weights_and_timeouts_are_config_errors(bad: float) -> None:
    with pytest.raises(ConfigError, match="weight must be a finite number"):
        Engine({"a": (keyword_style, bad)}, kind="inline")
    with pytest.raises(ConfigError, match="timeout must be a finite number"):
        Engine(keyword_style, kind="inline", timeout=bad)
    with pytest.raises(ConfigError, match="timeout must be a finite number"):
        Reward.wrap(keyword_style, timeout=bad)
    with pytest.raises(ConfigError, match="timeout must be a finite number"):
        reward(timeout=bad)


def test_score_of_a_single_row_is_an_error_not_its_keys() -> None:
    from rewardflow.errors import InputError

    with Engine(keyword_style, kind="inline") as engine, pytest.raises(InputError, match="wrap it in a list"):
        engine.score({"completion": "4", "answer": "4"})


def test_unpicklable_reward_falls_back_to_inline_with_a_warning() -> None:
    with pytest.warns(UserWarning, match="runs inline in this process") as caught:
        engine = Engine(lambda completion: float(completion == "4"), workers=1)
    with engine:
        assert [r.value for r in engine.score([{"completion": "4"}, {"completion": "5"}])] == [1.0, 0.0]
        assert engine.pool is None  # no worker process was started for it
    assert len(caught) == 1


def test_inline_reward_with_a_timeout_warns_that_it_cannot_be_enforced() -> None:
    @reward(kind="inline", timeout=2)
    def cheap(completion: str) -> float:
        return 1.0

    with pytest.warns(UserWarning, match="cannot be enforced"):
        Engine(cheap).close()


def test_missing_column_is_an_error_naming_it() -> None:
    result = score_inline(keyword_style, Sample("q", "4"))
    assert result.status is Status.ERROR
    assert "answer" in result.reason


@pytest.mark.parametrize(
    ("returned", "expected"),
    [
        (True, 1.0),  # bool becomes float
        (False, 0.0),
        (3, 3.0),  # int becomes float
        (0.25, 0.25),
        (np.float32(0.5), 0.5),  # numpy scalar unwrapped
        (np.int64(2), 2.0),
    ],
)
def test_good_returns_become_floats(returned, expected) -> None:
    result = score_inline(lambda completion: returned)
    assert result.status is Status.OK
    assert result.value == expected and isinstance(result.value, float)


@pytest.mark.parametrize(
    ("returned", "needle"),
    [
        (None, "None"),  # the classic silent 0
        (math.nan, "non-finite"),
        (math.inf, "non-finite"),
        (-math.inf, "non-finite"),
        ("1.0", "str"),  # a string is not a score, even if it looks like one
        ([1.0], "list"),
        ({"reward": 1.0}, "dict"),
        (np.array([1.0, 2.0]), "ndarray"),
    ],
)
def test_bad_returns_are_errors_not_zeros(returned, needle) -> None:
    result = score_inline(lambda completion: returned)
    assert result.status is Status.ERROR
    assert result.value is None
    assert needle in result.reason


def test_exception_is_an_error_with_its_message() -> None:
    def boom(completion: str) -> float:
        raise ZeroDivisionError("the reward divided by zero")

    result = score_inline(boom)
    assert result.status is Status.ERROR and result.value is None
    assert result.reason == "ZeroDivisionError: the reward divided by zero"


def test_score_object_keeps_reason_components_and_info() -> None:
    result = score_inline(lambda completion: Score(0.0, reason="no answer", components={"fmt": 1}, info={"k": 2}))
    assert result.status is Status.OK and result.value == 0.0
    assert result.reason == "no answer"
    assert result.info == {"k": 2}


def test_score_with_nan_component_is_an_error() -> None:
    result = score_inline(lambda completion: Score(1.0, components={"x": math.nan}))
    assert result.status is Status.ERROR and "component 'x'" in result.reason


def test_decorator_sets_defaults_and_keeps_function_callable() -> None:
    @reward(kind="inline", timeout=3, name="short")
    def fn(completion: str) -> float:
        return 1.0

    rw = Reward.wrap(fn)
    assert (rw.kind, rw.timeout, rw.name) == (Kind.INLINE, 3, "short")
    assert fn("x") == 1.0
    assert Reward.wrap(fn, kind="process").kind is Kind.PROCESS  # explicit option wins


def test_invalid_options_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        Reward.wrap(keyword_style, timeout=0)
    with pytest.raises(ConfigError):
        Reward(fn=keyword_style, name="x", kind=Kind.ASYNC)
    with pytest.raises(ConfigError):
        Reward.wrap(42)  # type: ignore[arg-type]


def test_batch_plan_uses_lists() -> None:
    def batch_fn(prompts, completions, answer):
        return [float(c == a) for c, a in zip(completions, answer, strict=True)]

    plan = CallPlan.build(batch_fn, batch=True)
    kwargs = plan.batch_kwargs([S, Sample("q", "5", row={"answer": "4"})])
    assert kwargs == {"prompts": ["What is 2+2?", "q"], "completions": ["4", "5"], "answer": ["4", "4"]}


def test_unknown_names_in_areal_slots_prefer_their_own_column() -> None:
    # AReaL's agent workflows call `fn(result=..., answer=...)`: columns named like the parameters win
    def agent_style(result, answer):
        return float(result == answer)

    right = Sample("", "", row={"result": "5", "answer": "5"})
    wrong = Sample("", "", row={"result": "4", "answer": "5"})
    assert [score_inline(agent_style, s).value for s in (right, wrong)] == [1.0, 0.0]
