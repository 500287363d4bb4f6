"""The one error tree of rewardflow.

Every exception the library raises on purpose derives from :class:`RewardflowError`::

    RewardflowError
    ├── ConfigError                 bad spec file, bad option, bad reward definition
    │   ├── UnknownRewardError      a name/path that resolves to nothing (lists close matches)
    │   └── MissingDependencyError  an optional extra is not installed ("pip install rewardflow[judge]")
    ├── InputError                  a malformed input row (the engine/CLI turn it into an error row)
    ├── EngineClosedError           the engine or pool was used after close()
    ├── RewardFailedError           a sample could not be scored, raised by adapters whose framework has no
    │                               way to receive a failure (carries the RewardResult; integrations/)
    ├── JudgeError                  judge endpoint failures after retries (judge/); ``info`` keeps usage
    │   ├── JudgeConnectionError    could not connect / connection dropped, after the allowed retries
    │   ├── JudgeTimeoutError       each attempt ran past the per-request timeout (also a TimeoutError)
    │   ├── JudgeStatusError        an HTTP error status (4xx, or 429/5xx after retries); ``status_code``
    │   ├── JudgeResponseError      a 200 whose body is not an OpenAI chat completion (garbage, no choices)
    │   └── JudgeParseError         the judge's reply text holds no usable verdict; ``raw`` keeps it
    ├── ModelError                  reward-model loading/scoring failures (models/)
    ├── SandboxError                the sandbox could not run a program (bwrap failed to start; sandbox/)
    │   └── IsolationError          the host allows less isolation than the spec requires
    └── UndecidedError              a rule reward cannot decide (numbers too large to compare exactly; rules/)

Errors raised *by reward code* are never propagated out of the engine: they become a
:class:`~rewardflow.types.RewardResult` with ``status="error"`` and the exception text as the reason. Foreign
exceptions (openai, httpx, torch, sympy) are converted at one boundary with ``raise X from exc``. The one
exception is :class:`RewardFailedError`: framework adapters (AReaL, verl, OpenRLHF) whose calling convention can
only return a number raise it instead of inventing a score for a failed sample.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rewardflow.types import RewardResult

__all__ = [
    "ConfigError",
    "EngineClosedError",
    "InputError",
    "IsolationError",
    "JudgeConnectionError",
    "JudgeError",
    "JudgeParseError",
    "JudgeResponseError",
    "JudgeStatusError",
    "JudgeTimeoutError",
    "MissingDependencyError",
    "ModelError",
    "RewardFailedError",
    "RewardflowError",
    "SandboxError",
    "UndecidedError",
    "UnknownRewardError",
]


class RewardflowError(Exception):
    """Base class of every error rewardflow raises on purpose."""


class ConfigError(RewardflowError, ValueError):
    """A spec, option or reward definition is invalid."""


class UnknownRewardError(ConfigError, LookupError):
    """A reward name or import path resolved to nothing."""

    def __init__(self, name: str, suggestions: list[str] | None = None, detail: str | None = None) -> None:
        self.name = name
        self.suggestions = suggestions or []
        msg = f"unknown reward {name!r}"
        if detail:
            msg += f" ({detail})"
        if self.suggestions:
            msg += "; did you mean " + ", ".join(repr(s) for s in self.suggestions) + "?"
        else:
            msg += "; run `rewardflow list` for the built-in names, or give an import path `package.module:function`"
        super().__init__(msg)


class MissingDependencyError(ConfigError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""

    def __init__(self, package: str, extra: str) -> None:
        self.package = package
        self.extra = extra
        super().__init__(f"{package} is not installed: pip install 'rewardflow[{extra}]'")


class InputError(RewardflowError, ValueError):
    """An input row is malformed (not an object, missing the completion, wrong types)."""


class EngineClosedError(RewardflowError, RuntimeError):
    """The engine or its executor was used after being closed."""


class RewardFailedError(RewardflowError):
    """A sample could not be scored (error or timeout) where the caller's convention expects a number.

    Raised by the framework adapters in :mod:`rewardflow.integrations` instead of returning 0: a failure is never
    a score. ``result`` is the full :class:`~rewardflow.types.RewardResult` (status, reason, components, latency).
    """

    def __init__(self, result: RewardResult, context: str | None = None) -> None:
        self.result = result
        self.context = context
        status = getattr(result.status, "value", result.status)
        msg = f"reward failed ({status}): {result.reason or 'no reason given'}"
        if context:
            msg = f"{context}: {msg}"
        super().__init__(msg)

    @property
    def status(self) -> str:
        """``"error"`` or ``"timeout"``."""
        return str(getattr(self.result.status, "value", self.result.status))

    def __reduce__(self) -> tuple[type[RewardFailedError], tuple[RewardResult, str | None]]:
        # Frameworks ship exceptions between processes (Ray, AReaL's workers): keep the result when pickled.
        return type(self), (self.result, self.context)


class JudgeError(RewardflowError):
    """A judge request failed for good (after the allowed retries) or its reply could not be parsed.

    ``info`` carries the usage of the failed call (attempts, tokens, latency); the engine copies it into the
    error result, so the cost of failures is accounted for too.
    """

    def __init__(self, message: str, *, info: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.info: dict[str, Any] = info or {}


class JudgeConnectionError(JudgeError, ConnectionError):
    """The judge endpoint could not be reached, or dropped the connection, on every allowed attempt."""


class JudgeTimeoutError(JudgeError, TimeoutError):
    """Every allowed attempt ran past the per-request timeout."""


class JudgeStatusError(JudgeError):
    """The judge endpoint answered an HTTP error status (not retried for 4xx; after retries for 429/5xx)."""

    def __init__(self, message: str, *, status_code: int = 0, info: dict[str, Any] | None = None) -> None:
        super().__init__(message, info=info)
        self.status_code = status_code


class JudgeResponseError(JudgeError):
    """The endpoint answered 200 with a body that is not a chat completion (not JSON, no choices)."""


class JudgeParseError(JudgeError, ValueError):
    """The judge's reply holds no usable score or verdict; ``raw`` is the reply text, also quoted in the message."""

    def __init__(self, message: str, *, raw: str = "", info: dict[str, Any] | None = None) -> None:
        super().__init__(message, info=info)
        self.raw = raw


class ModelError(RewardflowError):
    """A reward model could not be loaded or run (unsafe checkpoint, missing files, bad config)."""


class SandboxError(RewardflowError):
    """The sandbox itself failed (could not start, lost the program's status): an infrastructure failure.

    Code rewards let it propagate, so the engine reports ``status="error"``; a wrong or crashing program is a
    ``0.0`` instead.
    """


class IsolationError(SandboxError, ConfigError):
    """The host allows less isolation than required (``require="bwrap"`` without bubblewrap): refused, not run."""


class UndecidedError(RewardflowError):
    """A rule reward cannot decide a sample honestly (e.g. two answers too large to compare exactly).

    Raised instead of guessing: the engine reports the sample as ``status="error"`` with this message.
    """
