"""Math rewards: ``gsm8k``, ``math`` and ``geometry3k``, plus AReaL drop-ins with AReaL's names and signatures.

All score 1.0 when the completion's *anchored* final answer (see :mod:`rewardflow.rules.answer`) equals the gold
and 0.0 otherwise; a 0 always comes with a reason (no anchor, hedge, unparseable, different value). A gold that
cannot be parsed raises :class:`~rewardflow.errors.InputError` (``status=error``): a broken dataset row is not a
zero to train on.

Equality is decided by :func:`rewardflow.rules.equivalence.math_equal` (exact arithmetic where math-verify
rounds, see that module). What this module adds on top:

* **Anchoring.** The final answer is the last anchored span (see :mod:`rewardflow.rules.answer`), which is
  also far cheaper to parse than the whole completion. A completion without any anchor is scored as the
  ``unanchored`` parameter says: ``"last"`` (default) reads a bare answer whole and otherwise takes
  math-verify's last expression, as math-verify itself does; ``"bare"`` scores unanchored prose 0; ``"zero"``
  requires an anchor. The reason names the rule that applied.
* **Gold reading.** A bare LaTeX gold such as ``10\\sqrt{2}`` is parsed whole (math-verify given it without
  ``$...$`` parses only ``10``, so ``\\boxed{10}`` would match); several boxes joined by "and" or commas, and
  Oxford-comma lists, are a list.
* **Anti-hedging.** "70, 71, or 72" and boxed answers with two different *values* score 0 when the gold is a
  single value; a list answer is compared as a list when the gold is a list (``1, 2``, ``(3, -1)``, ``\\pm 2``).
* **GSM8K fast path.** Plain numbers on both sides ("$1,000", "18 dollars") are compared exactly as fractions
  without sympy; units are tolerated for ``gsm8k`` only (``5x`` is not ``5`` in algebra).
* **math-verify as the floor.** Where rewardflow's own comparison cannot tell (the answer does not parse, reads
  as prose, or only math-verify can read the gold), math-verify's ``parse``/``verify`` decide.

math-verify is always called with its signal-based timeouts off: they only work on a main thread and,
elsewhere, turn a correct answer into a silent 0. The engine's killable per-call timeout bounds every reward
instead, and the unanchored fallback hands math-verify at most the last 4,000 characters.
"""

from __future__ import annotations

import logging
import re
from typing import Any

# Eager on purpose: the worker forkserver preloads this module, so every worker starts with sympy and
# math-verify already imported instead of paying ~1 s on its first LaTeX answer.
import math_verify  # noqa: F401

from rewardflow.errors import ConfigError, InputError, RewardflowError
from rewardflow.rules.answer import (
    Extracted,
    boxed_spans,
    extract_final_answer,
    gold_has_several_values,
    parse_plain_number,
    split_hedge,
    strip_special_tokens,
)
from rewardflow.rules.equivalence import math_equal, normalize_list_words
from rewardflow.types import Score

__all__ = [
    "UNANCHORED",
    "compare_answer",
    "geometry3k_reward",
    "geometry3k_reward_fn",
    "gsm8k_gold",
    "gsm8k_reward",
    "gsm8k_reward_fn",
    "math_reward",
    "math_verify_equal",
]


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


#: What ``math`` and ``gsm8k`` do with a completion that has no anchor (see :func:`compare_answer`).
UNANCHORED = ("bare", "last", "zero")
_ANCHORS = "\\boxed{}, <answer>, ####, 'the answer is' or 'Answer:'"
_WORD_RE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{3,}")
_TEXT_CMD_RE = re.compile(r"\\(?:text|mathrm|textbf|mbox|begin|end)\s*\{[^{}]*\}")
_MV_TAIL = 4000  # unanchored fallback: math-verify reads at most the last 4,000 characters
_MAX_BARE = 200  # an unanchored completion this short is compared whole first (a bare answer: "x^2 + 2*x + 1")
_MAX_CANDIDATES = 8  # more distinct boxed values than this is a hedge without comparing them all


def _unwrap_gold(gold: str) -> str:
    """The gold as a plain answer: boxes joined (``\\boxed{1} and \\boxed{2}`` is ``1, 2``), a wrapping ``$``
    dropped, special tokens stripped, and an Oxford-comma list ``19, 46, and 82`` made a plain list."""
    gold = strip_special_tokens(gold).strip()
    spans = boxed_spans(gold)
    if spans:
        # The last run of boxes joined by "and" or a comma is the answer list; "or" or other words break it.
        run = [spans[-1]]
        for prev in reversed(spans[:-1]):
            between = gold[prev[1] : run[0][0]].lower()
            joined = re.search(r"\band\b|,", between) or not re.search(r"[a-z]", between)
            if re.search(r"\bor\b", between) or not joined or len(between) > 40:
                break
            run.insert(0, prev)
        gold = ", ".join(content.strip() for _, _, content in run)
    return normalize_list_words(gold)


def _hedges(found: Extracted) -> bool:
    """Whether the competing boxed answers hold two or more distinct *values* (``\\dfrac12`` and ``0.5`` do not)."""
    others = [c for c in found.candidates if c != found.text]
    if not others:
        return False
    if len(others) >= _MAX_CANDIDATES:
        return True
    for other in others:
        try:
            if not math_equal(found.text, other).equal and not math_equal(other, found.text).equal:
                return True
        except RewardflowError:
            return True  # a value that cannot even be compared is not the same value
    return False


def compare_answer(
    gold: str, completion: str, *, require_boxed: bool = False, units: bool = True, unanchored: str = "last"
) -> Score:
    """Score ``completion`` against ``gold``: anchored final answer, hedge rules, :func:`math_equal`, and
    math-verify as the floor where our own path is not sure.

    ``require_boxed`` accepts only a ``\\boxed{}`` answer (geometry3k's prompt asks for one); ``units`` lets a
    plain number carry a trailing unit word on either side ("18 dollars"), which is right for GSM8K-style word
    problems and wrong for algebra ("5x" is not 5). ``unanchored`` says what a completion without any anchor
    scores: ``"last"`` (default) compares it whole when it is nothing but an answer ("x^2 + 2*x + 1", "$1,000")
    and otherwise lets math-verify extract its last expression, as math-verify's own ``parse`` does (so
    ``math`` is never below math-verify on unanchored text); ``"bare"`` scores unanchored prose 0 but still
    reads a bare answer; ``"zero"`` scores every unanchored completion 0. The reason says which happened.
    """
    if unanchored not in UNANCHORED:
        raise ConfigError(f"unanchored must be one of {UNANCHORED}, not {unanchored!r}")
    gold = _unwrap_gold(gold)
    found = extract_final_answer(completion)
    if found is None:
        return _unanchored(gold, completion, unanchored if not require_boxed else "zero")
    if not found.text:
        return Score(0.0, reason=f"{found.anchor!r} anchor without an answer after it")
    if require_boxed and found.anchor != "boxed":
        return Score(0.0, reason=f"no \\boxed{{}} answer (found {found.anchor!r} anchor instead)")
    text = normalize_list_words(found.text)
    several = gold_has_several_values(gold)
    if found.hedged and not several:
        return Score(0.0, reason=f"hedged final answer {found.text[:80]!r}")
    if _hedges(found):
        if not several:
            return Score(0.0, reason=f"hedge: boxed answers with different values {list(found.candidates)[:4]}")
        text = ", ".join(found.candidates)  # "\\boxed{2} and \\boxed{3}" for a list gold
    if units:
        gold_number, pred_number = parse_plain_number(gold), parse_plain_number(text)
        if gold_number is not None and pred_number is not None:
            if gold_number == pred_number:
                return Score(1.0)
            return Score(0.0, reason=f"final answer {text[:80]!r} != gold {gold[:80]!r}")
    try:
        verdict = math_equal(gold, text)
    except InputError:
        # Our parser cannot read the gold: math-verify's reading of it is the floor (it raises if it cannot).
        if math_verify_equal(gold, text):
            return Score(1.0, reason="gold unreadable to rewardflow's parser; math-verify matches it")
        raise
    if verdict.equal:
        return Score(1.0)
    unsure = verdict.unsure or len(_WORD_RE.findall(_TEXT_CMD_RE.sub(" ", text))) >= 2  # prose: parse unreliable
    if unsure and (_math_verify(gold, text, whole=False) or _math_verify(gold, text, whole=True)):
        return Score(1.0, reason=f"math-verify fallback: {verdict.reason}")
    return Score(0.0, reason=f"final answer {text[:80]!r} != gold {gold[:80]!r} ({verdict.reason})")


def _unanchored(gold: str, completion: str, mode: str) -> Score:
    """Score a completion without any anchor according to ``mode`` (see :data:`UNANCHORED`)."""
    if mode == "zero":
        return Score(0.0, reason=f"no final answer found (expected {_ANCHORS}); unanchored='zero'")
    bare = strip_special_tokens(completion).strip()
    if _is_bare_answer(bare):
        if _equal_quietly(gold, bare) or _math_verify(gold, bare, whole=False):
            return Score(1.0, reason=f"no anchor: the whole completion is the answer (unanchored={mode!r})")
        if mode == "bare":
            return Score(0.0, reason="no anchor: the whole completion, read as the answer, != gold (unanchored='bare')")
    elif mode == "bare":
        return Score(0.0, reason=f"no final answer found (expected {_ANCHORS}), and the completion is not a bare "
                     "answer (unanchored='bare'; 'last' takes math-verify's last expression)")  # fmt: skip
    if _math_verify(gold, bare[-_MV_TAIL:], whole=True):
        return Score(1.0, reason="no anchor: math-verify's last expression matches (unanchored='last')")
    return Score(0.0, reason="no anchor, and math-verify's last expression does not match (unanchored='last')")


def _is_bare_answer(text: str) -> bool:
    """Whether a completion is nothing but an answer ("x^2 + 2*x + 1", "$1,000.99", "\\frac34 i"): short, one
    line, not a hedge, and no prose (at most one word of three letters or more outside LaTeX commands)."""
    if not text or len(text) > _MAX_BARE or "\n" in text or split_hedge(text):
        return False
    return len(_WORD_RE.findall(_TEXT_CMD_RE.sub(" ", text))) <= 1


def _equal_quietly(gold: str, answer: str) -> bool:
    """:func:`math_equal`, with "cannot tell" (unparseable, undecidable) as not equal."""
    try:
        return math_equal(gold, normalize_list_words(answer)).equal
    except RewardflowError:
        return False


def _math_verify(gold: str, predicted: str, *, whole: bool) -> bool:
    """math-verify's verdict, ``False`` where it cannot parse; ``whole`` lets it extract from free text."""
    try:
        if whole:
            return _math_verify_text(gold, predicted)
        return math_verify_equal(gold, predicted)
    except (InputError, RecursionError):
        return False
    except Exception:  # math-verify raises assorted errors on odd input; that is "not verified"
        return False


def _math_verify_text(gold: str, completion: str) -> bool:
    from math_verify import parse, verify

    _silence_disabled_timeout_warning()
    gold_parsed = parse(_as_latex(gold), parsing_timeout=None)  # type: ignore[arg-type]
    pred_parsed = parse(completion, parsing_timeout=None)  # type: ignore[arg-type]
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


def gsm8k_reward(
    completion: str, answer: Any = None, ground_truth: Any = None, *, unanchored: str = "last", **_: Any
) -> Score:
    """GSM8K accuracy: 1.0 iff the anchored final answer equals the number after ``####`` in the gold.

    The gold comes from the ``answer`` column (GSM8K's own ``... #### 18``) or ``ground_truth``; commas, ``$``,
    ``%`` and trailing units are tolerated on both sides. 0.0 (with a reason) for: no anchored answer, a
    hedge ("70, 71, or 72", two different boxed answers), or a different value.
    """
    return compare_answer(gsm8k_gold(_gold(answer, ground_truth, None)), completion, unanchored=unanchored)


def math_reward(
    completion: str,
    answer: Any = None,
    ground_truth: Any = None,
    solution: Any = None,
    *,
    unanchored: str = "last",
    **_: Any,
) -> Score:
    """Math accuracy: 1.0 iff the anchored final answer is mathematically equal to the gold.

    The gold is the ``answer``/``ground_truth`` column (LaTeX or plain), or the boxed answer of a ``solution``
    column (MATH dataset). 0.0 (with a reason) for no anchored answer, a hedge, an unparseable answer, or a
    different value (exact for exact numbers, relative 5e-6 when a decimal is involved; see
    :mod:`rewardflow.rules.equivalence`).
    """
    gold = _gold(answer, ground_truth, None) if (answer is not None or ground_truth is not None) else None
    if gold is None:
        sol = _gold(None, None, solution)
        found = extract_final_answer(sol)
        gold = found.text if found is not None else sol
    elif "####" in gold:
        gold = gsm8k_gold(gold)
    return compare_answer(gold, completion, units=False, unanchored=unanchored)


def gsm8k_reward_fn(
    prompt: str, completions: str, prompt_ids: Any, completion_ids: Any, answer: Any, **kwargs: Any
) -> float:
    """AReaL drop-in with ``areal.reward.gsm8k.gsm8k_reward_fn``'s signature; 1.0 / 0.0 as :func:`gsm8k_reward`.

    Unlike AReaL's, it does not catch exceptions and return 0: run it through the rewardflow engine, which turns
    a failure into ``status=error`` and a hang into ``status=timeout``.
    """
    return gsm8k_reward(completions, answer=answer).value


def geometry3k_reward(completion: str, answer: Any = None, ground_truth: Any = None, **_: Any) -> Score:
    """Geometry3K accuracy: 1.0 iff the last ``\\boxed{}`` answer is mathematically equal to the gold.

    The dataset's prompt asks for ``\\boxed{}``, so only a boxed answer counts: no "the answer is", no bracket,
    and no last-number fallback (AReaL's falls back to the last number, so ``5\\sqrt{3}`` matched a gold of
    ``2\\sqrt{3}``). 0.0 without a boxed answer; otherwise comparison and hedging as in :func:`math_reward`.
    """
    return compare_answer(_gold(answer, ground_truth, None), completion, require_boxed=True, units=False)


def geometry3k_reward_fn(
    prompt: str, completions: str, prompt_ids: Any, completion_ids: Any, answer: Any, **kwargs: Any
) -> float:
    """AReaL drop-in: AReaL's ``geometry3k_reward_fn`` name and signature; 1.0 / 0.0 as :func:`geometry3k_reward`.

    AReaL's example adds a 0.1-weight ``<think>...</think>...\\boxed{}`` format bonus; compose that in a spec
    (``format`` with ``require_boxed``, weight 0.1, and this reward with weight 0.9) instead.
    """
    return geometry3k_reward(completions, answer=answer).value
