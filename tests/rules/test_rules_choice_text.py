"""``multiple_choice``, ``clevr_count``, ``exact_match`` and ``f1``: what scores 1, what scores 0, what is gamed."""

from __future__ import annotations

import pytest

from rewardflow import InputError
from rewardflow.rules.choice import clevr_count_70k_reward_fn, clevr_count_reward, multiple_choice_reward, parse_choice
from rewardflow.rules.text import exact_match_reward, f1_reward, normalize_text

MC = [
    # (completion, gold, expected, trap)
    ("B", "B", 1.0, "a bare letter"),
    ("(B)", "B", 1.0, "letter in parentheses"),
    ("B.", "B", 1.0, "letter with a period"),
    ("Let me think... \\boxed{B}", "B", 1.0, "boxed letter"),
    ("\\boxed{\\text{(B)}}", "B", 1.0, "boxed text letter"),
    ("Reasoning.\nAnswer: B", "B", 1.0, "Answer: line"),
    ("The answer is (B) Paris.", "B", 1.0, "answer is, with option text"),
    ("<answer>B) Paris</answer>", "B", 1.0, "answer tag with option text"),
    ("**Answer: C**", "C", 1.0, "markdown bold"),
    ("Answer: B", 1, 1.0, "integer gold is a 0-based index (MMLU)"),
    ("Answer: 2", "2", 1.0, "digit labels (ARC)"),
    ("Answer: A or B", "B", 0.0, "hedge with or"),
    ("The answer is B/C", "B", 0.0, "hedge with a slash"),
    ("Answer: B, C", "B", 0.0, "hedge with a comma"),
    ("\\boxed{A} ... no, \\boxed{B}", "B", 0.0, "two boxed labels"),
    ("Answer: C", "B", 0.0, "wrong label"),
    ("I would pick B because A is wrong", "B", 0.0, "no anchor: never the first letter in the text"),
    ("A: B", "B", 0.0, "'A:' is not an answer anchor here"),
    ("Answer: b", "B", 0.0, "lowercase letters are not labels"),
]


@pytest.mark.parametrize(("completion", "gold", "expected", "trap"), MC, ids=[c[3] for c in MC])
def test_multiple_choice(completion: str, gold: object, expected: float, trap: str) -> None:
    result = multiple_choice_reward(completion, answer=gold)
    assert result.value == expected, result.reason
    if expected == 0.0:
        assert result.reason


def test_multiple_choice_gold_columns_and_errors() -> None:
    assert multiple_choice_reward("Answer: D", answerKey="D").value == 1.0
    assert multiple_choice_reward("Answer: D", ground_truth="(D)").value == 1.0
    with pytest.raises(InputError, match="missing gold"):
        multiple_choice_reward("Answer: D")
    with pytest.raises(InputError, match="not an option label"):
        multiple_choice_reward("Answer: D", answer="Paris")
    with pytest.raises(InputError, match="out of range"):
        multiple_choice_reward("Answer: D", answer=12)


def test_parse_choice() -> None:
    assert parse_choice("(C) 42") == ("C", False)
    assert parse_choice("C and D") == ("C", True)
    assert parse_choice("C and C") == ("C", False)
    assert parse_choice("Paris") == (None, False)


COUNT = [
    ("There are [3] objects.", "3", 1.0, "AReaL's bracket format"),
    ("I count 1, 2, 3. \\boxed{3}", "3", 1.0, "boxed"),
    ("<answer>3</answer>", 3, 1.0, "answer tag, integer gold"),
    ("The answer is three.", "3", 1.0, "number word"),
    ("[1] cube, [2] sphere\n\nSo: [2]", "2", 1.0, "enumeration brackets on earlier lines"),
    ("[3] or [4]", "3", 0.0, "hedge on the answer line"),
    ("\\boxed{3} \\boxed{4}", "4", 0.0, "two boxed counts"),
    ("There are 3 objects.", "3", 0.0, "no anchor: never the last number"),
    ("\\boxed{3.5}", "3", 0.0, "not an integer"),
    ("[about 3]", "3", 0.0, "not a bare count"),
    ("\\boxed{4}", "3", 0.0, "wrong count"),
]


@pytest.mark.parametrize(("completion", "gold", "expected", "trap"), COUNT, ids=[c[3] for c in COUNT])
def test_clevr_count(completion: str, gold: object, expected: float, trap: str) -> None:
    result = clevr_count_reward(completion, answer=gold)
    assert result.value == expected, result.reason


def test_clevr_count_gold_errors_and_areal_name() -> None:
    with pytest.raises(InputError, match="not an integer"):
        clevr_count_reward("[3]", answer="three-ish")
    assert clevr_count_70k_reward_fn("p", "[5]", [1], [2], "5") == 1.0
    assert clevr_count_70k_reward_fn("p", "[5] or [6]", None, None, answer="5") == 0.0


QA = [
    # (completion, golds, exact, f1, trap)
    ("Paris", "Paris", 1.0, 1.0, "identical"),
    ("the Paris.", "paris", 1.0, 1.0, "article, case and punctuation normalised"),
    ("<answer>Barack Obama</answer>", ["Obama", "Barack Obama"], 1.0, 1.0, "best of several golds"),
    ("Answer: Barack Hussein Obama", "Barack Obama", 0.0, 0.8, "partial overlap"),
    ("Paris or London", "Paris", 0.0, 0.0, "hedge"),
    ("Either Paris, either London", "Paris", 0.0, 0.0, "hedge with either"),
    ("London", "Paris", 0.0, 0.0, "wrong"),
    ("salt or pepper", "salt or pepper", 1.0, 1.0, "a gold that itself says 'or' is no hedge"),
]


@pytest.mark.parametrize(("completion", "golds", "em", "f1", "trap"), QA, ids=[c[4] for c in QA])
def test_exact_match_and_f1(completion: str, golds: object, em: float, f1: float, trap: str) -> None:
    assert exact_match_reward(completion, answer=golds).value == em
    assert f1_reward(completion, answer=golds).value == pytest.approx(f1)


def test_squad_answers_column() -> None:
    answers = {"text": ["Denver Broncos", "Broncos"], "answer_start": [177, 185]}
    assert exact_match_reward("The Broncos.", answers=answers).value == 1.0
    with pytest.raises(InputError, match="missing gold"):
        f1_reward("x")
    with pytest.raises(InputError):
        f1_reward("x", answer=[1, 2])


def test_normalize_text() -> None:
    assert normalize_text("  The  Eiffel-Tower!! ") == "eiffeltower"
    assert normalize_text("ＡＢＣ") == "abc"  # NFKC folds full-width letters
