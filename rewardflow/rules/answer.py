"""Final-answer extraction shared by the math rewards.

The answer is taken from an explicit *anchor*, never from "the last number in the text" (that fallback is how a
chain of thought ending in an intermediate result earns credit):

1. ``\\boxed{...}`` / ``\\fbox{...}`` (balanced braces; the last one);
2. ``#### X`` (GSM8K's own marker);
3. "the (final) answer is X";
4. a line starting with ``A:`` / ``Answer:`` / ``Final answer:`` (GSM8K few-shot format).

Hedging gets no credit: two boxed answers that differ, or an answer like "70, 71, or 72" / "3 or 4", is reported
as a hedge. Extraction is linear-time regex and string scanning, so it never needs a timeout itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

__all__ = ["Extracted", "extract_final_answer", "find_boxed", "parse_plain_number", "split_hedge"]

_HASH_RE = re.compile(r"####\s*([^\n]*)")
_ANSWER_IS_RE = re.compile(r"(?:final\s+)?answer\s+is\s*[:\-]?\s*([^\n]*)", re.IGNORECASE)
_ANSWER_LINE_RE = re.compile(r"^\s*(?:A|Answer|Final answer)\s*[:：]\s*(.*)$", re.IGNORECASE | re.MULTILINE)
_THOUSANDS_RE = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_NUMBER_RE = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_PLAIN_NUMBER_RE = re.compile(
    r"^\s*\$?\s*\\?\$?\s*([-+]?(?:\d+\.?\d*|\.\d+))\s*(?:\\?%|percent)?\s*(?:[a-zA-Z][a-zA-Z .'/]*)?\s*\.?\s*$"
)
_BARE_TOKEN_RE = re.compile(r"[^\s$]+")
_HEDGE_WORDS_RE = re.compile(r"\b(?:or|and/or|either)\b|/|\bto\b|\s-\s", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Extracted:
    """The final answer found in a completion, which anchor found it, and whether it hedges."""

    text: str
    anchor: str
    hedged: bool = False


def find_boxed(text: str) -> list[str]:
    """Contents of every ``\\boxed{...}`` / ``\\fbox{...}`` with balanced braces, in text order."""
    found: list[tuple[int, str]] = []
    for marker in ("\\boxed", "\\fbox"):
        start = text.find(marker)
        while start >= 0:
            j = start + len(marker)
            while j < len(text) and text[j] == " ":
                j += 1
            if j < len(text) and text[j] == "{":
                depth = 0
                for k in range(j, len(text)):
                    if text[k] == "{":
                        depth += 1
                    elif text[k] == "}":
                        depth -= 1
                        if depth == 0:
                            found.append((start, text[j + 1 : k]))
                            break
            else:  # "\boxed 5": the next token
                m = _BARE_TOKEN_RE.match(text, j)
                if m:
                    found.append((start, m.group(0)))
            start = text.find(marker, j)
    found.sort()
    return [content for _, content in found]


def _clean(answer: str) -> str:
    answer = answer.strip()
    # strip a trailing sentence period and wrapping $...$
    answer = answer.rstrip(" .")
    if len(answer) >= 2 and answer[0] == "$" and answer[-1] == "$" and answer.count("$") == 2:
        answer = answer[1:-1].strip()
    return answer


def _normalise_key(answer: str) -> str:
    return re.sub(r"\s+", "", _THOUSANDS_RE.sub("", answer))


def extract_final_answer(text: str) -> Extracted | None:
    """Find the anchored final answer of a completion, or ``None`` when there is no anchor."""
    boxed = find_boxed(text)
    if boxed:
        distinct = {_normalise_key(b) for b in boxed}
        last = _clean(boxed[-1])
        return Extracted(last, "boxed", hedged=len(distinct) > 1 or split_hedge(last))
    for anchor, pattern in (("####", _HASH_RE), ("answer is", _ANSWER_IS_RE), ("answer line", _ANSWER_LINE_RE)):
        matches = pattern.findall(text)
        if matches:
            last = _clean(matches[-1])
            if not last:
                continue
            return Extracted(last, anchor, hedged=split_hedge(last))
    return None


def split_hedge(answer: str) -> bool:
    """Whether an answer offers several candidate numbers ("70, 71, or 72", "3 or 4", "5/6/7")."""
    plain = _THOUSANDS_RE.sub("", answer)
    numbers = _NUMBER_RE.findall(plain)
    if len({n.lstrip("+") for n in numbers}) < 2:
        return False
    if "\\" in plain or "^" in plain or "*" in plain or "=" in plain:
        return False  # a LaTeX or arithmetic expression, not a list of alternatives (math-verify decides)
    if "/" in plain and _HEDGE_WORDS_RE.sub("", plain.replace("/", "")) == plain.replace("/", ""):
        # "1/5" is a fraction, not a hedge, unless other numbers or hedge words surround it
        return len(numbers) > 2
    return bool(_HEDGE_WORDS_RE.search(plain)) or "," in plain or ";" in plain


def parse_plain_number(answer: str) -> Fraction | None:
    """Exact value of a plain number answer ("$1,000", "18.00", "-3", "45%", "12 dollars"), else ``None``."""
    m = _PLAIN_NUMBER_RE.match(_THOUSANDS_RE.sub("", answer))
    if not m:
        return None
    try:
        return Fraction(m.group(1))
    except (ValueError, ZeroDivisionError):
        return None
