"""The classes of mistake of issue 9 (A-O), one row per trap, with what plain math-verify says about each.

Each row is ``(completion, gold, expected, math_verify_says, trap)``: ``expected`` is the right score and what
``math`` must return; ``math_verify_says`` is ``verify(parse("$" + gold + "$"), parse(completion))`` with the
installed math-verify's defaults, re-measured by ``test_math_verify_column``. Where the two differ, the trap names
the rule that makes rewardflow right (docs/en/builtin-rewards.md, "Differences from math-verify").
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import pytest

from rewardflow.rules.answer import extract_final_answer, strip_special_tokens
from rewardflow.rules.math import gsm8k_reward, math_reward


class Row(NamedTuple):
    completion: str
    gold: str
    expected: float
    math_verify_says: bool
    trap: str


ROWS = [
    Row("The answer is -5.", "5", 0.0, False, "A: the sign after 'answer is' is the answer's"),
    Row("The answer is -5.", "-5", 1.0, True, "A: a negative answer"),
    Row("The final answer is: -3", "3", 0.0, False, "A: sign after a colon"),
    Row(
        "<think>maybe \\boxed{2}</think><answer>7</answer>",
        "7",
        1.0,
        False,
        "E: a box inside <think> loses to the answer after it",
    ),
    Row("<think>maybe \\boxed{2}</think><answer>7</answer>", "2", 0.0, True, "E: the tentative box is not the answer"),
    Row(
        "Part 1: \\boxed{3}. Part 2: \\boxed{5}.\nFinal Answer: 8",
        "8",
        1.0,
        False,
        "E: a closing Final Answer line beats earlier boxes",
    ),
    Row(
        "\\boxed{8}\nWait, that is wrong. The answer is 6.",
        "8",
        0.0,
        True,
        "E: the last commitment wins, whatever its anchor",
    ),
    Row("\\boxed{4 1}", "41", 0.0, False, "K: digits split by a space are two numbers"),
    Row("\\boxed{1 000}", "1000", 1.0, False, "K: a space grouping thousands is a separator"),
    Row("\\boxed{1:00}", "12:00", 0.0, False, "L: clock times parse to complex infinity; never equal by value"),
    Row("\\boxed{3:0}", "5:0", 0.0, False, "L: ratios with a zero term"),
    Row("\\boxed{12:00}", "12:00", 1.0, True, "L: the same time written the same way"),
    Row("\\boxed{2a+b}", "9 = 2a+b", 0.0, False, "M: a numeric left side makes a condition, not a value"),
    Row("\\boxed{5}", "2 + 3 = 5", 1.0, False, "M: a worked computation's value is its last side"),
    Row("Final Answer: The final answer is $12$. I hope it is correct.", "12", 1.0, True, "B: Minerva's closing line"),
    Row("The answer is 7, because 3 + 4 = 7.", "7", 1.0, True, "B: an explanation after the answer"),
    Row("The answer is 7, because 3 + 4 = 8.", "8", 0.0, True, "B: ... and not the number in the explanation"),
    Row("**42**", "42", 1.0, True, "C: bold answer alone"),
    Row("**Answer:** 42", "42", 1.0, True, "C: bold anchor"),
    Row("<answer>**42**</answer>", "42", 1.0, False, "C: bold inside the tag"),
    Row("\\boxed{\\text{3}}", "3", 1.0, True, "D: \\text around a number"),
    Row("\\boxed{\\textbf{42}}", "42", 1.0, True, "D: \\textbf"),
    Row("\\boxed{\\mathbf{42}}", "42", 1.0, True, "D: \\mathbf"),
    Row("\\boxed{\\mathrm{42}}", "42", 1.0, True, "D: \\mathrm"),
    Row(
        "\\boxed{\\dfrac12} so the answer is \\boxed{\\frac{1}{2}}",
        "\\frac{1}{2}",
        1.0,
        True,
        "F: one value in two notations",
    ),
    Row("\\boxed{0.5}, i.e. \\boxed{\\frac12}", "\\frac{1}{2}", 1.0, True, "F: decimal then fraction"),
    Row("\\boxed{x = 3} so \\boxed{3}", "3", 1.0, True, "F: an assignment and its value"),
    Row("\\boxed{\\boxed{5}}", "5", 1.0, True, "F: a nested box"),
    Row(
        "Fill in \\boxed{\\phantom{2}}: the answer is \\boxed{4}",
        "4",
        1.0,
        True,
        "F: a placeholder box copied from the question",
    ),
    Row("\\boxed{} ... \\boxed{4}", "4", 1.0, False, "F: an empty box"),
    Row("\\boxed{3} or \\boxed{4}", "4", 0.0, False, "F: two different values are a hedge"),
    Row("\\boxed{(3,2)}", "(p,q)=(3,2)", 1.0, True, "G: labelled tuple gold"),
    Row("\\boxed{AB=4}", "4", 1.0, True, "G: labelled answer"),
    Row("\\boxed{11:21}", "V_1:V_2=11:21", 1.0, True, "G: labelled ratio gold"),
    Row("\\boxed{m+n=7}", "7", 1.0, True, "G: a sum as label"),
    Row("\\boxed{x - y = 0}", "0", 0.0, True, "G: an equation equal to 0 is a condition, not a label"),
    Row("### Final Answer\n\n42", "42", 1.0, True, "H: heading, answer on a later line"),
    Row("The answer is:\n\\[ 42 \\]", "42", 1.0, True, "H: display math on the next line"),
    Row("Answer $9$", "9", 1.0, True, "I: anchor without a colon"),
    Row("\\boxed{1 - \\frac{1}{\\mathrm{e}}}", "1 - \\frac{1}{e}", 1.0, False, "J: upright e"),
    Row("\\boxed{2\\mathrm{i}}", "2i", 1.0, False, "J: upright i"),
    Row("\\boxed{30^\\circ}", "30", 1.0, True, "N: degrees"),
    Row("The answer is −5.", "-5", 1.0, False, "N: unicode minus"),
    Row("The answer is –5.", "-5", 1.0, False, "N: en-dash minus"),
    Row("\\boxed{3\\frac{1}{2}}", "\\frac{7}{2}", 1.0, True, "N: mixed number"),
    Row("\\boxed{\\varnothing}", "\\emptyset", 1.0, False, "N: empty set notations"),
    Row("The answer is √2.", "\\sqrt{2}", 1.0, False, "N: unicode root"),
    Row("The answer is ½.", "\\frac{1}{2}", 1.0, False, "N: unicode half"),
    Row("The answer is x².", "x^2", 1.0, False, "N: unicode square"),
    Row("The answer is 12\\$.", "12", 1.0, True, "N: a trailing escaped dollar"),
    Row("\\boxed{0.\\overline{3}}", "\\frac{1}{3}", 1.0, False, "N: repeating decimal"),
    Row("\\boxed{1, 2}", "\\boxed{1} and \\boxed{2}", 1.0, True, "O: several boxes in one gold"),
    Row("\\boxed{19, 46, 82}", "19, 46, and 82", 1.0, True, "O: Oxford-comma gold"),
    Row("\\boxed{(11,7), (7,11)}", "(11,7) or (7,11)", 1.0, True, "O: 'or' outside math mode in the gold"),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.trap for r in ROWS])
def test_math_gets_the_class_right(row: Row) -> None:
    result = math_reward(row.completion, answer=row.gold)
    assert result.value == row.expected, result.reason
    if row.expected == 0.0:
        assert result.reason


@pytest.mark.parametrize("row", ROWS, ids=[r.trap for r in ROWS])
def test_math_verify_column(row: Row) -> None:
    """The table's math-verify column is what the installed math-verify says (0.8.0 and 0.9.x alike)."""
    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    assert bool(verify(parse(f"${row.gold}$"), parse(row.completion))) is row.math_verify_says


@pytest.mark.parametrize(
    ("text", "stripped"),
    [
        ("#### 18<|im_end|>", "#### 18"),
        ("The answer is 18.<|im_end|>\n", "The answer is 18."),
        ("A: 18</s>", "A: 18"),
        ("x<|eot_id|><|end_of_text|>", "x"),
        ("x <|endoftext|>" + "<|endoftext|>" * 1000, "x"),
        ("x<\uff5cend\u2581of\u2581sentence\uff5c>", "x"),
        ("x<eos>", "x"),
        ("x<end_of_turn>\n", "x"),
        ("a <|not a token|>", "a <|not a token|>"),  # spaces: prose, not a special token
        ("|>", "|>"),
        ("", ""),
    ],
)
def test_strip_special_tokens(text: str, stripped: str) -> None:
    assert strip_special_tokens(text) == stripped


def test_special_tokens_never_cost_a_correct_answer() -> None:
    for token in ("<|im_end|>", "<|endoftext|>", "</s>", "<|eot_id|>", "<|end_of_text|>"):
        for completion in (f"#### 18{token}", f"The answer is 18.{token}", f"\\boxed{{18}}{token}"):
            assert gsm8k_reward(completion, answer="#### 18").value == 1.0, completion
            assert math_reward(completion, answer="18").value == 1.0, completion


def test_unanchored_modes() -> None:
    """No anchor: "last" (default) reads it as math-verify does, "bare" only a bare answer, "zero" nothing."""
    working = "Let x = 5. Then 2x = 10."
    last = math_reward(working, answer="$10$")
    assert last.value == 1.0 and "unanchored='last'" in last.reason
    for mode in ("bare", "zero"):
        score = math_reward(working, answer="$10$", unanchored=mode)
        assert score.value == 0.0 and f"unanchored='{mode}'" in score.reason
    bare = math_reward("x^2 + 2*x + 1", answer="x^2+2x+1", unanchored="bare")
    assert bare.value == 1.0 and "whole completion" in bare.reason
    assert math_reward("x^2 + 2*x + 1", answer="x^2+2x+1", unanchored="zero").value == 0.0
    assert math_reward("So 72 is wrong, and 71 is it.", answer="72").value == 0.0  # math-verify's last: 71
    assert math_reward("70, 71, or 72", answer="72", unanchored="bare").value == 0.0  # a bare hedge


def test_unanchored_option_is_checked() -> None:
    from rewardflow.errors import ConfigError

    with pytest.raises(ConfigError, match="unanchored"):
        math_reward("5", answer="5", unanchored="first")


def test_last_commitment_wins_by_position() -> None:
    text = "\\boxed{3}\nActually no.\n<answer>4</answer>\nThe answer is 5"
    found = extract_final_answer(text)
    assert found is not None and (found.text, found.anchor) == ("5", "answer is")
    assert extract_final_answer("The answer is 5. Final: \\boxed{6}").text == "6"
