"""Final-answer extraction shared by the rule rewards.

The answer is taken from an explicit *anchor*, never from "the last number in the text" (that fallback is how a
chain of thought ending in an intermediate result earns credit). Anchors, in priority order:

1. ``\\boxed{...}`` / ``\\fbox{...}`` (balanced braces; the last one);
2. ``<answer>...</answer>`` (R1-style tags; the last pair);
3. ``#### X`` (GSM8K's own marker);
4. "the (final) answer is X";
5. ``Answer: X`` / ``Final answer: X`` anywhere, or a line starting with ``A:`` (GSM8K few-shot format).

Hedging gets no credit: two boxed answers that differ, or an answer like "70, 71, or 72" / "3 or 4" / "5/6/7", is
reported as a hedge. Whether a comma list is a hedge depends on the gold (``1, 2`` is a fine answer to "list the
solutions"), so :func:`split_hedge` is applied by the rewards only when the gold is a single value.

Every function here is linear in the length of its input: one pass over the braces, and regular expressions
without nested or overlapping quantifiers (checked by property tests on arbitrary and adversarial text). They
never need a timeout and never raise on any ``str``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

__all__ = [
    "Extracted",
    "extract_final_answer",
    "find_boxed",
    "find_tag",
    "gold_has_several_values",
    "parse_plain_number",
    "split_hedge",
    "top_level_split",
]

_HASH_RE = re.compile(r"####[ \t]*([^\n]*)")
_ANSWER_IS_RE = re.compile(r"(?:final[ \t]+)?answer[ \t]+is[ \t]*[:\-]?(?:[ \t]*\n)?([^\n]*)", re.IGNORECASE)
_ANSWER_LINE_RE = re.compile(r"(?:^[ \t]*A|\banswer)[ \t]*[:：]([^\n]*)", re.IGNORECASE | re.MULTILINE)
_THOUSANDS_RE = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_NUMBER_RE = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
# Plain number with optional currency, percent and a trailing unit word ("$1,000", "45%", "12 dollars").
# Each quantifier matches a distinct character class, so a failed match cannot backtrack quadratically.
_PLAIN_NUMBER_RE = re.compile(
    r"\$?[ \t]*(?:\\\$)?[ \t]*([-+]?(?:\d+(?:\.\d*)?|\.\d+))[ \t]*(?:\\?%|percent)?[ \t]*(?:[a-zA-Z][a-zA-Z'/ ]*)?"
)
_BRACE_RE = re.compile(r"[{}]")
_BARE_TOKEN_RE = re.compile(r"[^\s$]+")
_HEDGE_WORDS_RE = re.compile(r"\b(?:or|and/or|either)\b|/|\bto\b", re.IGNORECASE)
# "3 - 4" / "3-4 hours" is a range; "6 - 5i" and "x - 1" are expressions
_RANGE_RE = re.compile(r"\$?[ \t]*\d+(?:\.\d+)?[ \t]*-[ \t]*\$?[ \t]*\d+(?:\.\d+)?(?:[ \t]+[a-zA-Z]+)?")
_SEVERAL_RE = re.compile(r",|;|\\pm|\\mp|\bor\b|\band\b")
_MARKERS = ("\\boxed", "\\fbox")
# Longer answers are not treated as plain numbers at all (bounded work, and no real number is that long).
_MAX_PLAIN = 200


@dataclass(frozen=True, slots=True)
class Extracted:
    """The final answer found in a completion, which anchor found it, and whether it hedges.

    ``candidates`` holds every distinct boxed answer in text order (only for the ``boxed`` anchor), so a reward
    whose gold is a list can join them instead of calling them a hedge.
    """

    text: str
    anchor: str
    hedged: bool = False
    candidates: tuple[str, ...] = ()


def _matching_braces(text: str, start: int) -> dict[int, int]:
    """Map each ``{`` at or after ``start`` to its matching ``}`` in one pass (unbalanced ones are left out)."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    for m in _BRACE_RE.finditer(text, start):
        if m.group() == "{":
            stack.append(m.start())
        elif stack:
            pairs[stack.pop()] = m.start()
    return pairs


def find_boxed(text: str) -> list[str]:
    """Contents of every ``\\boxed{...}`` / ``\\fbox{...}`` with balanced braces, in text order.

    An unclosed ``\\boxed{`` is ignored. ``\\boxed 5`` (no braces) yields its next token.
    """
    first = min((i for i in (text.find(m) for m in _MARKERS) if i >= 0), default=-1)
    if first < 0:
        return []
    pairs = _matching_braces(text, first)
    found: list[tuple[int, str]] = []
    for marker in _MARKERS:
        start = text.find(marker)
        while start >= 0:
            j = start + len(marker)
            while j < len(text) and text[j] == " ":
                j += 1
            if j < len(text) and text[j] == "{":
                end = pairs.get(j)
                if end is not None:
                    found.append((start, text[j + 1 : end]))
            elif j < len(text) and (text[j].isdigit() or text[j] in "-+."):  # "\boxed 5": the next token
                m = _BARE_TOKEN_RE.match(text, j)
                if m:
                    found.append((start, m.group(0)))
            start = text.find(marker, j)
    found.sort()
    return [content for _, content in found]


def find_tag(text: str, tag: str) -> str | None:
    """Content of the last ``<tag>...</tag>`` pair (case-insensitive), or ``None``. Linear: two ``rfind`` calls."""
    lower = text.lower()
    close = lower.rfind(f"</{tag}>")
    if close < 0:
        return None
    open_ = lower.rfind(f"<{tag}>", 0, close)
    if open_ < 0:
        return None
    return text[open_ + len(tag) + 2 : close]


def _clean(answer: str) -> str:
    answer = answer.strip()
    # strip a trailing sentence period and wrapping $...$ / \(...\) / \[...\]
    answer = answer.rstrip(" .")
    if len(answer) >= 2 and answer[0] == "$" and answer[-1] == "$" and answer.count("$") == 2:
        answer = answer[1:-1].strip()
    elif len(answer) >= 4 and answer[:2] in ("\\(", "\\[") and answer[-2:] in ("\\)", "\\]"):
        answer = answer[2:-2].strip()
    return answer.rstrip(" .")


def _normalise_key(answer: str) -> str:
    return "".join(_THOUSANDS_RE.sub("", answer).split())


def extract_final_answer(text: str) -> Extracted | None:
    """Find the anchored final answer of a completion, or ``None`` when there is no anchor."""
    boxed = find_boxed(text)
    if boxed:
        distinct: dict[str, str] = {}
        for b in boxed:
            cleaned = _clean(b)
            if cleaned:
                distinct.setdefault(_normalise_key(cleaned), cleaned)
        if distinct:
            last = _clean(boxed[-1]) or list(distinct.values())[-1]
            hedged = len(distinct) > 1 or split_hedge(last)
            return Extracted(last, "boxed", hedged=hedged, candidates=tuple(distinct.values()))
    tagged = find_tag(text, "answer")
    if tagged is not None and _clean(tagged):
        inner = extract_final_answer(tagged) if ("\\boxed" in tagged or "answer" in tagged.lower()) else None
        if inner is not None:
            return inner
        last = _clean(tagged)
        return Extracted(last, "<answer>", hedged=split_hedge(last))
    for anchor, pattern in (("####", _HASH_RE), ("answer is", _ANSWER_IS_RE), ("answer line", _ANSWER_LINE_RE)):
        for match in reversed(list(pattern.finditer(text))):
            last = _clean(match.group(1))
            if last:
                return Extracted(last, anchor, hedged=split_hedge(last))
    return None


def top_level_split(text: str, separators: str = ",;") -> list[str]:
    """Split ``text`` on separators outside any ``()``, ``[]`` or ``{}`` (thousands separators kept)."""
    text = _THOUSANDS_RE.sub("\0", text)  # protect "1,000" from splitting
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth = max(0, depth - 1)
        if ch in separators and depth == 0:
            parts.append("".join(current).replace("\0", ",").strip())
            current = []
        else:
            current.append(ch)
    parts.append("".join(current).replace("\0", ",").strip())
    return parts


def gold_has_several_values(gold: str) -> bool:
    """Whether a gold answer holds several values ("1, 2", "(3, -1)", "\\pm 2", "x = 1 or x = 2").

    Against such a gold a list answer is compared as a list instead of being called a hedge.
    """
    return bool(_SEVERAL_RE.search(_THOUSANDS_RE.sub("", gold[:10_000])))


def split_hedge(answer: str) -> bool:
    """Whether an answer offers several candidate values where one is expected.

    "70, 71, or 72", "3 or 4", "5/6/7", "3 to 4", "3-4 hours" and "1, 2" are hedges; "(1, 2)", "\\{1, 2\\}", "1/5",
    "1,000", "6 - 5i", "2^{10}" and other single expressions are not. Apply it only when the gold is a single value.
    """
    if len(answer) > 10_000:
        answer = answer[:10_000]
    plain = _THOUSANDS_RE.sub("", answer)
    numbers = _NUMBER_RE.findall(plain)
    if len({n.lstrip("+") for n in numbers}) < 2:
        return False
    if "\\" in plain or "^" in plain or "*" in plain or "=" in plain:
        # a LaTeX or arithmetic expression; only an explicit "or" between values makes it a hedge
        return bool(re.search(r"\bor\b", plain))
    if "/" in plain and _HEDGE_WORDS_RE.sub("", plain.replace("/", "")) == plain.replace("/", ""):
        # "1/5" is a fraction, not a hedge, unless other numbers or hedge words surround it
        return len(numbers) > 2
    if _HEDGE_WORDS_RE.search(plain) or (len(plain) <= 100 and _RANGE_RE.fullmatch(plain.strip())):
        return True
    return len(top_level_split(plain)) > 1


def parse_plain_number(answer: str) -> Fraction | None:
    """Exact value of a plain number answer ("$1,000", "18.00", "-3", "45%", "12 dollars"), else ``None``."""
    if len(answer) > _MAX_PLAIN:
        return None
    m = _PLAIN_NUMBER_RE.fullmatch(_THOUSANDS_RE.sub("", answer.strip().rstrip(".").strip()))
    if not m:
        return None
    try:
        return Fraction(m.group(1))
    except (ValueError, ZeroDivisionError):
        return None
