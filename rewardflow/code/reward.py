"""The code reward: run the completion's last code block against the row's tests in the sandbox.

Outcomes, and what each is reported as:

=====================================================  ======================================================
outcome                                                result
=====================================================  ======================================================
all tests pass                                         ``1.0``
a test fails (wrong answer, runtime error)             ``0.0`` (``scoring="fraction"``: passed / total), with
                                                       the first failure as the reason
a test exceeds its time limit                          ``0.0``, reason ``time limit``
C++ that does not compile                              ``0.0``, reason ``compile error: ...``, component
                                                       ``compiled=0``
no fenced code block / a language it cannot run        ``0.0`` with the reason
the harness's completion marker is missing             ``0.0`` (the program interfered with the harness)
the sandbox itself failed (bwrap could not start)      raises SandboxError: ``status=error``
the row has no tests                                   raises InputError: ``status=error``
the engine's own timeout                               ``status=timeout`` (the engine's, as for any reward)
=====================================================  ======================================================

Components: ``passed``, ``total`` (and ``compiled`` for C++). ``info`` carries the isolation level and the
first failure.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from rewardflow.code.compare import WHITESPACE_MODES, same_stdout, same_value
from rewardflow.code.execute import Execution, execute, harness_source, returned_value
from rewardflow.code.extract import extract_code, language_of
from rewardflow.code.suites import Suite, suite_from_row
from rewardflow.errors import ConfigError
from rewardflow.reward import RewardOptions
from rewardflow.sandbox import Isolation, Limits, Sandbox
from rewardflow.sandbox.session import Session
from rewardflow.types import Score

__all__ = ["CodeReward"]

_SCORING = ("all", "fraction")


class CodeReward:
    """Score a completion by running its code against the row's tests (see the module docstring).

    Args:
        scoring: ``"all"`` (1.0 only if every test passes) or ``"fraction"`` (passed / total).
        language: ``"auto"`` (from the code fence's tag, Python when untagged), ``"python"`` or ``"cpp"``.
        whitespace: stdout comparison, ``"tokens"``, ``"lines"`` or ``"exact"``.
        float_tol: absolute-or-relative tolerance for numbers in stdout and return values (``None``: exact).
        case_timeout: seconds per test case (the ``time limit``).
        compile_timeout: seconds for ``g++``.
        memory_mb: address-space limit per process, in MiB.
        require: the minimum isolation level; below it every call raises IsolationError (``status=error``).
        level: force an isolation level instead of probing (tests, hosts without bubblewrap).
        max_cases: score only the first N tests of a row (``None``: all).
        cflags: ``g++`` flags.
        reuse_sandbox: at the bwrap level, keep one sandbox per worker process and reset it between rows (every
            other process killed, ``/work`` and ``/tmp`` emptied; see :mod:`rewardflow.sandbox.session`) instead
            of a new sandbox per row: the same limits, several times the throughput.
        engine_timeout: the engine's timeout for one call of this reward (it wins over the engine's default);
            past it the sample is ``status=timeout`` and the sandbox dies with its worker.

    With ``scoring="all"`` a run stops at the first failing test (the rest cannot change a 0), so ``passed``
    counts the tests that passed before it.
    """

    def __init__(
        self,
        *,
        scoring: str = "all",
        language: str = "auto",
        whitespace: str = "tokens",
        float_tol: float | None = None,
        case_timeout: float = 5.0,
        compile_timeout: float = 30.0,
        memory_mb: int = 1024,
        require: str = "rlimits",
        level: str | None = None,
        max_cases: int | None = None,
        cflags: tuple[str, ...] | list[str] = ("-O2", "-std=c++17"),
        engine_timeout: float = 120.0,
        reuse_sandbox: bool = True,
        name: str = "code",
    ) -> None:
        if scoring not in _SCORING:
            raise ConfigError(f"code reward: scoring must be one of {_SCORING}, got {scoring!r}")
        if language not in ("auto", "python", "cpp"):
            raise ConfigError(f"code reward: language must be auto, python or cpp, got {language!r}")
        if whitespace not in WHITESPACE_MODES:
            raise ConfigError(f"code reward: whitespace must be one of {WHITESPACE_MODES}, got {whitespace!r}")
        if case_timeout <= 0 or compile_timeout <= 0:
            raise ConfigError("code reward: timeouts must be positive")
        try:
            Isolation.parse(require)
            if level is not None:
                Isolation.parse(level)
        except ValueError as exc:
            raise ConfigError(f"code reward: {exc}") from exc
        self.scoring = scoring
        self.language = language
        self.whitespace = whitespace
        self.float_tol = float_tol
        self.case_timeout = float(case_timeout)
        self.compile_timeout = float(compile_timeout)
        self.memory_mb = int(memory_mb)
        self.require = require
        self.level = level
        self.max_cases = max_cases
        self.cflags = tuple(cflags)
        self.__name__ = name
        # The engine's per-call timeout for this reward must outlast the sandbox's own limits, so a slow program
        # is a `time limit` 0.0 rather than an engine timeout; 120 s covers 20 cases at the default 5 s.
        self.__rewardflow__ = RewardOptions(name=name, timeout=float(engine_timeout))
        self.reuse_sandbox = reuse_sandbox
        self._sandbox: Sandbox | None = None
        self._session: Session | None = None
        self._lock = threading.RLock()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_sandbox"] = None
        state["_session"] = None
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    def session(self) -> Session | None:
        """The reusable sandbox of this process (bwrap level and ``reuse_sandbox`` only), started lazily."""
        if not self.reuse_sandbox or self.sandbox.level is not Isolation.BWRAP:
            return None
        with self._lock:
            if self._session is None:
                argv = [self.sandbox.python, "-I", "-S", "-c", harness_source(), "zygote"]
                self._session = Session(self.sandbox, argv, limits=self.sandbox.limits.with_(cpu_s=1 << 20))
            return self._session

    def close(self) -> None:
        """Stop this process's reusable sandbox (it also dies with the process)."""
        with self._lock:
            session, self._session = self._session, None
        if session is not None:
            session.close()

    @property
    def sandbox(self) -> Sandbox:
        with self._lock:
            if self._sandbox is None:
                limits = Limits(memory_bytes=self.memory_mb * 1024 * 1024, wall_s=110.0, cpu_s=100)
                self._sandbox = Sandbox(limits, level=self.level, require=self.require)
            return self._sandbox

    def __call__(self, completion: str, **row: Any) -> Score:
        suite = suite_from_row(row)  # InputError for a row without tests: status=error, before any code runs
        if self.max_cases is not None:
            suite = _first(suite, self.max_cases)
        block = extract_code(completion)
        if block is None:
            return Score(0.0, reason="no fenced code block", components={"passed": 0.0, "total": float(len(suite))})
        language = self.language if self.language != "auto" else language_of(block.tag)
        if language is None:
            return Score(0.0, reason=f"cannot run code tagged {block.tag!r}", components=_counts(0, len(suite)))
        if language == "cpp" and suite.kind != "stdio":
            return Score(0.0, reason="C++ is scored on stdin/stdout tests only", components=_counts(0, len(suite)))
        program = block.code
        if suite.kind == "assert" and row.get("prompt") and row.get("entry_point") and _needs_prompt(program, row):
            program = str(row["prompt"]) + program  # HumanEval completions that continue the prompt's body
        run = execute(
            self.sandbox,
            program,
            suite,
            language=language,
            case_s=self.case_timeout,
            compile_s=self.compile_timeout,
            stop_at_first_failure=self.scoring == "all",
            session=self.session(),
        )
        return self._score(run, suite, language)

    def _score(self, run: Execution, suite: Suite, language: str) -> Score:
        total = len(suite)
        info: dict[str, Any] = {"isolation": str(run.run.isolation)}
        if run.compile_error is not None:
            reason = "compile error: " + run.compile_error.strip()[-500:]
            return Score(0.0, reason=reason, components={**_counts(0, total), "compiled": 0.0}, info=info)
        passed = 0
        first: str | None = None
        first_is_limit = False
        for index in range(total):
            answer = run.answers.get(index)
            ok, why, is_limit = self._judge(answer, suite, index)
            if ok:
                passed += 1
            elif first is None:
                first, first_is_limit = f"test {index + 1}: {why}", is_limit
        if not run.complete:
            # Whatever answers came back, a run without the harness's marker scores nothing.
            passed = 0
            limit = run.run.limit
            if limit:
                first, first_is_limit = f"{limit} (the whole run)", limit == "time limit"
            else:
                first, first_is_limit = f"the test harness did not finish ({run.run.describe()})", False
        components = _counts(passed, total)
        if language == "cpp":
            components["compiled"] = 1.0
        if first is not None:
            info["first_failure"] = first
        value = passed / total if self.scoring == "fraction" else float(passed == total)
        reason = None
        if passed < total:
            reason = "time limit" if first_is_limit else first
        return Score(value, reason=reason, components=components, info=info)

    def _judge(self, answer: Mapping[str, Any] | None, suite: Suite, index: int) -> tuple[bool, str, bool]:
        if answer is None:
            return False, "no answer", False
        if answer.get("limit"):
            return (
                False,
                str(answer["limit"] if isinstance(answer["limit"], str) else "time limit"),
                (answer["limit"] is True or answer["limit"] == "time limit"),
            )
        if suite.kind == "assert":
            return bool(answer.get("ok")), str(answer.get("error", "failed")), False
        if "error" in answer:
            return False, "runtime error: " + str(answer["error"]), False
        if suite.kind == "call":
            try:
                got = returned_value(dict(answer))
            except (KeyError, ValueError, TypeError):
                return False, "unreadable return value", False
            want = suite.outputs[index]
            if same_value(got, want, float_tol=self.float_tol):
                return True, "", False
            if isinstance(want, list) and len(want) == 1 and same_value(got, want[0], float_tol=self.float_tol):
                return True, "", False  # APPS wraps call outputs in a one-element list
            return False, f"wrong answer: expected {_short(want)}, got {_short(got)}", False
        if answer.get("signal"):
            return False, f"runtime error: killed by signal {answer['signal']}", False
        if answer.get("exit", 0) != 0:
            tail = str(answer.get("stderr", "")).strip().splitlines()
            return False, f"runtime error: exit code {answer['exit']}" + (f" ({tail[-1][:200]})" if tail else ""), False
        if same_stdout(
            str(answer.get("stdout", "")), suite.outputs[index], whitespace=self.whitespace, float_tol=self.float_tol
        ):
            return True, "", False
        return (
            False,
            f"wrong answer: expected {_short(suite.outputs[index])}, got {_short(answer.get('stdout'))}",
            False,
        )


def _counts(passed: int, total: int) -> dict[str, float | None]:
    return {"passed": float(passed), "total": float(total)}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _first(suite: Suite, n: int) -> Suite:
    from dataclasses import replace

    if suite.kind == "assert":
        return replace(suite, tests=suite.tests[:n])
    return replace(suite, inputs=suite.inputs[:n], outputs=suite.outputs[:n])


def _needs_prompt(program: str, row: Mapping[str, Any]) -> bool:
    """A HumanEval completion that is only the function body (it does not define the entry point itself)."""
    entry = str(row["entry_point"])
    return f"def {entry}(" not in program and f"def {entry} (" not in program


def code_fraction(**params: Any) -> CodeReward:
    """The ``code_fraction`` built-in: :class:`CodeReward` with ``scoring="fraction"``."""
    params.setdefault("name", "code_fraction")
    return CodeReward(scoring="fraction", **params)
