"""``math``, ``gsm8k`` and ``geometry3k``: the hard-case table, the exactness layer, and the gaming attempts."""

from __future__ import annotations

import logging

import pytest

from rewardflow import Engine, InputError, Status
from rewardflow.errors import UndecidedError
from rewardflow.rules.equivalence import MAX_ANSWER_CHARS, math_equal, normalize_answer
from rewardflow.rules.math import (
    geometry3k_reward,
    geometry3k_reward_fn,
    gsm8k_reward,
    math_reward,
    math_verify_equal,
)
from tests.rules.math_cases import CASES

IDS = [f"{i:02d}-{c.comment}" for i, c in enumerate(CASES)]


def test_table_size_and_balance() -> None:
    # the issue asks for >= 60 cases, at least half of them cases where plain math-verify is wrong
    assert len(CASES) >= 60
    wrong = [c for c in CASES if float(c.math_verify_0_9_0_says) != c.expected]
    assert len(wrong) * 2 >= 60 and len(wrong) >= 30


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_math_gets_every_hard_case_right(case) -> None:  # type: ignore[no-untyped-def]
    result = math_reward(case.completion, answer=case.gold)
    assert result.value == case.expected, result.reason
    if case.expected == 0.0:
        assert result.reason  # every zero explains itself


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_math_verify_column_is_honest(case) -> None:  # type: ignore[no-untyped-def]
    """What the table says plain math-verify answers is what the installed math-verify answers."""
    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    assert verify(parse(case.gold), parse(case.completion)) is case.math_verify_0_9_0_says


def test_installed_math_verify_is_the_one_the_table_describes() -> None:
    from importlib.metadata import version

    assert version("math-verify") == "0.9.0"


# ------------------------------------------------------------------------------- exactness layer, directly


@pytest.mark.parametrize(
    ("gold", "pred", "equal"),
    [
        ("1/2004!", "1/2006!", False),
        ("\\frac{1}{2^{99}}", "\\frac{1}{2^{98}}", False),
        ("4", "4\\sqrt(2)", False),
        ("4\\sqrt{2}", "4\\sqrt(2)", True),  # the malformed form means the right thing once repaired
        ("1, 3, 5, \\ldots, 2n-1", "1, 2, \\ldots, n", False),
        ("1, 3, 5, \\ldots, 2n-1", "1,3,5,\\dots,2n-1", True),
        ("1, 2, \\ldots, n", "1, 2, n", False),  # the ellipsis itself is part of the answer
        ("\\frac{1}{3}", "0.333333", True),  # a decimal agrees to a relative 5e-6
        ("\\frac{1}{3}", "0.3333", False),
        ("2", "2.0000001", False),  # two plain decimals are exact
        ("1.5 \\times 10^{-8}", "3 \\times 10^{-8}", False),
        ("0", "0.0", True),
        ("(1, 2)", "(1, 2)", True),
        ("x = 5", "y = 5", False),
        ("\\text{Monday}", "monday", True),
        ("(C)", "C", True),
        ("5", "2 + 3 = 5", True),  # a worked computation ending in the value
        ("6", "5 = 6", False),  # a false equation is not an answer of 6
        ("6", "x = 2 + 3 = 6", False),
    ],
)
def test_math_equal(gold: str, pred: str, equal: bool) -> None:
    assert math_equal(gold, pred).equal is equal


def test_unparseable_gold_is_an_error_not_a_zero() -> None:
    with pytest.raises(InputError, match="could not be parsed"):
        math_equal("\\frac{", "3")
    with Engine("math", kind="inline") as engine:
        result = engine.score([{"prompt": "q", "completion": "\\boxed{3}", "answer": "\\frac{"}])[0]
    assert result.status is Status.ERROR and "InputError" in result.reason


def test_unparseable_answer_is_a_zero_with_a_reason() -> None:
    verdict = math_equal("3", "\\frac{")
    assert not verdict.equal and "could not be parsed" in verdict.reason


def test_identical_unparseable_answers_match_but_different_ones_do_not() -> None:
    assert math_equal("a\\b", "a\\b").equal
    with pytest.raises(InputError):
        math_equal("a\\b", "c\\d")


def test_too_large_to_compare_is_undecided_not_guessed() -> None:
    # equal to 40 digits, but the exact values have ~10^10 digits: refuse instead of guessing
    with pytest.raises(UndecidedError):
        math_equal("10^{10^{10}}+1", "10^{10^{10}}")
    # numerically far apart: decided without computing the huge value
    verdict = math_equal("3", "(10^{8})!")
    assert not verdict.equal and "too large" in verdict.reason
    assert math_equal("10^{10^{10}}", "10^{10^{10}}").equal  # identical: no arithmetic needed


def test_overlong_answer_is_not_parsed() -> None:
    verdict = math_equal("3", "1+" * MAX_ANSWER_CHARS + "2")
    assert not verdict.equal and "characters long" in verdict.reason


def test_normalize_answer_fixes() -> None:
    assert normalize_answer("$4\\sqrt(2)$") == "4\\sqrt{2}"
    assert normalize_answer("2\\,000") == "2000"
    assert normalize_answer("1.5e-3") == "1.5\\times10^{-3}"
    assert normalize_answer("\\dfrac{1}{2}.") == "\\frac{1}{2}"


def test_math_verify_equal_is_kept_as_plain_math_verify() -> None:
    # the old helper stays available (and keeps math-verify's rounding: that is what it is for)
    assert math_verify_equal("\\frac{1}{2004!}", "\\frac{1}{2006!}") is True
    assert math_verify_equal("10\\sqrt{2}", "10") is False  # the gold is still wrapped


# ---------------------------------------------------------------------------------------------- gsm8k


@pytest.mark.parametrize(
    ("completion", "expected", "trap"),
    [
        ("A: 70, 71, or 72", 0.0, "AReaL's gsm8k scores this hedge 1.0"),
        ("The answer is 72 or 70", 0.0, "hedge, gold first"),
        ("#### 72", 1.0, "plain"),
        ("A: $72.00", 1.0, "currency and decimals"),
        ("So 72 is wrong, and 71 is it.", 0.0, "no anchor"),
        ("The answer is 7.2e1", 1.0, "scientific notation"),
        ("\\boxed{72} \\boxed{71}", 0.0, "two boxed answers"),
    ],
)
def test_gsm8k_gaming(completion: str, expected: float, trap: str) -> None:
    assert gsm8k_reward(completion, answer="#### 72").value == expected, trap


# ------------------------------------------------------------------------------------------ geometry3k


@pytest.mark.parametrize(
    ("completion", "gold", "expected", "trap"),
    [
        ("<think>...</think> so x = \\boxed{5\\sqrt{3}}", "2\\sqrt{3}", 0.0, "AReaL's last-number fallback: 1.0"),
        ("\\boxed{9/2}", "7/2", 0.0, "AReaL: 1.0 (last number 2)"),
        ("The length is 2\\sqrt{3}.", "2\\sqrt{3}", 0.0, "right value, but no boxed answer"),
        ("The answer is [2\\sqrt{3}]", "2\\sqrt{3}", 0.0, "brackets are not boxed"),
        ("\\boxed{2\\sqrt{3}}", "2\\sqrt{3}", 1.0, "boxed"),
        ("\\boxed{\\sqrt{12}}", "2\\sqrt{3}", 1.0, "equivalent radical"),
        ("\\boxed{\\frac{7}{2}}", "7/2", 1.0, "fraction forms"),
        ("\\boxed{3.5}", "7/2", 1.0, "decimal"),
        ("\\boxed{2\\sqrt{3}} or \\boxed{3\\sqrt{2}}", "2\\sqrt{3}", 0.0, "hedge"),
    ],
)
def test_geometry3k(completion: str, gold: str, expected: float, trap: str) -> None:
    assert geometry3k_reward(completion, answer=gold).value == expected, trap


def test_areal_drop_ins() -> None:
    assert geometry3k_reward_fn("p", "\\boxed{14}", [1], [2], "14") == 1.0
    assert geometry3k_reward_fn("p", "14", None, None, answer="14", images=[]) == 0.0


def test_math_reads_gold_from_a_solution_column() -> None:
    solution = "We find that the sum is $\\boxed{\\frac{14}{3}}$."
    assert math_reward("\\boxed{\\frac{28}{6}}", solution=solution).value == 1.0
    assert math_reward("\\boxed{5}", solution=solution).value == 0.0


def test_list_gold_accepts_several_boxed_values() -> None:
    assert math_reward("\\boxed{2} and \\boxed{3}", answer="2, 3").value == 1.0
    assert math_reward("\\boxed{2} and \\boxed{3}", answer="3").value == 0.0


# Common ways a correct answer is written differently from the gold (MATH-style); each must score 1.
COMMON_FORMS = [
    ("\\dfrac{14}{3}", "\\frac{14}{3}"),
    ("C", "\\text{(C)}"),
    ("6-5i", "6 - 5i"),
    ("(3, \\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ("\\begin{pmatrix} -1/3 \\\\ 2/3 \\end{pmatrix}", "\\begin{pmatrix}-\\frac{1}{3}\\\\ \\frac{2}{3}\\end{pmatrix}"),
    ("10", "10\\%"),
    ("[-2, 7]", "x \\in [-2,7]"),
    ("(-\\infty, -4) \\cup (-4, 6) \\cup (6, \\infty)", "(-\\infty,-4)\\cup(-4,6)\\cup(6,\\infty)"),
    ("32348", "\\$32,\\!348"),
    ("Evelyn", "\\text{Evelyn}"),
    ("7i - 2", "-2 + 7i"),
    ("-\\frac{5}{2}", "y = -\\frac{5}{2}"),
    ("2,-1", "-1, 2"),
    ("5", "5\\text{ cm}^2"),
    ("2\\sqrt{2}", "\\sqrt{8}"),
    ("x^2+2x+1", "(x+1)^2"),
    ("-\\frac{1}{2}", "-0.5"),
    ("x \\ge 3", "[3, \\infty)"),
    ("2^{10}", "1024"),
    ("\\binom{10}{3}", "120"),
    ("e^{i\\pi}", "-1"),
    ("\\log_2 8", "3"),
    ("1,000,000", "10^6"),
    ("\\frac{1}{4}", "25\\%"),
]


@pytest.mark.parametrize(("gold", "pred"), COMMON_FORMS)
def test_common_equivalent_forms(gold: str, pred: str) -> None:
    result = math_reward(f"The answer is $\\boxed{{{pred}}}$", answer=gold)
    assert result.value == 1.0, result.reason


def test_a_range_is_a_hedge_but_a_subtraction_is_not() -> None:
    assert gsm8k_reward("The answer is 3-4 hours", answer="#### 3").value == 0.0
    assert math_reward("\\boxed{6 - 5i}", answer="6-5i").value == 1.0
