"""Comparing a program's answers with the expected ones, on the host (never inside the sandbox).

* stdout: ``tokens`` (default; whitespace-insensitive, as most judges of APPS/CodeContests accept), ``lines``
  (each line right-stripped, trailing blank lines ignored) or ``exact``. With ``float_tol``, two tokens that both
  read as numbers are equal when within that absolute *or* relative tolerance.
* return values: equal after tuples become lists (JSON has no tuples, so the expected side never has them);
  with ``float_tol`` floats compare with the same tolerance, element by element.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["WHITESPACE_MODES", "same_stdout", "same_value"]

WHITESPACE_MODES = ("tokens", "lines", "exact")


def _close(a: float, b: float, tol: float) -> bool:
    return math.isclose(a, b, rel_tol=tol, abs_tol=tol)


def _token_equal(got: str, want: str, float_tol: float | None) -> bool:
    if got == want:
        return True
    if float_tol is None:
        return False
    try:
        a, b = float(got), float(want)
    except ValueError:
        return False
    if math.isnan(a) or math.isnan(b):
        return False
    return _close(a, b, float_tol)


def same_stdout(got: str, want: str, *, whitespace: str = "tokens", float_tol: float | None = None) -> bool:
    """Whether a program's stdout matches the expected output under the given options."""
    if whitespace == "exact":
        return got == want
    if whitespace == "lines":
        g = [line.rstrip() for line in got.rstrip().splitlines()]
        w = [line.rstrip() for line in want.rstrip().splitlines()]
        if float_tol is None:
            return g == w
        return len(g) == len(w) and all(
            len(a.split()) == len(b.split())
            and all(_token_equal(x, y, float_tol) for x, y in zip(a.split(), b.split(), strict=False))
            for a, b in zip(g, w, strict=False)
        )
    if whitespace != "tokens":
        raise ValueError(f"whitespace must be one of {WHITESPACE_MODES}, got {whitespace!r}")
    g, w = got.split(), want.split()
    return len(g) == len(w) and all(_token_equal(a, b, float_tol) for a, b in zip(g, w, strict=False))


def _normalise(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    return value


def same_value(got: Any, want: Any, *, float_tol: float | None = None) -> bool:
    """Whether a returned value equals the expected one (tuples as lists; optional float tolerance)."""
    got, want = _normalise(got), _normalise(want)
    if float_tol is None:
        return bool(got == want)
    return _tolerant(got, want, float_tol)


def _tolerant(got: Any, want: Any, tol: float) -> bool:
    if isinstance(got, (int, float)) and isinstance(want, (int, float)):
        return got == want or (
            not (math.isnan(got) or math.isnan(want)) and math.isfinite(got) and _close(got, want, tol)
        )
    if isinstance(got, list) and isinstance(want, list):
        return len(got) == len(want) and all(_tolerant(a, b, tol) for a, b in zip(got, want, strict=False))
    if isinstance(got, dict) and isinstance(want, dict):
        return got.keys() == want.keys() and all(_tolerant(got[k], want[k], tol) for k in got)
    return got == want
