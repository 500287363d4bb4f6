"""Short-answer QA rewards: ``exact_match`` and ``f1`` over normalised text (SQuAD conventions).

Normalisation: Unicode NFKC, lower case, punctuation removed, the articles "a", "an", "the" removed, whitespace
collapsed. The predicted answer is the anchored one when there is an anchor (``<answer>``, ``\\boxed{}``,
"the answer is", "Answer:"), else the whole completion. Several golds (a list, or SQuAD's
``{"text": [...]}``) score the best match.

A hedge ("Paris or London") scores 0 for both rewards unless a gold itself contains "or": token F1 would
otherwise give it partial credit. F1 still rewards partial overlap by design, so a verbose answer that contains
the gold keeps some credit; use ``exact_match`` (or a ``length`` penalty) where that matters.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from typing import Any

from rewardflow.errors import InputError
from rewardflow.rules.answer import extract_final_answer
from rewardflow.types import Score

__all__ = ["exact_match_reward", "f1_reward", "normalize_text"]

_ARTICLES_RE = re.compile(r"\b(?:a|an|the)\b")
_HEDGE_RE = re.compile(r"\b(?:or|either)\b")
_PUNCT = str.maketrans("", "", string.punctuation + "“”‘’«»。，、！？：；")
_WRAPPER_RE = re.compile(r"\\(?:text|textbf|mathrm|mbox)\s*\{([^{}]*)\}")


def normalize_text(text: str) -> str:
    """SQuAD-style normalisation: NFKC, lower case, no punctuation, no articles, single spaces."""
    text = unicodedata.normalize("NFKC", text).lower().translate(_PUNCT)
    return " ".join(_ARTICLES_RE.sub(" ", text).split())


def _golds(answer: Any, answers: Any, ground_truth: Any) -> list[str]:
    value = next((v for v in (answer, answers, ground_truth) if v is not None), None)
    if isinstance(value, dict):  # SQuAD: {"text": [...], "answer_start": [...]}
        value = value.get("text")
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return list(value)
    raise InputError(
        "missing gold answer: expected a column 'answer', 'answers' or 'ground_truth' holding a string, a list of "
        f"strings or {{'text': [...]}}, got {type(value).__name__}"
    )


def _prediction(completion: str) -> str:
    found = extract_final_answer(completion)
    text = found.text if found is not None else completion
    return _WRAPPER_RE.sub(r"\1", text)


def _is_hedge(pred: str, golds: list[str]) -> bool:
    return bool(_HEDGE_RE.search(pred)) and not any(_HEDGE_RE.search(g) for g in golds)


def exact_match_reward(
    completion: str, answer: Any = None, answers: Any = None, ground_truth: Any = None, **_: Any
) -> Score:
    """Exact match: 1.0 iff the normalised answer equals a normalised gold, else 0.0 (with the closest gold)."""
    golds = _golds(answer, answers, ground_truth)
    pred = normalize_text(_prediction(completion))
    normalized = [normalize_text(g) for g in golds]
    if _is_hedge(pred, normalized):
        return Score(0.0, reason="hedged answer")
    if pred in normalized:
        return Score(1.0)
    return Score(0.0, reason=f"answer {pred[:80]!r} matches no gold ({normalized[0][:80]!r}...)")


def _f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    common = Counter(pred_tokens) & Counter(gold_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(pred_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def f1_reward(completion: str, answer: Any = None, answers: Any = None, ground_truth: Any = None, **_: Any) -> Score:
    """Token F1 in [0, 1] between the normalised answer and the best gold.

    1.0 for an exact (normalised) match; partial credit for overlapping tokens; 0.0 for no overlap or a hedge.
    """
    golds = _golds(answer, answers, ground_truth)
    pred = normalize_text(_prediction(completion))
    normalized = [normalize_text(g) for g in golds]
    if _is_hedge(pred, normalized):
        return Score(0.0, reason="hedged answer")
    tokens = pred.split()
    best = max(_f1(tokens, g.split()) for g in normalized)
    return Score(best, reason=None if best == 1.0 else f"token F1 {best:.3f} against the best gold")
