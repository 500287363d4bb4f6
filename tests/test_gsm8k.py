"""gsm8k and math basics: gold parsing, anchoring, hedges, and the 5,276 labelled example solutions."""

from __future__ import annotations

import pytest

from rewardflow import Engine
from rewardflow.data import gsm8k_examples
from rewardflow.rules.math import gsm8k_reward, gsm8k_reward_fn, math_reward

CASES = [
    # (completion, gold, expected, trap)
    ("so she makes 9 * 2 = 18\nA: 18", "#### 18", 1.0, "GSM8K few-shot 'A:' line"),
    ("The answer is $1,000.", "#### 1000", 1.0, "thousands separator and dollar sign"),
    ("#### 18 dollars", "#### 18", 1.0, "trailing unit"),
    ("#### 18.00", "#### 18", 1.0, "trailing zeros"),
    ("\\boxed{18}", "Janet sells 9 eggs.\n#### 18", 1.0, "boxed answer, gold with working"),
    ("She has 18 eggs, 16 left", "#### 18", 0.0, "no anchor: math-verify's last number (16) is not the gold"),
    ("#### 18<|im_end|>", "#### 18", 1.0, "end-of-sequence token left by decoding"),
    ("The answer is 18.<|im_end|>", "#### 18", 1.0, "sentence end, then the chat template's end token"),
    ("A: 18</s>", "#### 18", 1.0, "Llama-2 / Mistral end token"),
    ("The answer is 18<|eot_id|><|end_of_text|>", "#### 18", 1.0, "Llama-3 end tokens, several"),
    ("#### 18<|endoftext|><|endoftext|><|endoftext|>", "#### 18", 1.0, "padding with the end token"),
    ("The answer is -18.", "#### 18", 0.0, "the sign after 'answer is' is kept"),
    ("A: 70, 71, or 72", "#### 71", 0.0, "hedge over a list"),
    ("\\boxed{3} or maybe \\boxed{4}", "#### 3", 0.0, "two different boxed answers"),
    ("A: 17", "#### 18", 0.0, "wrong value"),
    ("The answer is 18%", "#### 18", 1.0, "percent sign tolerated"),
    ("#### -3", "#### -3", 1.0, "negative"),
    ("#### 3", "#### -3", 0.0, "sign matters"),
    ("The final answer is \\frac{36}{2}", "#### 18", 1.0, "LaTeX fraction through math-verify"),
]


@pytest.mark.parametrize(("completion", "gold", "expected", "trap"), CASES, ids=[c[3] for c in CASES])
def test_gsm8k_table(completion: str, gold: str, expected: float, trap: str) -> None:
    assert gsm8k_reward(completion, answer=gold).value == expected


def test_zero_has_a_reason() -> None:
    assert "no final answer" in gsm8k_reward("16 left", answer="#### 16", unanchored="zero").reason
    assert "unanchored='last'" in gsm8k_reward("17 left", answer="#### 16").reason
    assert "hedged" in gsm8k_reward("A: 70, 71, or 72", answer="#### 70").reason


def test_math_gold_is_not_truncated() -> None:
    # math-verify would read a bare "10\sqrt{2}" gold as 10 if it were not wrapped
    assert math_reward("\\boxed{10}", answer="10\\sqrt{2}").value == 0.0
    assert math_reward("\\boxed{10\\sqrt{2}}", answer="10\\sqrt{2}").value == 1.0


def test_missing_gold_is_an_error_not_a_zero() -> None:
    with Engine("gsm8k", kind="inline") as engine:
        result = engine.score([{"prompt": "q", "completion": "#### 3"}])[0]
    assert result.status.value == "error" and "missing gold answer" in result.reason


def test_areal_drop_in_signature() -> None:
    assert gsm8k_reward_fn("q", "#### 5", [1], [2], answer="#### 5") == 1.0
    assert gsm8k_reward_fn("q", "#### 4", None, None, "#### 5", extra="ignored") == 0.0


def test_all_5276_example_solutions_agree_with_their_labels() -> None:
    rows = list(gsm8k_examples())
    assert len(rows) == 5276
    with Engine("gsm8k", kind="inline") as engine:
        results = engine.score(rows)
    assert all(r.ok for r in results)
    agree = sum((r.value == 1.0) == row["is_correct"] for r, row in zip(results, rows, strict=True))
    assert agree == 5276


def test_math_works_off_the_main_thread() -> None:
    # math-verify's own timeouts use signal.alarm, which raises outside the main thread; ours are off
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        value = pool.submit(lambda: math_reward("\\boxed{0.5}", answer="\\frac{1}{2}").value).result()
    assert value == 1.0
