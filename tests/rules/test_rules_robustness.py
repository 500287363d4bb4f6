"""Extractors and rule rewards on arbitrary and adversarial text: never raise, never take long.

Property tests (hypothesis) feed arbitrary Unicode; the adversarial tests feed megabyte inputs shaped to trigger
quadratic scans or regex backtracking (the old ``^\\s*`` answer-line pattern took 7 s on 1,000 newlines). Each
adversarial test has a generous time bound: it guards against super-linear behaviour, not for speed (throughput
is measured in bench/p_rules.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rewardflow.rules.answer import (
    extract_final_answer,
    find_boxed,
    find_tag,
    parse_plain_number,
    split_hedge,
    top_level_split,
)
from rewardflow.rules.choice import clevr_count_reward, multiple_choice_reward, parse_choice
from rewardflow.rules.format import Format
from rewardflow.rules.json_output import JsonReward
from rewardflow.rules.length import Repetition
from rewardflow.rules.math import gsm8k_reward
from rewardflow.rules.text import exact_match_reward, f1_reward
from rewardflow.types import Score

# text biased towards the characters the extractors care about
ALPHABET = st.sampled_from(list("\\boxed{}()[]$#:,./ -+0123456789ABCanswer is\n<>/thinkfrac^!%")) | st.characters()
TEXT = st.text(alphabet=ALPHABET, max_size=400)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

EXTRACTORS: list[Callable[[str], Any]] = [
    extract_final_answer,
    find_boxed,
    lambda t: find_tag(t, "answer"),
    parse_plain_number,
    split_hedge,
    top_level_split,
    parse_choice,
]

CHEAP_REWARDS: list[Callable[[str], Score]] = [
    lambda c: multiple_choice_reward(c, answer="B"),
    lambda c: clevr_count_reward(c, answer="3"),
    lambda c: exact_match_reward(c, answer="Paris"),
    lambda c: f1_reward(c, answer="Paris"),
    Format(),
    Format(require_boxed=True, prefilled=True),
    JsonReward(),
    Repetition(),
]


@FAST
@given(TEXT)
def test_extractors_never_raise(text: str) -> None:
    for extract in EXTRACTORS:
        extract(text)


@FAST
@given(TEXT)
def test_cheap_rewards_return_a_score_in_range(text: str) -> None:
    for fn in CHEAP_REWARDS:
        result = fn(text)
        assert isinstance(result, Score) and -1.0 <= result.value <= 1.0


@settings(max_examples=60, deadline=None)
@given(TEXT)
def test_gsm8k_on_arbitrary_text_scores_or_says_why(text: str) -> None:
    # the math path may legitimately raise only for an undecidable comparison; arbitrary text never does that
    result = gsm8k_reward(text, answer="#### 18")
    assert result.value in (0.0, 1.0)
    assert result.value == 1.0 or result.reason


ADVERSARIAL = {
    "newlines": "\n" * 1_000_000 + "x",
    "unclosed boxed": "\\boxed{" * 150_000,
    "nested braces": "\\boxed" + "{" * 10_000 + "}" * 10_000,
    "deep nesting 1MB": "\\boxed" + "{" * 500_000 + "}" * 500_000,
    "many boxed": "\\boxed{1}" * 100_000,
    "answer is + spaces": "answer is" + " " * 1_000_000,
    "A: lines": "A:" * 500_000,
    "answer tags": "<answer>" * 120_000,
    "closing tags": "</answer>" * 120_000,
    "spaces and dots": "5 a" + " ." * 500_000 + "!",
    "digits and commas": "1," * 500_000,
    "hash marks": "#" * 1_000_000,
    "brackets": "[" * 1_000_000,
    "think tags": "<think>" * 120_000,
    "answer then spaces": "The answer is 5" + " " * 1_000_000 + "x",
    "stray closing braces": "The answer is 5" + "}" * 1_000_000,
    "final answer headings": "### Final Answer\n" * 60_000,
    "special tokens": "#### 5" + "<|im_end|>" * 100_000,
    "empty answer lines": "Answer:\n" * 120_000,
}


@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_adversarial_inputs_are_linear(name: str) -> None:
    text = ADVERSARIAL[name]
    start = time.perf_counter()
    for extract in EXTRACTORS:
        extract(text)
    for fn in CHEAP_REWARDS:
        fn(text)
    gsm8k_reward(text, answer="#### 18")
    elapsed = time.perf_counter() - start
    assert elapsed < 20.0, f"{name}: {elapsed:.1f}s for {len(text):,} characters"


# LaTeX-ish answers without ^ or ! cannot build huge numbers, so in-process scoring must always decide
SAFE_LATEX = st.text(alphabet=st.sampled_from(list("0123456789+-*/{}()[]\\fracsqrtpi,.xyz= %$<>ldots")), max_size=40)
ANY_LATEX = st.text(alphabet=st.sampled_from(list("0123456789+-*/^!{}()\\fracsqrt,.xy= ")), max_size=30)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SAFE_LATEX)
def test_math_on_arbitrary_latex_decides(answer: str) -> None:
    from rewardflow.rules.math import math_reward

    result = math_reward(f"\\boxed{{{answer}}}", answer="\\frac{3}{4}")
    assert result.value in (0.0, 1.0)
    assert result.value == 1.0 or result.reason


@pytest.fixture(scope="module")
def math_engine() -> Any:
    from rewardflow import Engine

    with Engine("math", workers=2, timeout=3.0) as engine:
        yield engine


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ANY_LATEX, min_size=30, max_size=30))
def test_math_on_any_latex_is_scored_undecided_or_timed_out(math_engine: Any, answers: list[str]) -> None:
    """Powers and factorials may be too large to compare (error) or hang sympy (timeout): never a wrong score."""
    from rewardflow import Status

    rows = [{"prompt": "p", "completion": f"\\boxed{{{a}}}", "answer": "720"} for a in answers]
    start = time.perf_counter()
    results = math_engine.score(rows)
    assert time.perf_counter() - start < 120
    for answer, result in zip(answers, results, strict=True):
        if result.status is Status.OK:
            assert result.value in (0.0, 1.0)
        elif result.status is Status.ERROR:
            assert "UndecidedError" in result.reason, (answer, result.reason)


UNANCHORED_PATHOLOGICAL = [
    "Then " + "9^{" * 40 + "9" + "}" * 40,  # a power tower math-verify would try to evaluate
    "so it is " + "(" * 3000 + "1" + ")" * 3000,
    "x" * 200_000,
    "The value: " + "\\frac{1}{" * 500 + "2" + "}" * 500,
    "1 + " * 50_000 + "1",
    "100000!" + " then " + "10^{10^{10^{10}}}",
]


def test_unanchored_fallback_ends_in_a_typed_status(math_engine: Any) -> None:
    """No anchor: math-verify reads the completion's tail; whatever it does, the engine ends with a status."""
    from rewardflow import Status

    rows = [{"prompt": "p", "completion": c, "answer": "720"} for c in UNANCHORED_PATHOLOGICAL]
    start = time.perf_counter()
    results = math_engine.score(rows)
    assert time.perf_counter() - start < 120
    for completion, result in zip(UNANCHORED_PATHOLOGICAL, results, strict=True):
        assert result.status in (Status.OK, Status.TIMEOUT, Status.ERROR), completion[:40]
        if result.status is Status.OK:
            assert result.value == 0.0 and result.reason, completion[:40]
        if result.status is Status.ERROR:
            assert "UndecidedError" in result.reason, (completion[:40], result.reason)
