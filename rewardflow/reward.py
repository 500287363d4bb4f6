"""The reward contract: any Python callable, bound to a sample once, validated on return.

What a reward may look like (all of these work unchanged):

* AReaL: ``fn(prompt, completions, prompt_ids, completion_ids, **row) -> float``, sync or ``async def``;
* keyword style: ``fn(completion, answer) -> float`` (parameters are filled from sample fields and row columns
  by name);
* verl style: ``compute_score(data_source, solution_str, ground_truth, extra_info=None)``;
* batch/group style (TRL convention): ``fn(prompts, completions, **columns) -> list[float]`` where every column
  arrives as a list, for rewards declared ``kind="batch"`` or ``kind="group"``.

How a reward runs (its *kind*) is decided once, when it is wrapped in a :class:`Reward`, never guessed per call:
``process`` (default for sync callables: isolated worker processes with killable timeouts), ``inline`` (in the
caller, for trivially cheap rewards), ``async`` (``async def``: awaited on the event loop), ``batch`` (the whole
batch in one call, e.g. a reward model) and ``group`` (one call per group of completions of the same prompt).

Binding is computed once per reward (:class:`CallPlan`) so the per-sample cost is a dictionary build and a call.
A dataset column named like a sample field (``prompt``) never shadows that field and never raises.

The binding rule, by name first:

* a parameter named like a sample field (``prompt``, ``completion``/``completions``/``response``/``solution_str``,
  ``prompt_ids``, ``completion_ids``, ``group``, ``sample``) receives that field;
* any other name is a dataset column of that name (a parameter with a default may be absent);
* AReaL's positional convention (the first four parameters are prompt, completion, prompt ids, completion ids
  whatever they are called) applies only when the callable opts in with ``@reward(positional=True)``. Names
  that merely sit in those positions are never filled by position: ``def r(pred, answer)`` does not receive the
  prompt as ``pred``.

Columns are known only when data arrives, so a parameter that names no field is checked against the columns
when they are declared (``Engine(..., columns=[...])``: a :class:`~rewardflow.errors.ConfigError` at
construction naming the parameter and the available columns; the CLI declares the columns of its first batch)
and otherwise per row (an error result naming the parameter and the row's columns). Timeouts must be finite.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from rewardflow.errors import ConfigError
from rewardflow.types import RewardResult, Sample, Score, Status, validate_value

__all__ = ["CallPlan", "Kind", "Reward", "invoke", "invoke_async", "invoke_many", "reward"]

_MISSING = object()


class Kind(str, Enum):
    """How a reward is executed; see the module docstring."""

    PROCESS = "process"
    INLINE = "inline"
    ASYNC = "async"
    BATCH = "batch"
    GROUP = "group"

    @property
    def per_sample(self) -> bool:
        return self in (Kind.PROCESS, Kind.INLINE, Kind.ASYNC)


# Parameter names that bind to sample fields (per-sample rewards). The AReaL names come first.
_SAMPLE_FIELDS: dict[str, str] = {
    "prompt": "prompt",
    "completions": "completion",  # AReaL passes one completion under this plural name
    "completion": "completion",
    "response": "completion",
    "solution_str": "completion",  # verl
    "prompt_ids": "prompt_ids",
    "completion_ids": "completion_ids",
    "group": "group",
    "sample": "sample",
}
# AReaL calls rewards positionally in this order.
_AREAL_POSITIONAL = ("prompt", "completion", "prompt_ids", "completion_ids")
# Parameter names that bind to lists over the batch (batch/group rewards, TRL convention).
_BATCH_FIELDS: dict[str, str] = {
    "prompts": "prompt",
    "completions": "completion",
    "responses": "completion",
    "prompt_ids": "prompt_ids",
    "completion_ids": "completion_ids",
    "samples": "sample",
    "groups": "group",
}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_timeout(timeout: Any, what: str) -> None:
    """Raise :class:`ConfigError` unless ``timeout`` is ``None`` or a finite number of seconds > 0."""
    if timeout is None:
        return
    if not _is_number(timeout) or not math.isfinite(timeout) or timeout <= 0:
        raise ConfigError(f"{what}: timeout must be a finite number of seconds > 0, got {timeout!r}")


@dataclass(frozen=True, slots=True)
class _Param:
    name: str
    source: str  # "field", "column", "positional"
    key: str  # field name, column name, or AReaL slot
    has_default: bool


@dataclass(frozen=True, slots=True)
class CallPlan:
    """How to turn a :class:`Sample` into call arguments for one callable, computed once."""

    params: tuple[_Param, ...]
    var_keyword: bool
    batch: bool

    @classmethod
    def build(cls, fn: Callable[..., Any], *, batch: bool = False, positional: bool = False) -> CallPlan:
        """The plan for ``fn``; ``positional=True`` opts in to AReaL's positional slots (module docstring)."""
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError) as exc:  # builtins without signatures
            raise ConfigError(f"cannot inspect the signature of {fn!r}: {exc}") from exc
        fields = _BATCH_FIELDS if batch else _SAMPLE_FIELDS
        params: list[_Param] = []
        var_keyword = False
        position = 0
        for p in sig.parameters.values():
            if p.kind is inspect.Parameter.VAR_KEYWORD:
                var_keyword = True
                continue
            if p.kind is inspect.Parameter.VAR_POSITIONAL:
                continue
            has_default = p.default is not inspect.Parameter.empty
            if p.name in fields:
                params.append(_Param(p.name, "field", fields[p.name], has_default))
            elif (
                positional
                and not batch
                and position < len(_AREAL_POSITIONAL)
                and not has_default
                and p.kind
                in (
                    inspect.Parameter.POSITIONAL_ONLY,
                    inspect.Parameter.POSITIONAL_OR_KEYWORD,
                )
            ):
                # Unknown name in one of AReaL's positional slots: a column of that name wins, else the slot.
                params.append(_Param(p.name, "positional", _AREAL_POSITIONAL[position], has_default))
            else:
                params.append(_Param(p.name, "column", p.name, has_default))
            position += 1
        return cls(tuple(params), var_keyword, batch)

    @property
    def required_columns(self) -> tuple[str, ...]:
        """Dataset columns every row must have (parameters that name no field and have no default)."""
        return tuple(p.key for p in self.params if p.source == "column" and not p.has_default)

    def missing_columns(self, columns: Any) -> list[str]:
        """The required columns absent from ``columns`` (an iterable of column names)."""
        have = set(columns)
        return [c for c in self.required_columns if c not in have]

    @staticmethod
    def _missing(name: str, columns: Any) -> LookupError:
        have = ", ".join(sorted(columns)) or "none"
        return LookupError(f"missing column {name!r} required by parameter {name!r}; the row has columns: {have}")

    def kwargs(self, sample: Sample) -> dict[str, Any]:
        """Keyword arguments for one sample. Raises ``LookupError`` naming a missing required column."""
        out: dict[str, Any] = {}
        row = sample.row
        for p in self.params:
            if p.source == "field":
                out[p.name] = sample if p.key == "sample" else getattr(sample, p.key)
                continue
            value = row.get(p.name if p.source == "positional" else p.key, _MISSING)
            if value is _MISSING:
                if p.source == "positional":
                    out[p.name] = getattr(sample, p.key)
                    continue
                if p.has_default:
                    continue
                raise self._missing(p.key, row)
            out[p.name] = value
        if self.var_keyword:
            for key, value in row.items():
                if key not in out:
                    out[key] = value
        return out

    def batch_kwargs(self, samples: Sequence[Sample]) -> dict[str, Any]:
        """Keyword arguments for a batch: every field and column as a list (TRL convention)."""
        out: dict[str, Any] = {}
        columns: set[str] = set()
        for s in samples:
            columns.update(s.row.keys())
        for p in self.params:
            if p.source == "field":
                out[p.name] = list(samples) if p.key == "sample" else [getattr(s, p.key) for s in samples]
            elif p.key in columns:
                out[p.name] = [s.row.get(p.key) for s in samples]
            elif not p.has_default:
                raise self._missing(p.key, columns)
        if self.var_keyword:
            for key in sorted(columns):
                if key not in out:
                    out[key] = [s.row.get(key) for s in samples]
        return out


@dataclass(frozen=True)
class RewardOptions:
    """Options attached to a callable by :func:`reward`."""

    name: str | None = None
    kind: Kind | None = None
    timeout: float | None = None
    concurrency: int | None = None
    positional: bool = False


def reward(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    kind: str | Kind | None = None,
    timeout: float | None = None,
    concurrency: int | None = None,
    positional: bool = False,
) -> Any:
    """Mark a callable as a reward with default options; the function itself is returned unchanged.

    Usable bare (``@reward``) or with options (``@reward(kind="inline", timeout=2)``). The function stays a
    plain module-level function, so it can still be called directly and pickled by reference into workers.
    ``positional=True`` fills the first four parameters with AReaL's prompt, completion, prompt ids and
    completion ids whatever their names (without it, parameters bind by name only).
    """
    check_timeout(timeout, "@reward")
    opts = RewardOptions(
        name=name,
        kind=Kind(kind) if kind is not None else None,
        timeout=timeout,
        concurrency=concurrency,
        positional=positional,
    )

    def mark(f: Callable[..., Any]) -> Callable[..., Any]:
        f.__rewardflow__ = opts  # type: ignore[attr-defined]
        return f

    return mark(fn) if fn is not None else mark


def _is_async(fn: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - instances with async __call__
    return call is not None and inspect.iscoroutinefunction(call)


@dataclass(frozen=True)
class Reward:
    """A callable plus everything decided once about how to run it."""

    fn: Callable[..., Any]
    name: str
    kind: Kind
    timeout: float | None = None
    concurrency: int | None = None
    positional: bool = False
    plan: CallPlan = field(repr=False, compare=False, default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        check_timeout(self.timeout, f"reward {self.name!r}")
        if self.concurrency is not None and self.concurrency < 1:
            raise ConfigError(f"reward {self.name!r}: concurrency must be >= 1, got {self.concurrency}")
        is_async = _is_async(self.fn)
        if self.kind in (Kind.PROCESS, Kind.INLINE) and is_async:
            raise ConfigError(f"reward {self.name!r} is `async def`; it runs as kind 'async', not {self.kind.value!r}")
        if self.kind is Kind.ASYNC and not is_async:
            raise ConfigError(f"reward {self.name!r} has kind 'async' but is not an `async def` callable")
        if self.plan is None:
            plan = CallPlan.build(self.fn, batch=not self.kind.per_sample, positional=self.positional)
            object.__setattr__(self, "plan", plan)

    @property
    def is_async(self) -> bool:
        return _is_async(self.fn)

    @classmethod
    def wrap(
        cls,
        fn: Callable[..., Any] | Reward,
        *,
        name: str | None = None,
        kind: str | Kind | None = None,
        timeout: float | None = None,
        concurrency: int | None = None,
        default_kind: Kind = Kind.PROCESS,
    ) -> Reward:
        """Wrap a callable, honouring options set by :func:`reward` and explicit overrides (which win)."""
        if isinstance(fn, Reward):
            base = fn
            fn = base.fn
            opts = RewardOptions(base.name, base.kind, base.timeout, base.concurrency, base.positional)
        else:
            opts = getattr(fn, "__rewardflow__", None) or RewardOptions()
        if not callable(fn):
            raise ConfigError(f"a reward must be callable, got {type(fn).__name__}")
        resolved_kind = Kind(kind) if kind is not None else opts.kind
        if resolved_kind is None:
            resolved_kind = Kind.ASYNC if _is_async(fn) else default_kind
        elif resolved_kind in (Kind.PROCESS, Kind.INLINE) and _is_async(fn):
            resolved_kind = Kind.ASYNC  # an async callable is always awaited natively
        resolved_name = name or opts.name or getattr(fn, "__name__", None) or type(fn).__name__
        return cls(
            fn=fn,
            name=resolved_name,
            kind=resolved_kind,
            timeout=timeout if timeout is not None else opts.timeout,
            concurrency=concurrency if concurrency is not None else opts.concurrency,
            positional=opts.positional,
        )


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text if len(text) <= 500 else text[:497] + "..."


def _failed(exc: BaseException, latency: float) -> RewardResult:
    """An exception from reward code as a result.

    A ``TimeoutError`` (a judge whose retries all timed out, a remote call's own deadline) is reported as
    ``status=timeout``; anything else as ``error``. An ``info`` attribute on the exception (judge usage) is kept.
    """
    info = getattr(exc, "info", None)
    status = Status.TIMEOUT if isinstance(exc, TimeoutError) else Status.ERROR
    return RewardResult(None, status, _describe(exc), latency=latency, info=dict(info) if info else {})


def finish(raw: Any, latency: float) -> RewardResult:
    """Validate a raw return value (number or :class:`Score`) into a result."""
    if isinstance(raw, Score):
        value, problem = validate_value(raw.value)
        if problem is not None:
            return RewardResult(None, Status.ERROR, problem, latency=latency)
        components: dict[str, float | None] = {}
        for key, sub in (raw.components or {}).items():
            sub_value, sub_problem = validate_value(sub)
            if sub_problem is not None:
                return RewardResult(None, Status.ERROR, f"component {key!r}: {sub_problem}", latency=latency)
            components[str(key)] = sub_value
        return RewardResult(value, Status.OK, raw.reason, components, latency, dict(raw.info or {}))
    value, problem = validate_value(raw)
    if problem is not None:
        return RewardResult(None, Status.ERROR, problem, latency=latency)
    return RewardResult(value, Status.OK, None, {}, latency)


def invoke(rw: Reward, sample: Sample) -> RewardResult:
    """Call a sync per-sample reward on one sample; every exception becomes an error result."""
    start = time.perf_counter()
    try:
        raw = rw.fn(**rw.plan.kwargs(sample))
    except Exception as exc:  # the engine boundary: reward failures become results, never raise
        return _failed(exc, time.perf_counter() - start)
    return finish(raw, time.perf_counter() - start)


async def invoke_async(rw: Reward, sample: Sample) -> RewardResult:
    """Await an async per-sample reward on one sample (timeouts are applied by the caller)."""
    start = time.perf_counter()
    try:
        raw = await rw.fn(**rw.plan.kwargs(sample))
    except Exception as exc:
        return _failed(exc, time.perf_counter() - start)
    return finish(raw, time.perf_counter() - start)


def invoke_many(rw: Reward, samples: Sequence[Sample], raw: Any, latency: float) -> list[RewardResult]:
    """Validate the list a batch/group reward returned: one entry per sample, each validated on its own."""
    if not isinstance(raw, Sequence) or isinstance(raw, (str, bytes)):
        if hasattr(raw, "tolist"):
            raw = raw.tolist()
        else:
            reason = f"batch reward returned {type(raw).__name__}, expected a list of {len(samples)} values"
            return [RewardResult(None, Status.ERROR, reason, latency=latency) for _ in samples]
    if len(raw) != len(samples):
        reason = f"batch reward returned {len(raw)} values for {len(samples)} samples"
        return [RewardResult(None, Status.ERROR, reason, latency=latency) for _ in samples]
    return [finish(item, latency) for item in raw]


def error_results(count: int, exc: BaseException, latency: float) -> list[RewardResult]:
    """The same failure for every sample of a batch/group call that raised.

    The call's ``info`` (judge usage) belongs to the call, not to each sample: an exception that carries
    ``sample_info`` (a list of one ``info`` per sample, as :class:`~rewardflow.judge.rewards.JudgeGroup` sets it,
    usage on the first only) gives each sample its own, so sums over results count the call once.
    """
    failed = _failed(exc, latency)
    per_sample = getattr(exc, "sample_info", None)
    if isinstance(per_sample, Sequence) and len(per_sample) == count:
        return [dataclasses.replace(failed, info=dict(info)) for info in per_sample]
    return [failed] * count
