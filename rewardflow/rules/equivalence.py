"""Mathematical equivalence of a predicted final answer and a gold answer, exact where math-verify rounds.

:func:`math_equal` parses both answers with math-verify's LaTeX normalisation and ``latex2sympy`` (the parser
math-verify itself uses), then compares the sympy objects with its own rules:

* **Exact when both sides are exact.** Integers, rationals, powers and factorials are evaluated with exact
  rational arithmetic (Python ints), so ``1/2004!`` differs from ``1/2006!`` and ``2^{-99}`` from ``2^{-98}``
  (math-verify 0.9.0 rounds ``a - b`` to 15 digits with ``chop=True`` and calls them equal). Exact irrationals
  (``\\sqrt{2}``, ``\\pi``) are compared at 60 significant digits with a *relative* tolerance of 1e-40, which
  treats huge and tiny magnitudes alike.
* **A relative tolerance only for genuine decimals.** When either side contains a decimal literal (``0.333333``,
  ``1.5 \\times 10^{-8}``) the values must agree to a relative 1e-6; two plain decimal numbers are compared
  exactly (``1000000.3`` is not ``1000000.4``). There is no absolute tolerance: ``0.0000001`` is not ``0``.
* **Nothing matches what did not parse.** A gold answer that cannot be parsed raises
  :class:`~rewardflow.errors.InputError`; a predicted answer that cannot be parsed (``4\\sqrt(2`` , a lone
  operator) scores 0 with a reason, even when the gold would also have "parsed" to nothing. Only answers that
  are identical after normalisation match without parsing.
* **Structure is compared element-wise.** Tuples in order, sets and bare lists as multisets, intervals with their
  open/closed ends, matrices entry by entry, sequences with an ellipsis (``1, 3, 5, \\ldots, 2n-1``) term by
  term with the ellipsis in the same place. ``x = 5`` matches ``5`` (an assignment), but ``x - y = 0`` does not
  match ``0``; two equations match when one is a non-zero constant multiple of the other.
* **Expressions with variables** are compared at fixed rational points (one of them negative) to 60 digits; a
  difference anywhere means unequal (this is how ``x + 10^{-20}`` differs from ``x``).
* **Too large to compare.** Exact values beyond about 300,000 digits are not computed: if the two answers differ
  numerically (60 digits, relative) they are unequal; otherwise :class:`~rewardflow.errors.UndecidedError` is
  raised, so the sample becomes ``status=error`` rather than a guessed score. Pathological inputs that make
  sympy itself hang (power towers) are left to the engine's killable timeout (``status=timeout``).

What is *not* covered: units beyond those math-verify strips, equivalence of equations that are not constant
multiples of each other (``y = x`` vs ``y - x = 0`` match; ``x^2 = 1`` vs ``x = \\pm 1`` do not), and answers
longer than :data:`MAX_ANSWER_CHARS` (scored 0 with a reason).
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from rewardflow.errors import InputError, UndecidedError
from rewardflow.rules.answer import top_level_split

__all__ = ["MAX_ANSWER_CHARS", "Verdict", "math_equal", "normalize_answer"]

#: Predicted answers longer than this (or than 10x the gold) are not parsed: scored 0 with a reason.
MAX_ANSWER_CHARS = 2000
_MAX_BITS = 1_000_000  # exact integers beyond ~300k digits are not computed
_MAX_FACTORIAL = 50_000  # 50000! has ~213k digits
_DIGITS = 60
_EXACT_TOL = Fraction(1, 10**40)
_DECIMAL_TOL = Fraction(5, 10**6)

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


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether two answers are equal, and why not when they are not."""

    equal: bool
    reason: str | None = None


class _TooLarge(Exception):
    """An exact value would exceed the size bound (internal; never escapes this module)."""


def normalize_answer(text: str) -> str:
    """Pre-normalisation applied before math-verify's own: fixes that change meaning if left to the parser.

    ``\\left(`` -> ``(``, ``\\sqrt(2)`` -> ``\\sqrt{2}`` (math-verify turns it into ``\\\\sqrt{2}`` and parses
    only the ``4`` of ``4\\sqrt(2)``), thin-space thousands separators ``2\\,000`` -> ``2000`` (parsed as
    ``2 \\cdot 0``), and scientific notation ``1.5e3`` -> ``1.5\\times10^{3}`` (parsed as ``1.5 \\cdot e \\cdot 3``).
    """
    text = text.strip().strip("$").strip()
    if text.startswith(("\\(", "\\[")) and text.endswith(("\\)", "\\]")):
        text = text[2:-2].strip()
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\!", "")
    text = _LEFT_RIGHT_RE.sub("", text)
    text = _SQRT_PAREN_RE.sub(r"\\sqrt{\1}", text)
    text = _THIN_SPACE_NUM_RE.sub("", text)
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
        return Verdict(False, f"final answer could not be parsed as math ({exc})")
    try:
        return _compare(g, p)
    except _TooLarge:
        return _compare_huge(g, p)


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
        return abs(g[0] - p[0]) <= _DECIMAL_TOL * scale
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
    if len(g_items) != len(p_items):
        return Verdict(False, f"{len(p_items)} values where {len(g_items)} are expected")
    if not unordered:
        for g_item, p_item in zip(g_items, p_items, strict=True):
            if not math_equal(g_item, p_item, _sequences=False).equal:
                return Verdict(False, f"element {p_item[:40]!r} != {g_item[:40]!r}")
        return Verdict(True)
    remaining = list(p_items)
    for g_item in g_items:
        for k, p_item in enumerate(remaining):
            if math_equal(g_item, p_item, _sequences=False).equal:
                del remaining[k]
                break
        else:
            return Verdict(False, f"no element matches {g_item[:40]!r}")
    return Verdict(True)


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


# ---------------------------------------------------------------------------------------------- comparison


def _compare(g: Any, p: Any) -> Verdict:
    import sympy

    if _is_relation(g) or _is_relation(p):
        return _compare_relations(g, p)
    if isinstance(g, sympy.MatrixBase) or isinstance(p, sympy.MatrixBase):
        if not (isinstance(g, sympy.MatrixBase) and isinstance(p, sympy.MatrixBase)) or g.shape != p.shape:
            return Verdict(False, "matrix shapes differ")
        ok = all(_equal_values(a, b) for a, b in zip(g, p, strict=True))
        return Verdict(ok, None if ok else "matrix entries differ")
    g_items, g_ordered = _items(g)
    p_items, p_ordered = _items(p)
    if g_items is not None or p_items is not None:
        if g_items is None:
            g_items, g_ordered = [g], True
        if p_items is None:
            p_items, p_ordered = [p], True
        if len(g_items) != len(p_items):
            return Verdict(False, f"{len(p_items)} values where {len(g_items)} are expected")
        ordered = g_ordered or p_ordered  # a set against a tuple: the set's elements as written
        ok = _match_items(g_items, p_items, ordered)
        return Verdict(ok, None if ok else "elements differ")
    if isinstance(g, sympy.Set) or isinstance(p, sympy.Set):
        return _compare_sets(g, p)
    ok = _equal_values(g, p)
    return Verdict(ok, None if ok else "different value")


def _items(x: Any) -> tuple[list[Any] | None, bool]:
    """Elements of a tuple/list-like answer and whether their order matters, else ``(None, True)``."""
    import sympy

    if isinstance(x, sympy.Tuple):
        return list(x.args), True
    if isinstance(x, sympy.FiniteSet):
        unsorted = getattr(x, "_unsorted_args", None)
        return (list(unsorted) if unsorted is not None else list(x.args)), False
    if isinstance(x, sympy.Interval) and x.left_open and x.right_open and x.start.is_finite and x.end.is_finite:
        return [x.start, x.end], True  # "(1, 2)": an open interval or an ordered pair
    return None, True


def _match_items(g_items: list[Any], p_items: list[Any], ordered: bool) -> bool:
    if ordered:
        return all(_compare(a, b).equal for a, b in zip(g_items, p_items, strict=True))
    remaining = list(p_items)
    for a in g_items:
        for k, b in enumerate(remaining):
            if _compare(a, b).equal:
                del remaining[k]
                break
        else:
            return False
    return True


def _compare_sets(g: Any, p: Any) -> Verdict:
    import sympy

    if isinstance(g, sympy.Interval) and isinstance(p, sympy.Interval):
        ok = (
            g.left_open == p.left_open
            and g.right_open == p.right_open
            and _equal_values(g.start, p.start)
            and _equal_values(g.end, p.end)
        )
        return Verdict(ok, None if ok else "different interval")
    if isinstance(g, sympy.Union) and isinstance(p, sympy.Union):
        ok = len(g.args) == len(p.args) and _match_items(list(g.args), list(p.args), ordered=False)
        return Verdict(ok, None if ok else "different union of sets")
    ok = g == p
    return Verdict(bool(ok), None if ok else "different set")


def _is_relation(x: Any) -> bool:
    import sympy

    if isinstance(x, sympy.core.relational.Relational):
        return True
    return isinstance(x, sympy.And) and all(isinstance(a, sympy.core.relational.Relational) for a in x.args)


def _chain(x: Any) -> list[Any]:
    import sympy

    if isinstance(x, sympy.And):
        return list(getattr(x, "_unsorted_args", None) or x.args)
    return [x]


def _assignment(x: Any) -> tuple[Any, Any] | None:
    """``(lhs, value)`` for ``x = 5`` / ``x = 2 + 3 = 5`` / ``f(x) = ...`` / ``2 + 3 = 5``, else ``None``."""
    import sympy

    chain = _chain(x)
    if not all(isinstance(r, sympy.Eq) for r in chain):
        return None
    lhs, rhs = chain[0].lhs, chain[-1].rhs
    if isinstance(lhs, sympy.Symbol) or isinstance(lhs, sympy.core.function.AppliedUndef):
        return lhs, rhs
    if not getattr(lhs, "free_symbols", True):
        return None, rhs  # a worked computation "2 + 3 = 5": its value is the last right-hand side
    return None


def _compare_relations(g: Any, p: Any) -> Verdict:
    import sympy

    g_rel, p_rel = _is_relation(g), _is_relation(p)
    g_assign = _assignment(g) if g_rel else None
    p_assign = _assignment(p) if p_rel else None
    if not p_rel:  # gold "x = 5", answer "5"; gold "1 < x < 3", answer "(1, 3)"
        if g_assign is not None:
            return _compare(g_assign[1], p)
        if _is_set_like(p):
            return _compare_as_sets(g, p)
        return Verdict(False, "the gold is an equation or inequality, the answer is not")
    if not g_rel:  # gold "5", answer "x = 5"; gold "(1, 3)", answer "1 < x < 3"
        if p_assign is not None:
            return _compare(g, p_assign[1])
        if _is_set_like(g):
            return _compare_as_sets(p, g, relation_is_gold=False)
        return Verdict(False, "the answer is an equation or inequality, the gold is a value")
    if g_assign is None and p_assign is not None and p_assign[0] is not None and _is_set_like(p_assign[1]):
        return _compare_as_sets(g, p_assign[1])  # gold "1 < x < 3", answer "x \\in (1, 3)"
    if g_assign is not None and p_assign is not None and g_assign[0] is not None and p_assign[0] is not None:
        if str(g_assign[0]) != str(p_assign[0]):
            return Verdict(False, f"assigns {p_assign[0]}, expected {g_assign[0]}")
        return _compare(g_assign[1], p_assign[1])
    g_chain, p_chain = _chain(g), _chain(p)
    if len(g_chain) != len(p_chain):
        return Verdict(False, "different number of relations")
    ok = _match_items(g_chain, p_chain, ordered=False) if len(g_chain) > 1 else _same_relation(g, p)
    if not ok and isinstance(g, sympy.And) and isinstance(p, sympy.And):
        ok = _same_relation_sets(g, p)
    return Verdict(ok, None if ok else "different equation or inequality")


def _is_set_like(x: Any) -> bool:
    import sympy

    return isinstance(x, sympy.Set)


def _compare_as_sets(relation: Any, other: Any, *, relation_is_gold: bool = True) -> Verdict:
    """An inequality in one variable against an interval or union: compare their solution sets."""
    try:
        if len(relation.free_symbols) != 1:
            return Verdict(False, "an inequality in several variables cannot be compared with a set")
        as_set = relation.as_set()
    except Exception:
        return Verdict(False, "the inequality could not be turned into a set")
    g, p = (as_set, other) if relation_is_gold else (other, as_set)
    return _compare_sets(g, p)


def _same_relation(g: Any, p: Any) -> bool:
    """Equations equal up to a non-zero constant factor; inequalities up to a positive one (after flipping)."""
    import sympy

    if not (_is_relation(g) and _is_relation(p)) or isinstance(g, sympy.And) or isinstance(p, sympy.And):
        return _compare(g, p).equal
    g_form, g_kind = _relation_form(g)
    p_form, p_kind = _relation_form(p)
    if g_kind != p_kind or g_kind is None:
        return False
    if _equal_values(g_form, p_form):
        return True
    if g_kind == "eq" and _equal_values(g_form, -p_form):
        return True
    try:
        ratio = sympy.simplify(g_form / p_form)
    except Exception:
        return False
    if getattr(ratio, "free_symbols", True) or not ratio.is_number or ratio == 0 or not ratio.is_finite:
        return False
    return True if g_kind == "eq" else bool(ratio.is_positive)


def _relation_form(r: Any) -> tuple[Any, str | None]:
    import sympy

    if isinstance(r, sympy.Eq):
        return r.lhs - r.rhs, "eq"
    if isinstance(r, (sympy.StrictGreaterThan, sympy.StrictLessThan)):
        form = r.lhs - r.rhs if isinstance(r, sympy.StrictGreaterThan) else r.rhs - r.lhs
        return form, "gt"
    if isinstance(r, (sympy.GreaterThan, sympy.LessThan)):
        form = r.lhs - r.rhs if isinstance(r, sympy.GreaterThan) else r.rhs - r.lhs
        return form, "ge"
    return r, None


def _same_relation_sets(g: Any, p: Any) -> bool:
    """``1 < x < 3`` and ``x > 1 \\text{ and } x < 3``: same solution set in one variable."""
    try:
        if len(g.free_symbols) != 1 or len(p.free_symbols) != 1:
            return False
        return _compare_sets(g.as_set(), p.as_set()).equal
    except Exception:
        return False


# ------------------------------------------------------------------------------------------------- values


def _equal_values(g: Any, p: Any) -> bool:
    """Equality of two scalar expressions (numbers, constants, or expressions in variables)."""
    import sympy

    if g == p:
        return True
    g_pct, p_pct = _percent(g), _percent(p)
    if g_pct is not None or p_pct is not None:  # 50% matches 50 and 0.5
        for a in (g, g_pct) if g_pct is not None else (g,):
            for b in (p, p_pct) if p_pct is not None else (p,):
                if _equal_values(_unpercent(a), _unpercent(b)):
                    return True
        return False
    if not isinstance(g, sympy.Expr) or not isinstance(p, sympy.Expr):
        return False
    if g.has(sympy.zoo, sympy.nan, sympy.oo, -sympy.oo) or p.has(sympy.zoo, sympy.nan, sympy.oo, -sympy.oo):
        return False  # infinities and undefined values only equal themselves (checked above)
    decimal = g.has(sympy.Float) or p.has(sympy.Float)
    tol = _DECIMAL_TOL if decimal else _EXACT_TOL
    free = g.free_symbols | p.free_symbols
    if free:  # "x + 1" vs "y + 1" differ at the points; "\\sin^2 x + \\cos^2 x" vs "1" agree
        return _equal_at_points(g, p, sorted(free, key=str), tol)
    if not decimal:
        a, b = _exact(g), _exact(p)
        if a is not None and b is not None:
            return a == b
    return _numeric_close(g, p, tol)


def _percent(x: Any) -> Any:
    """The value of ``X\\%`` as ``X/100`` if ``x`` is a percentage, else ``None``."""
    import sympy

    if isinstance(x, sympy.Mul) and any(isinstance(a, sympy.UnevaluatedExpr) for a in x.args):
        return x.doit()
    return None


def _unpercent(x: Any) -> Any:
    """``X\\%`` read as the number ``X`` (GSM8K writes "45%" for a gold of 45)."""
    import sympy

    if isinstance(x, sympy.Mul) and any(isinstance(a, sympy.UnevaluatedExpr) for a in x.args):
        return sympy.Mul(*[a for a in x.args if not isinstance(a, sympy.UnevaluatedExpr)])
    return x


def _exact(x: Any) -> Fraction | None:
    """Exact rational value of ``x`` built from integers with + * ^ and !, or ``None`` if not of that form.

    Raises _TooLarge instead of building numbers beyond :data:`_MAX_BITS`.
    """
    import sympy

    if isinstance(x, sympy.Integer):
        return Fraction(int(x))
    if isinstance(x, sympy.Rational):
        return Fraction(int(x.p), int(x.q))
    if isinstance(x, sympy.UnevaluatedExpr):
        return _exact(x.args[0])
    if isinstance(x, (sympy.Add, sympy.Mul)):
        values = [_exact(a) for a in x.args]
        if any(v is None for v in values):
            return None
        total = Fraction(0) if isinstance(x, sympy.Add) else Fraction(1)
        for v in values:
            total = total + v if isinstance(x, sympy.Add) else total * v  # type: ignore[operator]
            _check_size(total)
        return total
    if isinstance(x, sympy.Pow):
        base, exp = _exact(x.base), _exact(x.exp)
        if base is None or exp is None or exp.denominator != 1:
            return None
        n = exp.numerator
        bits = max(base.numerator.bit_length(), base.denominator.bit_length(), 1)
        if bits * abs(n) > _MAX_BITS and abs(base) != 1:
            raise _TooLarge
        if base == 0 and n < 0:
            return None
        return base**n
    if isinstance(x, sympy.factorial):
        n = _exact(x.args[0])
        if n is None or n.denominator != 1 or n < 0:
            return None
        if n > _MAX_FACTORIAL:
            raise _TooLarge
        return Fraction(math.factorial(int(n)))
    return None


def _check_size(v: Fraction) -> None:
    if v.numerator.bit_length() > _MAX_BITS or v.denominator.bit_length() > _MAX_BITS:
        raise _TooLarge


def _to_mpc(x: Any) -> Any:
    """``x`` evaluated to :data:`_DIGITS` significant digits as an mpmath complex, or ``None``."""
    import mpmath
    import sympy

    try:
        value = sympy.N(x, _DIGITS)
    except Exception:
        return None
    if not value.is_number or value.has(sympy.zoo, sympy.nan, sympy.oo, -sympy.oo):
        return None
    re_part, im_part = value.as_real_imag()
    try:
        with mpmath.workdps(_DIGITS + 10):
            return mpmath.mpc(_to_mpf(re_part), _to_mpf(im_part))
    except (TypeError, ValueError):
        return None


def _to_mpf(x: Any) -> Any:
    import mpmath
    import sympy

    if isinstance(x, sympy.Float):
        return mpmath.mpf(x._mpf_)
    if isinstance(x, sympy.Rational):
        return mpmath.mpf(int(x.p)) / int(x.q)
    return mpmath.mpf(sympy.N(x, _DIGITS)._mpf_)


def _close(a: Any, b: Any, tol: Fraction) -> bool:
    import mpmath

    with mpmath.workdps(_DIGITS + 10):
        scale = max(abs(a), abs(b))
        if scale == 0:
            return True
        return abs(a - b) <= mpmath.mpf(tol.numerator) / tol.denominator * scale


def _numeric_close(g: Any, p: Any, tol: Fraction) -> bool:
    a, b = _to_mpc(g), _to_mpc(p)
    if a is None or b is None:
        return False
    return _close(a, b, tol)


# Points at which expressions in variables are compared: irregular rationals, one negative, none special.
_POINTS = ((7, 5), (-11, 13), (17, 6), (3, 19))


def _equal_at_points(g: Any, p: Any, symbols: list[Any], tol: Fraction) -> bool:
    import sympy

    compared = 0
    names = sorted({s.name for s in symbols})
    for shift, (num, den) in enumerate(_POINTS):
        # by name: "x" parsed as real on one side and complex on the other is the same variable
        by_name = {n: sympy.Rational(num + 3 * k * shift, den + k) for k, n in enumerate(names)}
        values = {s: by_name[s.name] for s in symbols}
        try:
            a, b = _to_mpc(g.xreplace(values)), _to_mpc(p.xreplace(values))
        except Exception:
            continue
        if a is None or b is None:
            continue
        if not _close(a, b, tol):
            return False
        compared += 1
    if compared:
        return True
    try:  # undefined at every point (e.g. log of a negative): fall back to symbolic simplification
        return bool(sympy.simplify(g - p) == 0)
    except Exception:
        return False


def _compare_huge(g: Any, p: Any) -> Verdict:
    """Values too large to compute exactly: unequal if they differ numerically, else refuse to decide."""
    a, b = _to_mpc(g), _to_mpc(p)
    if a is not None and b is not None and not _close(a, b, _EXACT_TOL):
        return Verdict(False, "different value (compared numerically: too large to compare exactly)")
    raise UndecidedError("answers agree to 40 digits but are too large to compare exactly")
