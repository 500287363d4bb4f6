"""Length-shaped penalties: ``length`` (distance from a target), ``overlong`` (DAPO) and ``repetition`` (n-grams).

All three are *penalties*: 0.0 means no penalty and the value goes down to ``-penalty`` (default -1.0), so they
add to an accuracy reward in a composite spec (``weight`` scales them further).

Lengths are counted in ``unit``:

* ``"tokens"`` (default for ``length`` and ``overlong``): ``len(completion_ids)``. The trainer's token ids are the
  only count that matches the generation budget, so when a row has no ``completion_ids`` the reward raises
  :class:`~rewardflow.errors.InputError` (``status=error``) rather than guessing from characters;
* ``"words"`` (whitespace-separated) or ``"chars"``: opt in explicitly where no token ids exist.

Each class is built from a spec's ``params`` (``factory=True``) and pickles as plain attributes.
"""

from __future__ import annotations

from typing import Any, Literal

from rewardflow.errors import ConfigError, InputError
from rewardflow.types import Score

__all__ = ["Length", "Overlong", "Repetition", "count_length"]

Unit = Literal["tokens", "words", "chars"]
_UNITS = ("tokens", "words", "chars")


def count_length(completion: str, completion_ids: list[int] | None, unit: str, reward: str) -> int:
    """The completion's length in ``unit``; tokens need ``completion_ids`` (see the module docstring)."""
    if unit == "tokens":
        if completion_ids is None:
            raise InputError(
                f"{reward}: unit 'tokens' needs the row's completion_ids (token ids); pass them, or set "
                "unit: words / chars in the reward's params"
            )
        return len(completion_ids)
    if unit == "words":
        return len(completion.split())
    return len(completion)


def _check_unit(unit: str, reward: str) -> None:
    if unit not in _UNITS:
        raise ConfigError(f"{reward}: unit must be one of {list(_UNITS)}, got {unit!r}")


def _positive(value: Any, name: str, reward: str, *, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{reward}: {name} must be a {'non-negative' if allow_zero else 'positive'} number")


class Length:
    """Target-length penalty: 0.0 within ``tolerance`` of ``target``, falling linearly to ``-penalty`` (-1.0).

    ``distance = |length - target| - tolerance``; the value is ``-penalty * min(1, distance / scale)`` with
    ``scale`` defaulting to ``target``. With ``only_longer`` a completion shorter than the target is never
    penalised (a length cap rather than a target).
    """

    def __init__(
        self,
        *,
        target: int,
        tolerance: int = 0,
        scale: int | None = None,
        penalty: float = 1.0,
        unit: Unit = "tokens",
        only_longer: bool = False,
    ) -> None:
        _positive(target, "target", "length")
        _positive(tolerance, "tolerance", "length", allow_zero=True)
        _positive(penalty, "penalty", "length")
        if scale is not None:
            _positive(scale, "scale", "length")
        _check_unit(unit, "length")
        self.target = target
        self.tolerance = tolerance
        self.scale = scale if scale is not None else target
        self.penalty = float(penalty)
        self.unit = unit
        self.only_longer = only_longer

    def __repr__(self) -> str:
        return f"Length(target={self.target}, tolerance={self.tolerance}, unit={self.unit!r})"

    def __call__(self, completion: str, completion_ids: list[int] | None = None) -> Score:
        n = count_length(completion, completion_ids, self.unit, "length")
        offset = n - self.target
        if self.only_longer and offset < 0:
            offset = 0
        distance = abs(offset) - self.tolerance
        if distance <= 0:
            return Score(0.0)
        value = -self.penalty * min(1.0, distance / self.scale)
        return Score(value, reason=f"{n} {self.unit}, target {self.target}±{self.tolerance}")


class Overlong:
    """DAPO's soft overlong penalty on the completion length ``L`` (in tokens by default), from 0.0 down to -1.0.

    0.0 while ``L <= max_length - cache``; ``-penalty * (L - (max_length - cache)) / cache`` inside the last
    ``cache`` units; ``-penalty`` beyond ``max_length`` (a truncated generation). TRL calls these
    ``max_completion_len`` and ``soft_punish_cache``.
    """

    def __init__(self, *, max_length: int, cache: int, penalty: float = 1.0, unit: Unit = "tokens") -> None:
        _positive(max_length, "max_length", "overlong")
        _positive(cache, "cache", "overlong")
        _positive(penalty, "penalty", "overlong")
        if cache > max_length:
            raise ConfigError(f"overlong: cache ({cache}) must not exceed max_length ({max_length})")
        _check_unit(unit, "overlong")
        self.max_length = max_length
        self.cache = cache
        self.penalty = float(penalty)
        self.unit = unit

    def __repr__(self) -> str:
        return f"Overlong(max_length={self.max_length}, cache={self.cache}, unit={self.unit!r})"

    def __call__(self, completion: str, completion_ids: list[int] | None = None) -> Score:
        n = count_length(completion, completion_ids, self.unit, "overlong")
        soft_start = self.max_length - self.cache
        if n <= soft_start:
            return Score(0.0)
        if n > self.max_length:
            return Score(-self.penalty, reason=f"{n} {self.unit} > max_length {self.max_length}")
        value = -self.penalty * (n - soft_start) / self.cache
        return Score(value, reason=f"{n} {self.unit} in the last {self.cache} before {self.max_length}")


class Repetition:
    """N-gram repetition penalty: ``-penalty * (1 - distinct n-grams / total n-grams)``, from 0.0 to -1.0.

    0.0 for a completion without a repeated n-gram (or shorter than ``ngram`` units); close to ``-penalty`` for
    one phrase repeated over and over. Counted over whitespace words by default, or over ``completion_ids``
    with ``unit="tokens"`` (characters with ``unit="chars"``).
    """

    def __init__(self, *, ngram: int = 3, penalty: float = 1.0, unit: Unit = "words") -> None:
        if isinstance(ngram, bool) or not isinstance(ngram, int) or ngram < 1:
            raise ConfigError(f"repetition: ngram must be a positive integer, got {ngram!r}")
        _positive(penalty, "penalty", "repetition")
        _check_unit(unit, "repetition")
        self.ngram = ngram
        self.penalty = float(penalty)
        self.unit = unit

    def __repr__(self) -> str:
        return f"Repetition(ngram={self.ngram}, unit={self.unit!r})"

    def __call__(self, completion: str, completion_ids: list[int] | None = None) -> Score:
        units: list[Any] | str
        if self.unit == "tokens":
            if completion_ids is None:
                raise InputError("repetition: unit 'tokens' needs the row's completion_ids; or set unit: words")
            units = completion_ids
        elif self.unit == "words":
            units = completion.split()
        else:
            units = completion
        total = len(units) - self.ngram + 1
        if total <= 1:
            return Score(0.0)
        if self.unit == "chars":
            distinct = len({completion[i : i + self.ngram] for i in range(total)})
        else:
            distinct = len({tuple(units[i : i + self.ngram]) for i in range(total)})
        ratio = 1.0 - distinct / total
        if ratio == 0.0:
            return Score(0.0)
        return Score(-self.penalty * ratio, reason=f"{ratio:.0%} of {self.ngram}-grams are repeats")
