"""Typed data that flows through rewardflow: samples in, results out.

A :class:`Sample` is one rollout to score; a :class:`RewardResult` is what comes back for it, always, whatever
happened: a value with ``status="ok"``, or ``value=None`` with ``status="error"``/``"timeout"`` and a reason.
There is deliberately no way to express "failed, but here is a 0": a failure is never a score.

Rewards may return a plain number, or a :class:`Score` when they want to attach per-component values or explain
a zero (``Score(0.0, reason="no final answer")``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

__all__ = ["RESERVED_COLUMNS", "RewardResult", "Sample", "Score", "Status"]

#: Row columns that become :class:`Sample` fields rather than extra columns.
RESERVED_COLUMNS = frozenset({"prompt", "completion", "prompt_ids", "completion_ids", "group"})


class Status(str, Enum):
    """Outcome of one reward call. ``str`` subclass so it serialises as plain text."""

    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Sample:
    """One rollout: the prompt, the completion, optional token ids, a group id and the row's other columns.

    ``row`` holds every other dataset column (``answer``, ``solution``, ...). Rewards receive those columns as
    keyword arguments; a column whose name collides with a sample field is kept in ``row`` but never shadows the
    field.
    """

    prompt: str
    completion: str
    prompt_ids: list[int] | None = None
    completion_ids: list[int] | None = None
    group: str | None = None
    row: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(
        cls,
        row: Mapping[str, Any],
        *,
        prompt_key: str = "prompt",
        completion_key: str = "completion",
    ) -> Sample:
        """Build a sample from a dataset row (a JSON object).

        Raises :class:`~rewardflow.errors.InputError` naming the missing field when the completion is absent or
        not text, so a bad row is reported rather than scored as an empty string.
        """
        from rewardflow.errors import InputError

        if not isinstance(row, Mapping):
            raise InputError(f"a row must be a JSON object, got {json_type(row)}")
        if completion_key not in row:
            raise InputError(f"missing field {completion_key!r}")
        completion = row[completion_key]
        prompt = row.get(prompt_key, "")
        if not isinstance(completion, str):
            raise InputError(f"field {completion_key!r} must be a string, got {json_type(completion)}")
        if prompt is None:
            prompt = ""
        if not isinstance(prompt, str):
            raise InputError(f"field {prompt_key!r} must be a string, got {json_type(prompt)}")
        group = row.get("group")
        extra = {k: v for k, v in row.items() if k not in (prompt_key, completion_key) and k not in RESERVED_COLUMNS}
        return cls(
            prompt=prompt,
            completion=completion,
            prompt_ids=_ids(row.get("prompt_ids"), "prompt_ids"),
            completion_ids=_ids(row.get("completion_ids"), "completion_ids"),
            group=None if group is None else str(group),
            row=extra,
        )


def json_type(value: Any) -> str:
    """The JSON name of a Python value's type (``object``, ``array``, ``string``, ``number``, ``boolean``, ``null``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _ids(value: Any, name: str) -> list[int] | None:
    from rewardflow.errors import InputError

    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in value):
        raise InputError(f"field {name!r} must be a list of integers")
    return value


@dataclass(frozen=True, slots=True)
class Score:
    """What a reward may return instead of a bare float: the value plus an explanation and sub-scores.

    ``info`` is free-form accounting copied into the result (a judge puts its token usage there).
    """

    value: float
    reason: str | None = None
    components: Mapping[str, float] | None = None
    info: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class RewardResult:
    """The result of scoring one sample.

    ``value`` is a finite float when ``status`` is ``ok`` and ``None`` otherwise. ``reason`` explains every
    non-ok result (and may explain an ok zero). ``components`` maps each named sub-reward to its value (``None``
    where that component failed). ``latency`` is the wall time of the reward call itself in seconds, queueing
    excluded. ``info`` carries accounting such as judge token usage.
    """

    value: float | None
    status: Status = Status.OK
    reason: str | None = None
    components: Mapping[str, float | None] = field(default_factory=dict)
    latency: float = 0.0
    info: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Compact pickling: worker processes send one result per sample, so this is on the hot path.
        return _rebuild_result, (
            self.value,
            self.status.value,
            self.reason,
            dict(self.components) or None,
            self.latency,
            dict(self.info) or None,
        )

    @classmethod
    def error(cls, reason: str, *, latency: float = 0.0, status: Status = Status.ERROR) -> RewardResult:
        return cls(value=None, status=status, reason=reason, latency=latency)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as written by the CLI (``reward``, ``status``, ``reason``, ...)."""
        out: dict[str, Any] = {
            "reward": self.value,
            "status": self.status.value,
            "reason": self.reason,
            "components": dict(self.components),
            "latency_ms": round(self.latency * 1000.0, 3),
        }
        if self.info:
            out["info"] = dict(self.info)
        return out


_STATUS_BY_VALUE = {s.value: s for s in Status}


def _rebuild_result(
    value: float | None,
    status: str,
    reason: str | None,
    components: dict[str, float | None] | None,
    latency: float,
    info: dict[str, Any] | None,
) -> RewardResult:
    return RewardResult(value, _STATUS_BY_VALUE[status], reason, components or {}, latency, info or {})


def validate_value(value: Any) -> tuple[float | None, str | None]:
    """Turn whatever a reward returned into ``(float, None)`` or ``(None, reason)``.

    bool and int become float; NaN, infinities, None, strings and every other type are rejected with a reason,
    because silently coercing them is how a broken reward turns into a stream of zeros.
    """
    if isinstance(value, bool):
        return float(value), None
    if isinstance(value, int):
        return float(value), None
    if isinstance(value, float):
        if math.isfinite(value):
            return value, None
        return None, f"reward returned a non-finite value ({value!r})"
    if value is None:
        return None, "reward returned None"
    # numpy and torch scalars (0-d arrays/tensors): unwrap to the Python number and validate that
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        return validate_value(value.item())
    return None, f"reward returned {type(value).__name__} ({_short(repr(value))}), expected a number"


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
