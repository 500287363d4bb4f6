"""Math rewards on math-verify: ``gsm8k`` and ``math``.

Both score 1.0 when the completion's *anchored* final answer (see :mod:`rewardflow.rules.answer`) equals the gold
answer and 0.0 otherwise; a 0 always comes with a reason (no anchor, hedge, unparseable, different value).

How math-verify is used, and why:

* Its own timeouts are switched off (``parsing_timeout=None``, ``timeout_seconds=None``). They are built on
  ``signal.alarm``, which only works on a main thread; elsewhere they fail and math-verify returns "not equal",
  i.e. a correct answer silently becomes 0. The engine's killable per-call timeout bounds the time instead, and a
  timeout is reported as ``status=timeout``, never as 0.
* The gold is wrapped as ``$...$`` before parsing, so a LaTeX gold like ``10\\sqrt{2}`` is parsed whole rather
  than truncated to its first number (which would let "10" match).
* Only the extracted final answer is parsed, not the whole completion: this is what makes the reward anchored,
  and parsing a few characters is much cheaper than parsing a full chain of thought.
* Plain numbers on both sides (GSM8K's case) are compared exactly as fractions without calling sympy at all.
"""

from __future__ import annotations

import logging
from typing import Any

# Eager on purpose: the worker forkserver preloads this module, so every worker starts with sympy and
# math-verify already imported instead of paying ~1 s on its first LaTeX answer.
import math_verify  # noqa: F401

from rewardflow.errors import InputError
from rewardflow.rules.answer import extract_final_answer, parse_plain_number
from rewardflow.types import Score

__all__ = ["gsm8k_gold", "gsm8k_reward", "gsm8k_reward_fn", "math_reward", "math_verify_equal"]


def gsm8k_gold(answer: str) -> str:
    """The gold value of a GSM8K ``answer`` field: the text after ``####`` (or the whole field if absent)."""
    if "####" in answer:
        answer = answer.rsplit("####", 1)[1]
    return answer.strip()


def _gold(answer: Any, ground_truth: Any, solution: Any) -> str:
    for value in (answer, ground_truth, solution):
        if value is None:
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return repr(value) if isinstance(value, float) else str(value)
        if isinstance(value, str) and value.strip():
            return value
        if isinstance(value, dict) and "ground_truth" in value:  # verl's reward_model column
            return str(value["ground_truth"])
    raise InputError("missing gold answer: expected a column 'answer', 'ground_truth' or 'solution'")


def math_verify_equal(gold: str, predicted: str) -> bool:
    """math-verify equivalence of two answer strings, with its signal-based timeouts disabled.

    Raises :class:`~rewardflow.errors.InputError` if the *gold* cannot be parsed: a broken dataset row is an
    error to report, not a zero to train on.
    """
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    _silence_disabled_timeout_warning()
    configs = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    gold_parsed = parse(_as_latex(gold), extraction_config=configs, parsing_timeout=None)  # type: ignore[arg-type]
    if not gold_parsed:
        raise InputError(f"gold answer {gold!r} could not be parsed by math-verify")
    pred_parsed = parse(_as_latex(predicted), extraction_config=configs, parsing_timeout=None)  # type: ignore[arg-type]
    if not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


class _DropDisabledTimeoutWarning(logging.Filter):
    """math-verify warns on every call that its timeout is off; here that is deliberate (see module docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Timeout is disabled" not in record.getMessage()


def _silence_disabled_timeout_warning() -> None:
    for name in ("math_verify.parser", "math_verify.grader"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropDisabledTimeoutWarning) for f in log.filters):
            log.addFilter(_DropDisabledTimeoutWarning())


def _as_latex(text: str) -> str:
    text = text.strip()
    if text.startswith("$") or text.startswith("\\[") or text.startswith("\\("):
        return text
    return f"${text}$"


def _compare(gold: str, completion: str) -> Score:
    found = extract_final_answer(completion)
    if found is None:
        return Score(0.0, reason="no final answer found (expected \\boxed{}, ####, 'the answer is' or 'A:')")
    if found.hedged:
        return Score(0.0, reason=f"hedged final answer {found.text!r}")
    gold_number = parse_plain_number(gold)
    pred_number = parse_plain_number(found.text)
    if gold_number is not None and pred_number is not None:
        equal = gold_number == pred_number
    else:
        equal = math_verify_equal(gold, found.text)
    if equal:
        return Score(1.0)
    return Score(0.0, reason=f"final answer {found.text[:80]!r} != gold {gold[:80]!r}")


def gsm8k_reward(completion: str, answer: Any = None, ground_truth: Any = None, **_: Any) -> Score:
    """GSM8K accuracy: 1.0 iff the anchored final answer equals the number after ``####`` in the gold.

    The gold comes from the ``answer`` column (GSM8K's own ``... #### 18``) or ``ground_truth``; commas, ``$``,
    ``%`` and trailing units are tolerated on both sides. Scores 0 (with a reason) for: no anchored answer, a
    hedge ("70, 71, or 72", two different boxed answers), or a different value.
    """
    return _compare(gsm8k_gold(_gold(answer, ground_truth, None)), completion)


def math_reward(completion: str, answer: Any = None, ground_truth: Any = None, solution: Any = None, **_: Any) -> Score:
    """Math accuracy: 1.0 iff the anchored final answer is mathematically equal to the gold (math-verify).

    The gold is the ``answer``/``ground_truth`` column (LaTeX or plain), or the boxed answer of a ``solution``
    column (MATH dataset). Scores 0 for no anchored answer, a hedge, or a different value.
    """
    gold = _gold(answer, ground_truth, None) if (answer is not None or ground_truth is not None) else None
    if gold is None:
        sol = _gold(None, None, solution)
        found = extract_final_answer(sol)
        gold = found.text if found is not None else sol
    elif "####" in gold:
        gold = gsm8k_gold(gold)
    return _compare(gold, completion)


def gsm8k_reward_fn(
    prompt: str, completions: str, prompt_ids: Any, completion_ids: Any, answer: Any, **kwargs: Any
) -> float:
    """AReaL drop-in: same name and signature as ``areal.reward.gsm8k.gsm8k_reward_fn``.

    Unlike AReaL's, it does not catch exceptions and return 0: run it through the rewardflow engine, which turns
    a failure into ``status=error`` and a hang into ``status=timeout``.
    """
    return gsm8k_reward(completions, answer=answer).value
