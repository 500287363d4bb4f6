"""Mathematical equivalence of a predicted final answer and a gold answer, exact where math-verify rounds.

:func:`math_equal` is the comparison behind the ``math``, ``gsm8k`` and ``geometry3k`` rewards. In order:

1. **Normalise** (:func:`normalize_answer`): repair forms with one meaning that the parser gets wrong
   (``\\sqrt(2)``, ``2\\,000``, ``1.5e3``, ``\\left(``). Answers identical after this are equal.
2. **Fast paths without the LaTeX parser** (which costs milliseconds): plain numbers and ``\\frac{a}{b}`` with
   exact rationals; word answers ("Monday", ``\\text{(C)}``) case-insensitively; sequences with an ellipsis
   (``1, 3, 5, \\ldots, 2n-1``) term by term with the ellipsis in the same place; tuples, sets and bare lists
   element by element (sets and bare lists unordered, tuples in order, square brackets only against the same
   brackets).
3. **Parse** with math-verify's LaTeX normalisation and ``latex2sympy`` (the parser math-verify itself uses).
   Nothing matches what did not parse: a gold that cannot be parsed raises
   :class:`~rewardflow.errors.InputError`; a predicted answer that cannot be parsed scores 0 with a reason,
   even when the gold would have "parsed" to the same nothing.
4. **Compare** the sympy objects with :func:`rewardflow.rules.sympy_compare.compare_parsed`: exact arithmetic
   when both sides are exact (``1/2004!`` is not ``1/2006!``, which math-verify 0.9.0 rounds together), a
   relative 5e-6 only when a decimal is involved (two plain decimals are compared exactly; ``0.0000001`` is not
   ``0``), element-wise structure, relations, and :class:`~rewardflow.errors.UndecidedError` for values too large
   to compare exactly. Inputs that make sympy itself hang (power towers) are left to the engine's killable
   timeout (``status=timeout``).

Not covered: units beyond those math-verify strips, equations that are not constant multiples of each other
(``y = x`` and ``y - x = 0`` match; ``x^2 = 1`` and ``x = \\pm 1`` do not), and predicted answers longer than
:data:`MAX_ANSWER_CHARS` or ten times the gold (scored 0 with a reason, never parsed).
"""

from __future__ import annotations

import functools
import re
from fractions import Fraction
from typing import Any

from rewardflow.errors import InputError
from rewardflow.rules.answer import top_level_split
from rewardflow.rules.sympy_compare import DECIMAL_TOL, Verdict, compare_parsed

__all__ = ["MAX_ANSWER_CHARS", "Verdict", "math_equal", "normalize_answer", "normalize_list_words"]

#: Predicted answers longer than this (or than 10x the gold) are not parsed: scored 0 with a reason.
MAX_ANSWER_CHARS = 2000

_ELLIPSIS_RE = re.compile(r"\\(?:[lc]?dots[a-z]*)|\.\.\.|…")
_LEFT_RIGHT_RE = re.compile(r"\\(?:left|right|bigl|bigr|Bigl|Bigr)(?=[()\[\]|]|\\[{}])")
_SQRT_PAREN_RE = re.compile(r"\\sqrt\s*\(([^()]*)\)")
_THIN_SPACE_NUM_RE = re.compile(r"(?<=\d)(?:\\[,;: !]|\{,\}|\\thinspace\s?)(?=\d{3}(?!\d))")
_SCI_RE = re.compile(r"(?<![\w.\\])(\d+(?:\.\d+)?|\.\d+)[eE]([-+]?\d+)(?![\w.])")
_TEXT_WRAP_RE = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_DECIMAL_RE = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+")
_SIMPLE_FRAC_RE = re.compile(r"([-+]?)(?:\\frac\{(\d{1,30})\}\{(\d{1,30})\}|(\d{1,30})/(\d{1,30}))")
_WORDS_RE = re.compile(r"[A-Za-z][A-Za-z '\-]*")
_LETTER_RE = re.compile(r"\(?([A-Za-z])\)?")
# A number or a single constant wrapped in a font or text command: \text{3}, \mathbf{42}, \mathrm{e}.
_FONT_NUMBER_RE = re.compile(
    r"\\(?:text|textbf|textit|textrm|mathbf|mathrm|mathit|mbox|operatorname|boldsymbol)\s*\{\s*([-+]?[\d.,]+|[ei])\s*\}"
)
# Two digits separated only by a space are two numbers ("4 1"), unless the space groups thousands ("1 000").
# A repeating decimal, 0.\overline{3} or 1.2\overline{45}.
_REPEATING_RE = re.compile(r"(?<![\d.])(\d*)\.(\d{0,20})\\overline\{(\d{1,20})\}")
_PERCENT_END_RE = re.compile(r"(?<=[\d}])[ \t]*(?:\\?%|\\text\{ ?\\?% ?\}|pct|percent(?:age)?)$")
_DOUBLE_BACKSLASH_RE = re.compile(r"(?<!\\)\\\\(?=[a-zA-Z])")
_DECIMAL_COMMA_RE = re.compile(r"[-+]?(?:0,\d+|[1-9]\d*,(?:\d{1,2}|\d{4,}))")
_SPACING_RE = re.compile(r"\\(?:,|;|:|quad|qquad|thinspace)(?![a-zA-Z])|~")
_SPLIT_DIGITS_RE = re.compile(r"\d[ \t]+(?!\d{3}(?!\d))\d")
_LIST_AND_RE = re.compile(r"\s*,?\s*(?:\\(?:text|mbox)\s*\{\s*and\s*\}|\band\b)\s*")
_OR_RE = re.compile(r"(?<=[)\]}\d])\s*(?:\\text\{\s*or\s*\}|\bor\b)\s*(?=[(\[{\d-])")
# A label on the left of "=": names, subscripts, tuples of names, ratios (V_1:V_2), sums of names (m+n).
_LABEL_RE = re.compile(r"[(A-Za-z\\][A-Za-z_{}\\\d\s,():+\-']*")
_UNICODE = {
    "\u2212": "-",
    "\u2013": "-",
    "\u2014": "-",
    "\u00d7": "\\times ",
    "\u00b7": "\\cdot ",
    "\u03c0": "\\pi ",
    "\u221e": "\\infty ",
    "\u00bd": "\\frac{1}{2}",
    "\u2153": "\\frac{1}{3}",
    "\u00bc": "\\frac{1}{4}",
    "\u00be": "\\frac{3}{4}",
    "\u00b2": "^{2}",
    "\u00b3": "^{3}",
    "\u00b0": "^{\\circ}",
    "\u2264": "\\le ",
    "\u2265": "\\ge ",
    "\u2205": "\\emptyset ",
}
_UNICODE_SQRT_RE = re.compile(r"\u221a\s*(\d+|[A-Za-z]|\{[^{}]*\}|\([^()]*\))")


def normalize_answer(text: str) -> str:
    """Pre-normalisation applied before math-verify's own: fixes that change meaning if left to the parser.

    ``\\left(`` -> ``(``, ``\\sqrt(2)`` -> ``\\sqrt{2}`` (math-verify turns it into ``\\\\sqrt{2}`` and parses
    only the ``4`` of ``4\\sqrt(2)``), thin-space thousands separators ``2\\,000`` -> ``2000`` (parsed as
    ``2 \\cdot 0``), and scientific notation ``1.5e3`` -> ``1.5\\times10^{3}`` (parsed as ``1.5 \\cdot e \\cdot 3``).
    """
    text = text.replace("\\$", "").strip().strip("$").strip()
    if "\\overline" in text:
        text = _REPEATING_RE.sub(_repeating_fraction, text)
    if text.startswith(("\\(", "\\[")) and text.endswith(("\\)", "\\]")):
        text = text[2:-2].strip()
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\!", "")
    text = text.replace("\\varnothing", "\\emptyset")
    if not text.isascii():
        text = _UNICODE_SQRT_RE.sub(r"\\sqrt{\1}", text)
        for char, latex in _UNICODE.items():
            text = text.replace(char, latex)
    text = _FONT_NUMBER_RE.sub(r"\1", text)
    if "\\begin" not in text:
        text = _DOUBLE_BACKSLASH_RE.sub(r"\\", text)  # "\\\\dfrac": a command escaped twice
    text = text.replace("bmatrix", "pmatrix")
    if "\\approx" in text:
        text = text.split("\\approx", 1)[0].strip()  # "\\frac{\\sqrt3}{3} \\approx 0.577": the exact value
    text = _LEFT_RIGHT_RE.sub("", text)
    text = _SQRT_PAREN_RE.sub(r"\\sqrt{\1}", text)
    text = _THIN_SPACE_NUM_RE.sub("", text)
    text = _SPACING_RE.sub(" ", text)
    text = _SCI_RE.sub(r"\1\\times10^{\2}", text)
    return text.rstrip(" .")


def math_equal(gold: str, pred: str, *, _sequences: bool = True) -> Verdict:
    """Compare a predicted final answer with the gold answer (see the module docstring for the rules).

    Raises :class:`~rewardflow.errors.InputError` when the gold cannot be parsed and
    :class:`~rewardflow.errors.UndecidedError` when exact comparison would need absurdly large numbers.
    """
    limit = max(MAX_ANSWER_CHARS, 10 * len(gold))
    if len(pred) > limit:
        return Verdict(False, f"final answer is {len(pred)} characters long (limit {limit})")
    g_text, p_text = normalize_answer(gold), normalize_answer(pred)
    g_text, p_text = _decimal_comma(g_text, p_text), _decimal_comma(p_text, g_text)
    if _PERCENT_END_RE.search(g_text) or _PERCENT_END_RE.search(p_text):
        return _compare_percent(g_text, p_text)
    if _SPLIT_DIGITS_RE.search(p_text) and not _SPLIT_DIGITS_RE.search(g_text) and len(p_text) <= 200:
        # "4 1" is two numbers, not 41 (the parser would join them): compare as written, never as one number
        equal = _key(g_text) == p_text.strip()
        return Verdict(equal, None if equal else "digits separated by a space are not one number")
    if _key(g_text) == _key(p_text) and g_text:
        return Verdict(True)
    g_text, p_text = _drop_label(g_text, p_text), _drop_label(p_text, g_text)
    if _key(g_text) == _key(p_text) and g_text:
        return Verdict(True)
    g_num, p_num = _plain_decimal(g_text), _plain_decimal(p_text)
    if g_num is not None and p_num is not None:
        return Verdict(g_num == p_num, None if g_num == p_num else "different value")
    g_simple, p_simple = _simple_number(g_text), _simple_number(p_text)
    if g_simple is not None and p_simple is not None:  # "\\frac{3}{4}" vs "0.75": no parser needed
        equal = _simple_equal(g_simple, p_simple)
        return Verdict(equal, None if equal else "different value")
    g_words, p_words = _text_answer(g_text), _text_answer(p_text)
    if g_words is not None and p_words is not None:
        return Verdict(g_words == p_words, None if g_words == p_words else "different text answer")
    if _sequences and (_ELLIPSIS_RE.search(g_text) or _ELLIPSIS_RE.search(p_text)):
        return _compare_sequences(g_text, p_text)
    g_items, p_items = _collection(g_text), _collection(p_text)
    if g_items is not None and p_items is not None:
        return _compare_collections(g_items, p_items)
    g = _as_sympy(g_simple) if g_simple is not None else _parse_gold(g_text, gold)
    try:
        p = _as_sympy(p_simple) if p_simple is not None else _parse(p_text)
    except _ParseError as exc:
        return Verdict(False, f"final answer could not be parsed as math ({exc})", unsure=True)
    if _undefined(g) or _undefined(p):
        # 12:00 and 1:00 both parse to complex infinity (12/0): undefined values are never equal by value
        return Verdict(False, "an answer parses to an undefined value (zoo/nan); compared as written only")
    return compare_parsed(g, p)


def _undefined(expr: Any) -> bool:
    import sympy

    try:
        return bool(expr.has(sympy.zoo, sympy.nan))
    except Exception:  # sets, tuples and relations without .has on some sympy versions
        return False


def _repeating_fraction(m: re.Match[str]) -> str:
    """``0.1\\overline{6}`` -> ``\\frac{1}{6}``: the exact value of a repeating decimal."""
    whole, fixed, period = m.group(1) or "0", m.group(2), m.group(3)
    value = Fraction(int(whole)) + Fraction(int(fixed or "0"), 10 ** len(fixed))
    value += Fraction(int(period), (10 ** len(period) - 1) * 10 ** len(fixed))
    return f"\\frac{{{value.numerator}}}{{{value.denominator}}}"


def _compare_percent(g_text: str, p_text: str) -> Verdict:
    """A percentage on one side: ``50\\%`` matches ``50`` (the number asked for) and ``0.5`` (its value); both
    sides in percent compare their numbers. Decided here because math-verify versions read ``%`` differently
    (0.8 as a factor of 1/100, 0.9 by dropping it)."""
    g_pct, p_pct = bool(_PERCENT_END_RE.search(g_text)), bool(_PERCENT_END_RE.search(p_text))
    g_bare, p_bare = _PERCENT_END_RE.sub("", g_text), _PERCENT_END_RE.sub("", p_text)
    first = math_equal(g_bare, p_bare)
    if first.equal or g_pct == p_pct:
        return first
    if g_pct:
        return math_equal(f"\\frac{{{g_bare}}}{{100}}", p_bare)
    return math_equal(g_bare, f"\\frac{{{p_bare}}}{{100}}")


def _decimal_comma(text: str, other: str) -> str:
    """ "1,22" / "0,111" is a decimal comma when the other side is a decimal number (thousands are groups of
    three, and "1,2" against a list is a list)."""
    if _DECIMAL_COMMA_RE.fullmatch(text) and "." in other and _plain_decimal(other) is not None:
        return text.replace(",", ".")
    return text


def normalize_list_words(text: str) -> str:
    """``19, 46, and 82`` -> ``19, 46, 82``; ``(11,7) or (7,11)`` -> ``(11,7), (7,11)`` (lists written in words)."""
    if len(text) > MAX_ANSWER_CHARS:
        return text
    return _OR_RE.sub(", ", _LIST_AND_RE.sub(", ", text))


def _drop_label(text: str, other: str) -> str:
    """``(p,q)=(3,2)`` -> ``(3,2)``, ``AB=4`` -> ``4``, ``m+n=7`` -> ``7``: a label on the left of a single ``=`` is
    dropped when the other side is not an equation. An equation whose right side is 0 (``x - y = 0``) is a
    condition, not a labelled value, and stays whole."""
    if "=" not in text or "=" in other or len(text) > 500 or text.count("=") != 1:
        return text
    if any(op in text for op in ("<", ">", "\\le", "\\ge", "\\ne")):
        return text
    left, right = (part.strip() for part in text.split("="))
    if not left or not right or not _LABEL_RE.fullmatch(left) or _key(right) == "0":
        return text
    if any(ch.isdigit() for ch in left.replace("_", " ").split(" ")[0][:1]):
        return text
    return right


# ---------------------------------------------------------------------------------------------------- parsing


class _ParseError(Exception):
    pass


def _key(text: str) -> str:
    return "".join(text.split())


def _plain_decimal(text: str) -> Fraction | None:
    """Exact value of a bare decimal number ("-3", "1,000", "2.50"); no units, so "5x" or "2 pi" is not one."""
    if len(text) > 100 or not _DECIMAL_RE.fullmatch(text):
        return None
    return Fraction(text.replace(",", ""))


def _simple_number(text: str) -> tuple[Fraction, bool] | None:
    """``(value, is_decimal)`` for an integer, decimal, ``a/b`` or ``\\frac{a}{b}`` answer, else ``None``.

    The common case of MATH answers, decided with exact rationals and without the LaTeX parser (which costs a few
    milliseconds per call). Anything else goes through latex2sympy.
    """
    if len(text) > 100:
        return None
    compact = "".join(text.split())
    value = _plain_decimal(compact)
    if value is not None:
        return value, "." in compact
    m = _SIMPLE_FRAC_RE.fullmatch(compact)
    if not m:
        return None
    sign, num, den = m.group(1), int(m.group(2) or m.group(4)), int(m.group(3) or m.group(5))
    if den == 0:
        return None  # 1/0: let the parser say what it is
    value = Fraction(num, den)
    return (-value if sign == "-" else value), False


def _simple_equal(g: tuple[Fraction, bool], p: tuple[Fraction, bool]) -> bool:
    if g[1] and p[1]:
        return g[0] == p[0]  # two decimals: exact
    if g[1] or p[1]:
        scale = max(abs(g[0]), abs(p[0]))
        return abs(g[0] - p[0]) <= DECIMAL_TOL * scale
    return g[0] == p[0]


def _as_sympy(simple: tuple[Fraction, bool]) -> Any:
    import sympy

    value, decimal = simple
    if decimal:
        return sympy.Float(value.numerator) / value.denominator
    return sympy.Rational(value.numerator, value.denominator)


def _text_answer(text: str) -> str | None:
    """A word answer ("Monday", "\\text{(C)}", "no solution") in comparable form, else ``None``."""
    unwrapped = _TEXT_WRAP_RE.sub(r"\1", text).replace("{", "").replace("}", "").strip()
    letter = _LETTER_RE.fullmatch(unwrapped)
    if letter:
        return letter.group(1)  # "C", "(C)", "\text{C}": a letter (option or variable), case kept
    if not _WORDS_RE.fullmatch(unwrapped):
        return None
    if unwrapped == text and not re.search(r"[A-Za-z]{3}", unwrapped):
        return None  # "xy" is a product of variables, not a word
    return " ".join(unwrapped.lower().split())


def _parse_gold(text: str, original: str) -> Any:
    try:
        return _parse(text)
    except _ParseError as exc:
        raise InputError(f"gold answer {original[:200]!r} could not be parsed as math ({exc})") from exc


@functools.lru_cache(maxsize=1024)
def _parse(text: str) -> Any:
    """Normalise with math-verify's settings and parse with latex2sympy; raise _ParseError on any failure."""
    from latex2sympy2_extended import latex2sympy
    from latex2sympy2_extended.math_normalization import normalize_latex
    from math_verify import LatexExtractionConfig
    from math_verify.grader import should_treat_as_complex

    if not text.strip():
        raise _ParseError("empty")
    try:
        normalized = normalize_latex(text, LatexExtractionConfig().normalization_config)
        complex_mode = should_treat_as_complex(text)
        expr = latex2sympy(normalized, is_real=not complex_mode, convert_degrees=False, normalization_config=None)
    except RecursionError as exc:
        raise _ParseError("nested too deeply") from exc
    except Exception as exc:  # antlr/sympy raise plain Exception subclasses of every kind
        raise _ParseError(_first_line(exc)) from exc
    return _plain_symbols(expr, complex_mode)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:120]


def _plain_symbols(expr: Any, complex_mode: bool) -> Any:
    """In complex mode latex2sympy parses ``i`` as a symbol; make it the imaginary unit."""
    import sympy

    if not complex_mode:
        return expr
    unit = [s for s in getattr(expr, "free_symbols", ()) if s.name == "i"]
    if not unit:
        return expr
    try:
        replaced = expr.xreplace({unit[0]: sympy.I})
    except Exception:  # some set types refuse xreplace
        return expr
    return expr if isinstance(replaced, sympy.logic.boolalg.BooleanAtom) else replaced


def _collection(text: str) -> tuple[str, str, list[str]] | None:
    """``(opening, closing, elements)`` of a bracketed or bare comma list of 2+ elements, else ``None``.

    Splitting the list here and comparing element by element is exact and much cheaper than parsing the whole
    tuple (latex2sympy takes ~30 ms on ``(3, 4)``); brackets are compared as written.
    """
    if len(text) > 1000:
        return None
    opening = closing = ""
    inner = text
    for o, c in (("\\{", "\\}"), ("(", ")"), ("[", "]"), ("(", "]"), ("[", ")")):
        if text.startswith(o) and text.endswith(c) and _balanced(text[len(o) : len(text) - len(c)]):
            opening, closing, inner = o, c, text[len(o) : len(text) - len(c)]
            break
    elements = top_level_split(inner, ",")
    if len(elements) < 2 or any(not e for e in elements) or _ELLIPSIS_RE.search(inner):
        return None
    return opening, closing, elements


def _balanced(text: str) -> bool:
    depth = 0
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth < 0:
                return False
    return depth == 0


def _compare_collections(g: tuple[str, str, list[str]], p: tuple[str, str, list[str]]) -> Verdict:
    """Sets and bare lists compare unordered with each other; a tuple ``(...)`` compares in written order with a
    tuple, a set or a bare list. Anything with square brackets (intervals, ``[1, 2, 3]``) only matches the same
    brackets."""
    g_open, g_close, g_items = g
    p_open, p_close, p_items = p
    same = (g_open, g_close) == (p_open, p_close)
    loose = {g_open + g_close, p_open + p_close} <= {"", "\\{\\}", "()"}
    if not same and not loose:
        return Verdict(False, f"brackets {p_open}...{p_close} where {g_open}...{g_close} are expected")
    unordered = "(" not in (g_open, p_open) and (g_open in ("", "\\{") or p_open in ("", "\\{"))
    if len(g_items) != len(p_items) and not unordered:
        return Verdict(False, f"{len(p_items)} values where {len(g_items)} are expected")
    if len(g_items) * len(p_items) > 400:
        return Verdict(False, "lists too long to compare element by element")
    if not unordered:
        for g_item, p_item in zip(g_items, p_items, strict=True):
            if not math_equal(g_item, p_item, _sequences=False).equal:
                return Verdict(False, f"element {p_item[:40]!r} != {g_item[:40]!r}")
        return Verdict(True)
    if len(g_items) != len(p_items) and not (_all_tuples(g_items) and _all_tuples(p_items)):
        return Verdict(False, f"{len(p_items)} values where {len(g_items)} are expected")
    # Numbers compare as multisets ("1, 2, 2" is not "1, 2": a double root counts twice); a list of solution
    # tuples compares as a set (a solution of a system listed twice is still one solution).
    remaining = list(p_items)
    for g_item in g_items:
        for k, p_item in enumerate(remaining):
            if math_equal(g_item, p_item, _sequences=False).equal:
                del remaining[k]
                break
        else:
            if not _all_tuples(g_items):
                return Verdict(False, f"no element matches {g_item[:40]!r}")
            if not any(math_equal(g_item, p, _sequences=False).equal for p in p_items):
                return Verdict(False, f"no element matches {g_item[:40]!r}")
    if _all_tuples(g_items):  # as a set: every answered tuple must also be a solution
        for p_item in p_items:
            if not any(math_equal(g_item, p_item, _sequences=False).equal for g_item in g_items):
                return Verdict(False, f"{p_item[:40]!r} is not a solution")
    return Verdict(True)


def _all_tuples(items: list[str]) -> bool:
    return all(i.startswith("(") and i.endswith(")") and "," in i for i in items)


def _compare_sequences(g_text: str, p_text: str) -> Verdict:
    """Term-by-term comparison of sequences written with an ellipsis."""
    g_terms, p_terms = top_level_split(g_text, ","), top_level_split(p_text, ",")
    if len(g_terms) != len(p_terms):
        return Verdict(False, f"sequence of {len(p_terms)} terms, expected {len(g_terms)}")
    for g_term, p_term in zip(g_terms, p_terms, strict=True):
        g_dots, p_dots = bool(_ELLIPSIS_RE.fullmatch(g_term)), bool(_ELLIPSIS_RE.fullmatch(p_term))
        if g_dots or p_dots:
            if g_dots != p_dots:
                return Verdict(False, "ellipsis in a different position")
            continue
        verdict = math_equal(g_term, p_term, _sequences=False)
        if not verdict.equal:
            return Verdict(False, f"term {p_term!r} != {g_term!r}")
    return Verdict(True)
