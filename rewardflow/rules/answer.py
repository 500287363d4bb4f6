"""Final-answer extraction shared by the rule rewards.

The answer is taken from an explicit *anchor*; what happens to a completion without any anchor is the reward's
choice (``math`` falls back to math-verify's last-expression extraction, see :mod:`rewardflow.rules.math`).
Anchors:

* ``\\boxed{...}`` / ``\\fbox{...}`` (balanced braces);
* ``<answer>...</answer>`` (R1-style tags);
* ``#### X`` (GSM8K's own marker);
* "the (final) answer is X" (also with the answer on the next line);
* ``Answer: X`` / ``Final answer: X`` / ``**Answer:** X`` / ``Answer $X$``, a line starting with ``A:`` (GSM8K
  few-shot format), and a ``Final Answer`` heading followed by the answer on the next line.

**By position, not by type.** Every candidate span of every anchor type is found and the *last* one the model
commits to wins: a tentative ``\\boxed{2}`` inside ``<think>`` loses to ``<answer>7</answer>`` after it, and a
closing ``Final Answer:`` line beats intermediate boxed results. A span that holds a ``\\boxed{}`` resolves to
its box.

**Cleaning.** Trailing prose ("$12$. I hope it is correct.", "7, because ..."), markdown emphasis (``**42**``)
and a surrounding ``$...$`` are stripped; end-of-sequence markers (``<|im_end|>``, ``</s>``, ...) are removed
from the end of the completion before anything else (:func:`strip_special_tokens`).

**Hedging** gets no credit: two or more boxed answers with *different values* (the reward compares them as
values, so ``\\dfrac12`` then ``0.5`` is not a hedge), or an answer like "70, 71, or 72" / "3 or 4" / "5/6/7".
Whether a comma list is a hedge depends on the gold (``1, 2`` is a fine answer to "list the solutions"), so
:func:`split_hedge` is applied by the rewards only when the gold is a single value.

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
    "boxed_spans",
    "extract_final_answer",
    "find_boxed",
    "find_tag",
    "gold_has_several_values",
    "parse_plain_number",
    "split_hedge",
    "strip_special_tokens",
    "top_level_split",
]

_HASH_RE = re.compile(r"####[ \t]*([^\n]*)")
# The separator after "answer is" is a colon only: a "-" there is the answer's sign ("The answer is -5.").
_ANSWER_IS_RE = re.compile(r"\banswer[ \t]+is\b[ \t*]*[:：]?[ \t*]*([^\n]*)", re.IGNORECASE)
_ANSWER_LINE_RE = re.compile(
    r"\banswer[ \t*]*[:：][ \t*]*([^\n]*)|\banswer[ \t]+(?=[$]|\\[(\[])([^\n]*)", re.IGNORECASE
)
_A_LINE_RE = re.compile(r"^[ \t>*#]*A[ \t*]*[:：][ \t*]*([^\n]*)", re.IGNORECASE | re.MULTILINE)
# A "Final Answer" heading ("### Final Answer", "**Final Answer**") with the answer on a following line.
_HEADING_RE = re.compile(r"^[ \t#*]*final[ \t]+answer[ \t*#:：]*$", re.IGNORECASE | re.MULTILINE)
_NEXT_LINE_RE = re.compile(r"[ \t]*\n[ \t\n]*([^\n]*)")
# End of the answer on its line: a sentence end, or a clause that explains it ("7, because ...").
_PROSE_RE = re.compile(
    r"(?<![\d\\])\.(?=\s|$)|(?<![ \t;,])[;,]?[ \t]+(?:because|since|as[ \t]+(?:it|we|this|the)|which|I[ \t]+hope|"
    r"so[ \t]+(?:the|that)|where|therefore|hence|thus)\b",
    re.IGNORECASE,
)
_EMPHASIS = "*_ \t"
_MAX_LINE = 4000  # an answer line is read up to this many characters (answers over 2,000 are never parsed)
_JOINED_MATH_RE = re.compile(r"[ \t]*(and|or|,)[ \t]*\$([^$\n]{1,200})\$")
# "The largest $n$ is 34": the value follows the last verb of a sentence-like answer.
_VERB_RE = re.compile(r"\b(?:is|are|was|equals|=)[ \t]+", re.IGNORECASE)
# Trailing special tokens of chat templates, as decoded without skip_special_tokens.
_SPECIAL_TOKENS = ("</s>", "<eos>", "<end_of_turn>", "<pad>", "<|end|>", "[/INST]")
_MAX_TOKEN = 48
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

    ``candidates`` holds every distinct boxed answer that competes with the final one, in text order (only when
    the final answer is boxed): the reward compares them as values (several notations of one value are not a
    hedge), or joins them when the gold is a list. ``hedged`` is set when the final text itself offers several
    values ("3 or 4").
    """

    text: str
    anchor: str
    hedged: bool = False
    candidates: tuple[str, ...] = ()


def strip_special_tokens(text: str) -> str:
    """``text`` without trailing end-of-sequence / chat-template tokens and the whitespace around them.

    Trainers that decode without ``skip_special_tokens`` (AReaL) hand over ``#### 18<|im_end|>``; every
    ``<|...|>`` token (``<|im_end|>``, ``<|endoftext|>``, ``<|eot_id|>``, ``<|end_of_text|>``), DeepSeek's
    ``<｜end▁of▁sentence｜>``, ``</s>``, ``<eos>``, ``<end_of_turn>`` and ``<pad>``, repeated any number of
    times, is removed from the end. Linear: each token is peeled off with bounded look-behind.
    """
    end = len(text)
    while True:
        while end > 0 and text[end - 1].isspace():
            end -= 1
        tail = text[max(0, end - _MAX_TOKEN) : end]
        cut = 0
        if tail.endswith("|>"):
            i = tail.rfind("<|")
            if i >= 0 and " " not in tail[i:]:
                cut = len(tail) - i
        elif tail.endswith("｜>"):
            i = tail.rfind("<｜")
            if i >= 0:
                cut = len(tail) - i
        else:
            cut = next((len(t) for t in _SPECIAL_TOKENS if tail.endswith(t)), 0)
        if not cut:
            return text[:end]
        end -= cut


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


def boxed_spans(text: str) -> list[tuple[int, int, str]]:
    """``(start, end, content)`` of every ``\\boxed{...}`` / ``\\fbox{...}`` with balanced braces, in order.

    A box nested in another box is left out (the outer one holds it). ``\\boxed 5`` (no braces) yields its next
    token; an unclosed ``\\boxed{`` is ignored.
    """
    first = min((i for i in (text.find(m) for m in _MARKERS) if i >= 0), default=-1)
    if first < 0:
        return []
    pairs = _matching_braces(text, first)
    found: list[tuple[int, int, str]] = []
    for marker in _MARKERS:
        start = text.find(marker)
        while start >= 0:
            j = start + len(marker)
            while j < len(text) and text[j] == " ":
                j += 1
            if j < len(text) and text[j] == "{":
                end = pairs.get(j)
                if end is not None:
                    found.append((start, end + 1, text[j + 1 : end]))
            elif j < len(text) and (text[j].isdigit() or text[j] in "-+."):  # "\boxed 5": the next token
                m = _BARE_TOKEN_RE.match(text, j)
                if m:
                    found.append((start, m.end(), m.group(0)))
            start = text.find(marker, j)
    found.sort()
    outer: list[tuple[int, int, str]] = []
    for span in found:
        if outer and span[0] < outer[-1][1]:
            continue  # nested inside the previous box
        outer.append(span)
    return outer


def find_boxed(text: str) -> list[str]:
    """Contents of every outermost ``\\boxed{...}`` / ``\\fbox{...}`` with balanced braces, in text order."""
    return [content for _, _, content in boxed_spans(text)]


def find_tag(text: str, tag: str) -> str | None:
    """Content of the last ``<tag>...</tag>`` pair (case-insensitive), or ``None``. Linear: two ``rfind`` calls."""
    span = _tag_span(text, tag)
    return None if span is None else text[span[0] : span[1]]


def _tag_span(text: str, tag: str) -> tuple[int, int] | None:
    lower = text.lower()
    close = lower.rfind(f"</{tag}>")
    if close < 0:
        return None
    open_ = lower.rfind(f"<{tag}>", 0, close)
    if open_ < 0:
        return None
    return open_ + len(tag) + 2, close


def _unbox(answer: str) -> str:
    """Content of a box that wraps the whole answer, repeatedly (``\\boxed{\\boxed{5}}`` is 5)."""
    for _ in range(8):
        spans = boxed_spans(answer)
        if len(spans) != 1 or answer[: spans[0][0]].strip(" $") or answer[spans[0][1] :].strip(" $."):
            return answer
        answer = spans[0][2].strip()
    return answer


def _clean(answer: str) -> str:
    """The answer without emphasis, a wrapping ``$...$`` / ``\\(...\\)`` / ``\\[...\\]``, or a final period."""
    answer = answer.strip().strip(_EMPHASIS).rstrip(" .").strip(_EMPHASIS)
    if len(answer) >= 2 and answer[0] == "$" and answer[-1] == "$" and answer.strip("$").count("$") == 0:
        answer = answer.strip("$").strip()
    elif len(answer) >= 4 and answer[:2] in ("\\(", "\\[") and answer[-2:] in ("\\)", "\\]"):
        answer = answer[2:-2].strip()
    answer = _unbox(answer.rstrip(" .,").strip(_EMPHASIS))
    excess = answer.count("}") - answer.count("{")
    while excess > 0 and answer.endswith("}"):
        answer, excess = answer[:-1].rstrip(), excess - 1  # "\\frac{211}{243}}": a stray closing brace
    return "" if _is_placeholder(answer) else answer


def _is_placeholder(answer: str) -> bool:
    """An empty box or one copied from the question's template (``\\phantom{2}``, ``\\underline{\\quad}``)."""
    stripped = answer.replace("\\quad", "").replace("\\,", "").replace("~", "").strip(" {}")
    return not stripped or stripped.startswith(("\\phantom", "\\underline{}", "\\hphantom", "\\vphantom"))


def _math_close(text: str, closing: str, start: int) -> int:
    """Index of ``closing`` at or after ``start``, skipping an escaped ``\\$``; -1 if absent."""
    i = text.find(closing, start)
    while i > 0 and closing == "$" and text[i - 1] == "\\":
        i = text.find(closing, i + 1)
    return i


def _line_answer(rest: str) -> str:
    """The answer at the start of the text after an anchor: its math span(s), its box, or the words before prose.

    ``$12$ and $13$`` keeps both spans; "The volume is 120" is read as 120 (the value after the last "is").
    """
    rest = rest.strip().strip(_EMPHASIS).strip('"').removeprefix('\\"').strip()
    for opening, closing in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if rest.startswith(opening):
            close = _math_close(rest, closing, len(opening))
            if opening in ("$", "\\(") and "\n" in rest[:close]:
                return ""  # inline math does not span lines: no answer here
            if close > len(opening):
                answer = rest[len(opening) : close]
                more = _JOINED_MATH_RE.match(rest, close + len(closing))
                if more and opening == "$":
                    answer = f"{answer} {more.group(1)} {more.group(2)}"
                return answer
    if rest.startswith(("\\boxed", "\\fbox")):
        spans = boxed_spans(rest)
        if spans:
            return spans[0][2]
    rest = rest.split("\n", 1)[0][:_MAX_LINE]  # bounded: the prose pattern backtracks over runs of spaces
    m = _PROSE_RE.search(rest)
    rest = rest[: m.start()] if m else rest
    verbs = list(_VERB_RE.finditer(rest)) if rest[:1].isalpha() and len(rest) <= 200 else []
    return rest[verbs[-1].end() :] if verbs else rest


def _normalise_key(answer: str) -> str:
    return "".join(_THOUSANDS_RE.sub("", answer).split())


def _text_spans(text: str) -> list[tuple[int, str, str]]:
    """``(position, anchor, answer)`` of every textual anchor: ``####``, "answer is", answer lines, headings."""
    spans: list[tuple[int, str, str]] = []
    lower = text.lower()
    patterns = []  # only the patterns whose literal part occurs (the regexes cost more than the substring test)
    if "####" in text:
        patterns.append(("####", _HASH_RE))
    if "answer" in lower:
        patterns += [("answer is", _ANSWER_IS_RE), ("answer line", _ANSWER_LINE_RE)]
    if ":" in text or "：" in text:
        patterns.append(("answer line", _A_LINE_RE))
    for anchor, pattern in patterns:
        for m in pattern.finditer(text):
            body = m.group(1) if m.group(1) is not None else (m.group(2) if m.lastindex == 2 else "")
            if not body.strip(_EMPHASIS + ":："):
                nxt = _NEXT_LINE_RE.match(text, m.end())  # "The answer is:\n\[ 42 \]"
                body = nxt.group(1) if nxt else ""
            elif body.lstrip(_EMPHASIS).startswith(("$", "\\[", "\\(")):
                start = m.start(1) if m.group(1) is not None else m.start(2)
                body = text[start : start + 1000]  # a display-math answer may span lines
            spans.append((m.start(), anchor, body))
    for m in _HEADING_RE.finditer(text) if "final" in lower and "answer" in lower else ():
        nxt = _NEXT_LINE_RE.match(text, m.end())
        if nxt:
            spans.append((m.start(), "final answer heading", nxt.group(1)))
    return spans


def extract_final_answer(text: str) -> Extracted | None:
    """Find the anchored final answer of a completion (the last one by position), or ``None`` without anchor."""
    text = strip_special_tokens(text)
    candidates: list[tuple[int, str, str]] = []  # (position, anchor, raw answer)
    boxes = boxed_spans(text)
    candidates.extend((start, "boxed", content) for start, _, content in boxes)
    tag = _tag_span(text, "answer")
    if tag is not None:
        candidates.append((tag[0], "<answer>", text[tag[0] : tag[1]]))
    candidates.extend(_text_spans(text))
    if not candidates:
        return None
    candidates.sort(key=lambda c: c[0])
    think_end = text.lower().rfind("</think>")
    for position, anchor, raw in reversed(candidates):
        if anchor == "<answer>":
            inner = extract_final_answer(raw)
            if inner is not None and (inner.anchor == "boxed" or inner.text):
                return inner
            answer = _clean(_line_answer(raw) if "\n" not in raw.strip() else raw)
        elif anchor == "boxed":
            answer = _clean(raw)
        else:
            answer = _clean(_line_answer(raw))
        if not answer:
            if anchor != "boxed" and position == candidates[-1][0]:
                return Extracted("", anchor)  # the last anchor has no answer after it
            continue  # an empty or placeholder box: the model did not commit to it
        if anchor != "boxed":
            return Extracted(answer, anchor, hedged=split_hedge(answer))
        # Competing boxes: those after </think> when the final box is after it, else all of them.
        floor = think_end if position > think_end >= 0 else -1
        distinct: dict[str, str] = {}
        for start, _, content in boxes:
            cleaned = _clean(content)
            if start > floor and cleaned:
                distinct.setdefault(_normalise_key(cleaned), cleaned)
        distinct.pop(_normalise_key(answer), None)
        others = tuple(distinct.values())
        return Extracted(answer, "boxed", hedged=split_hedge(answer), candidates=(*others, answer))
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
