"""Comparison of parsed answers (sympy objects): exact arithmetic, element-wise structure, relations.

:func:`compare_parsed` is the second half of :func:`rewardflow.rules.equivalence.math_equal`: it receives the gold
and the predicted answer as sympy objects (from ``latex2sympy``) and decides equality with these rules:

* **Exact when both sides are exact.** Integers, rationals, powers and factorials are evaluated with exact
  rational arithmetic (Python ints); exact irrationals are compared at 60 significant digits with a *relative*
  tolerance of 1e-40, which treats huge and tiny magnitudes alike.
* **A relative tolerance only for decimals.** When either side contains a decimal (a sympy ``Float``) the
  values must agree to a relative :data:`DECIMAL_TOL` (5e-6: six significant digits). No absolute tolerance.
* **Structure element-wise.** Tuples in order, sets as multisets, intervals with their open/closed ends,
  matrices entry by entry. An assignment ``x = 5`` matches ``5``; ``x - y = 0`` does not match ``0``; two
  equations match when one is a non-zero constant multiple of the other; an inequality in one variable matches
  the interval it describes.
* **Expressions in variables** are compared at fixed rational points (one negative) to 60 digits.
* **Too large.** Exact values beyond ~300,000 digits are not computed: numerically different means unequal,
  otherwise :class:`~rewardflow.errors.UndecidedError` is raised (an error, not a guess).

sympy is imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from rewardflow.errors import UndecidedError

__all__ = ["DECIMAL_TOL", "Verdict", "compare_parsed"]

_MAX_BITS = 1_000_000  # exact integers beyond ~300k digits are not computed
_MAX_FACTORIAL = 50_000  # 50000! has ~213k digits
_DIGITS = 60
_EXACT_TOL = Fraction(1, 10**40)
#: Relative tolerance when a decimal is involved (six significant digits, correctly rounded).
DECIMAL_TOL = Fraction(5, 10**6)


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether two answers are equal, and why not when they are not."""

    equal: bool
    reason: str | None = None
    #: Set when "not equal" only means "could not tell" (the answer did not parse): math-verify gets a say.
    unsure: bool = False


class _TooLarge(Exception):
    """An exact value would exceed the size bound (internal; never escapes this module)."""


def compare_parsed(g: Any, p: Any) -> Verdict:
    """Compare two parsed answers (gold first); see the module docstring. May raise ``UndecidedError``."""
    try:
        return _compare(g, p)
    except _TooLarge:
        return _compare_huge(g, p)


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
    for r in chain:  # every numeric step must hold: "\\boxed{5 = 6}" is not an answer of 6
        if not r.lhs.free_symbols and not r.rhs.free_symbols and not _equal_values(r.lhs, r.rhs):
            return None
    if isinstance(lhs, sympy.Symbol) or isinstance(lhs, sympy.core.function.AppliedUndef):
        return lhs, rhs
    if not getattr(lhs, "free_symbols", True) and not getattr(rhs, "free_symbols", True):
        return None, rhs  # a worked computation "2 + 3 = 5": its value is the last right-hand side
    # "9 = 2a + b" (numeric left side, symbols on the right) is a condition, not "the value is 2a + b"
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
    tol = DECIMAL_TOL if decimal else _EXACT_TOL
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
    if a is None or b is None:
        raise UndecidedError("an answer is too large to compare exactly and cannot be evaluated numerically")
    if not _close(a, b, _EXACT_TOL):
        return Verdict(False, "different value (compared numerically: too large to compare exactly)")
    raise UndecidedError("answers agree to 40 digits but are too large to compare exactly")
