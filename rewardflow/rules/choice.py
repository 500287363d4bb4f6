"""Rewards whose answer is a label or a count: ``multiple_choice`` and ``clevr_count``.

Both take the answer from an explicit anchor (``\\boxed{}``, ``<answer>``, "the answer is", "Answer:", or for
``clevr_count`` AReaL's ``[N]`` bracket format), never from the last letter or number that happens to appear in
the text, and both score a hedge ("A or B", ``\\boxed{3}`` then ``\\boxed{4}``, "[3] or [4]") as 0.

Not covered: lowercase option letters (``a`` is an English word), options beyond J, and counts written as words
above twenty.
"""

from __future__ import annotations

import re
from typing import Any

from rewardflow.errors import InputError
from rewardflow.rules.answer import find_boxed, find_tag
from rewardflow.types import Score

__all__ = [
    "clevr_count_70k_reward_fn",
    "clevr_count_reward",
    "multiple_choice_reward",
    "parse_choice",
]

_WRAPPER_RE = re.compile(r"\\(?:text|textbf|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
_LABEL_RE = re.compile(r"[ \t]*\(?[ \t]*([A-J]|[1-9])[ \t]*\)?(?=$|[\s.:),\]])")
_ONLY_LABEL_RE = re.compile(r"\(?([A-J]|[1-9])\)?[.:]?")
_OTHER_LABEL_RE = re.compile(r"(?:\bor\b|\band\b|/|,|&)[ \t]*\(?([A-J]|[1-9])\)?(?![A-Za-z0-9])")
_ANSWER_IS_RE = re.compile(r"answer[ \t]+is[ \t]*[:\-]?[ \t]*([^\n]*)", re.IGNORECASE)
_ANSWER_COLON_RE = re.compile(r"\banswer[ \t]*[:：][ \t]*([^\n]*)", re.IGNORECASE)
_BRACKET_RE = re.compile(r"\[[ \t]*([^\[\]\n]{0,40}?)[ \t]*\]")
_INT_RE = re.compile(r"[ \t]*\$?[ \t]*(\d{1,9})[ \t]*\$?[ \t]*\.?[ \t]*")
_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty"
).split()
_NUMBER_WORDS = {w: i for i, w in enumerate(_WORDS)}


def _unwrap(text: str) -> str:
    text = _WRAPPER_RE.sub(r"\1", text)
    return text.replace("$", "").replace("*", "").replace("{", "").replace("}", "").strip()


def parse_choice(text: str) -> tuple[str | None, bool]:
    """``(label, hedged)`` for an answer that starts with an option label: "B", "(B)", "B) Paris", "B or C".

    The label is ``None`` when the text does not start with one. A second, different label joined by
    "or" / "and" / "/" / "," makes it a hedge.
    """
    text = _unwrap(text[:2000])
    m = _LABEL_RE.match(text)
    if not m:
        return None, False
    label = m.group(1)
    others = {o for o in _OTHER_LABEL_RE.findall(text[m.end() :]) if o != label}
    return label, bool(others)


def _gold_label(answer: Any) -> str:
    if isinstance(answer, bool):
        raise InputError(f"multiple-choice gold must be a letter or an index, got {answer!r}")
    if isinstance(answer, int):
        if not 0 <= answer < 10:
            raise InputError(f"multiple-choice gold index {answer} is out of range 0-9")
        return "ABCDEFGHIJ"[answer]  # an integer gold is a 0-based index (MMLU's `answer` column)
    if isinstance(answer, str):
        label, hedged = parse_choice(answer)
        if label is not None and not hedged:
            return label
    raise InputError(f"multiple-choice gold {answer!r} is not an option label (A-J, 1-9) or a 0-based index")


def _choice_answer(completion: str) -> tuple[str | None, str, bool]:
    """``(label, anchor, hedged)`` for the anchored answer of a completion."""
    boxed = find_boxed(completion)
    if boxed:
        labels = [parse_choice(b) for b in boxed]
        distinct = {label for label, _ in labels if label is not None}
        label, hedged = labels[-1]
        return label, "boxed", hedged or len(distinct) > 1
    tagged = find_tag(completion, "answer")
    if tagged is not None:
        label, hedged = parse_choice(tagged)
        if label is not None:
            return label, "<answer>", hedged
    for anchor, pattern in (("answer is", _ANSWER_IS_RE), ("Answer:", _ANSWER_COLON_RE)):
        matches = pattern.findall(completion)
        if matches:
            label, hedged = parse_choice(matches[-1])
            if label is not None:
                return label, anchor, hedged
    if len(completion) <= 200:
        whole = _ONLY_LABEL_RE.fullmatch(_unwrap(completion))
        if whole:
            return whole.group(1), "whole completion", False
    return None, "", False


def multiple_choice_reward(
    completion: str, answer: Any = None, ground_truth: Any = None, answerKey: Any = None, **_: Any
) -> Score:
    """Multiple choice: 1.0 iff the anchored option label equals the gold label.

    Scores 1 for ``\\boxed{B}``, ``<answer>B</answer>``, "The answer is (B)", "Answer: B) Paris", or a completion
    that is only "B" / "(B)" / "B.". 0.0 for a different label, no anchored label, or a hedge ("A or B",
    two different boxed labels). The gold comes from ``answer`` (a letter, or a 0-based index as in MMLU),
    ``ground_truth`` or ``answerKey`` (ARC).
    """
    gold_value = next((v for v in (answer, ground_truth, answerKey) if v is not None), None)
    if gold_value is None:
        raise InputError("missing gold answer: expected a column 'answer', 'ground_truth' or 'answerKey'")
    gold = _gold_label(gold_value)
    label, anchor, hedged = _choice_answer(completion)
    if label is None:
        return Score(0.0, reason="no option label found (expected \\boxed{X}, <answer>X</answer>, 'Answer: X')")
    if hedged:
        return Score(0.0, reason=f"hedged answer ({anchor})")
    if label != gold:
        return Score(0.0, reason=f"answered {label} ({anchor}), gold is {gold}")
    return Score(1.0)


def _count(text: str) -> int | None:
    if len(text) > 200:
        return None  # no count is that long; bounds the work on adversarial text
    text = _unwrap(text)
    m = _INT_RE.fullmatch(text)
    if m:
        return int(m.group(1))
    word = text.strip(" .").lower()
    return _NUMBER_WORDS.get(word)


def _count_answer(completion: str) -> tuple[int | None, str, str | None]:
    """``(count, anchor, hedge_reason)``: boxed, then AReaL's ``[N]``, then ``<answer>``, then anchors."""
    boxed = find_boxed(completion)
    if boxed:
        values = {_count(b) for b in boxed}
        last = _count(boxed[-1])
        if len(values) > 1:
            return last, "boxed", "two different boxed answers"
        return last, "boxed", None
    brackets = [(m.start(), m.group(1)) for m in _BRACKET_RE.finditer(completion)]
    counted = [(pos, _count(b)) for pos, b in brackets if _count(b) is not None]
    if counted:
        pos, last = counted[-1]
        line_start = completion.rfind("\n", 0, pos) + 1
        line_end = completion.find("\n", pos)
        line_end = len(completion) if line_end < 0 else line_end
        same_line = {v for p, v in counted if line_start <= p < line_end}
        if len(same_line) > 1:
            return last, "[N]", "different bracketed counts on the answer line"
        return last, "[N]", None
    tagged = find_tag(completion, "answer")
    if tagged is not None and _count(tagged) is not None:
        return _count(tagged), "<answer>", None
    for anchor, pattern in (("answer is", _ANSWER_IS_RE), ("Answer:", _ANSWER_COLON_RE)):
        matches = pattern.findall(completion)
        if matches:
            return _count(matches[-1]), anchor, None
    return None, "", None


def clevr_count_reward(completion: str, answer: Any = None, ground_truth: Any = None, **_: Any) -> Score:
    """Object counting (CLEVR-count): 1.0 iff the anchored count equals the gold integer.

    Scores 1 for ``\\boxed{3}``, ``[3]`` (AReaL's prompt format; the last one), ``<answer>3</answer>``, "The
    answer is 3" or "three". 0.0 for a different count, a non-integer ("3.5", "about 3"), no anchored count,
    or a hedge (two different boxed counts, "[3] or [4]" on the answer line). No last-number fallback.
    """
    gold_value = answer if answer is not None else ground_truth
    if gold_value is None:
        raise InputError("missing gold answer: expected a column 'answer' or 'ground_truth'")
    gold = gold_value if isinstance(gold_value, int) and not isinstance(gold_value, bool) else None
    if gold is None and isinstance(gold_value, str):
        gold = _count(gold_value)
    if gold is None:
        raise InputError(f"clevr_count gold {gold_value!r} is not an integer count")
    value, anchor, hedge = _count_answer(completion)
    if hedge is not None:
        return Score(0.0, reason=f"hedged count: {hedge}")
    if value is None:
        if anchor:
            return Score(0.0, reason=f"the {anchor} answer is not an integer count")
        return Score(0.0, reason="no count found (expected \\boxed{N}, [N], <answer>N</answer> or 'answer is N')")
    if value != gold:
        return Score(0.0, reason=f"counted {value}, gold is {gold}")
    return Score(1.0)


def clevr_count_70k_reward_fn(
    prompt: str, completions: str, prompt_ids: Any, completion_ids: Any, answer: Any, **kwargs: Any
) -> float:
    """AReaL drop-in: AReaL's ``clevr_count_70k_reward_fn`` name and signature; 1.0 / 0.0 as :func:`clevr_count_reward`.

    Stricter than AReaL's (exact string match of the last ``[number]``): a hedge scores 0, ``\\boxed{N}`` is
    accepted, and a malformed gold raises instead of silently scoring 0.
    """
    return clevr_count_reward(completions, answer=answer).value
