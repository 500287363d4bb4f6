"""The SandboxFusion dialect: ``POST /run_code`` with SandboxFusion's request and reply, run in rewardflow's sandbox.

verl's ``reward.sandbox_fusion.url`` and ROLL's ``code_url`` point at a SandboxFusion server; pointed at
``http://HOST:PORT/run_code`` of ``rewardflow serve`` instead, they get the same fields back. The field names and
their defaults follow SandboxFusion's ``sandbox/server/sandbox_api.py`` and ``sandbox/runners/types.py``
(bytedance/SandboxFusion at 469de08); how a client reads them follows verl's
``verl/utils/reward_score/sandbox_fusion/utils.py`` (verl 0.9.1).

Statuses, as SandboxFusion's ``parse_run_status`` defines them and verl reads them:

* ``Success``: every step finished with return code 0 (a wrong answer is the client's call, from ``stdout``);
* ``Failed``: the program's fault: a compile error, a runtime error (``Finished`` with a nonzero
  ``return_code``, ``-N`` when killed by signal N), a time limit (``TimeLimitExceeded``), or rewardflow's output
  or memory limits (``Finished``, nonzero return code, the limit named in ``message``);
* ``SandboxError``: only the infrastructure: the sandbox could not run (or not at the required isolation level),
  a language SandboxFusion knows but rewardflow does not run, undecodable ``files``.

A language outside SandboxFusion's own list is refused with 422, as SandboxFusion's pydantic model does.
Supported: ``python`` (the interpreter the sandbox uses, standard library only) and ``cpp`` (g++ -std=c++17 -O2,
compiled in one sandbox, run in a second, so compile and run each have their own limits and times).

Every program runs in :class:`~rewardflow.sandbox.Sandbox`, in a thread pool bounded by the server's worker
count, off the event loop. ``fetch_files`` come back in the reply's ``files`` (base64) as SandboxFusion returns
them: those that exist as regular files after the run, relative to the program's directory, each cut to the
output limit, also after a run stopped by its time limit (what it wrote before). Not covered: SandboxFusion's
other routes (``/run_jupyter``, ``/submit``), and its extra Python packages (numpy and friends are not in the
sandbox).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import math
from concurrent.futures import ThreadPoolExecutor
from enum import Enum
from typing import Annotated, Literal

from pydantic import BaseModel, Field, Strict

from rewardflow.errors import RewardflowError
from rewardflow.sandbox import Isolation, Limits, RunResult, Sandbox

__all__ = ["CodeRunner", "CommandRunResult", "CommandRunStatus", "RunCodeRequest", "RunCodeResponse", "RunStatus"]

logger = logging.getLogger(__name__)
_MIB = 1024 * 1024

#: SandboxFusion's ``Language`` literal: anything else is a 422, as there.
Language = Literal[
    "python", "cpp", "nodejs", "go", "go_test", "java", "php", "csharp", "bash", "typescript", "sql", "rust",
    "cuda", "lua", "R", "perl", "D_ut", "ruby", "scala", "julia", "pytest", "junit", "kotlin_script", "jest",
    "verilog", "python_gpu", "lean", "swift", "racket",
]  # fmt: skip
SUPPORTED = ("python", "cpp")
#: Largest memory a request may ask for; SandboxFusion's ``-1`` (no limit) gets the sandbox default (1 GiB).
MAX_MEMORY_MB = 8192
COMPILE_MEMORY = 2048 * _MIB  # cc1plus needs more address space than the programs it compiles
CPP_FLAGS = ("-std=c++17", "-O2")


class RunCodeRequest(BaseModel):
    """SandboxFusion's ``RunCodeRequest`` (same names, types and defaults)."""

    # Strict numbers: JSON `true` is not a timeout or a memory size (lax pydantic would read it as 1).
    compile_timeout: Annotated[float, Strict()] = Field(
        10, gt=0, description="Compile timeout for compiled languages, seconds."
    )
    run_timeout: Annotated[float, Strict()] = Field(10, gt=0, description="Run timeout, seconds.")
    memory_limit_MB: Annotated[int, Strict()] = Field(
        -1, description="Address-space limit in MiB; -1: the sandbox default (1 GiB)."
    )
    code: str = Field(..., description="The program.")
    stdin: str | None = Field(None, description="Text sent to the program's standard input.")
    language: Language = Field(..., description="One of SandboxFusion's languages; rewardflow runs python and cpp.")
    files: dict[str, str | None] = Field({}, description="Relative path -> base64 content, put next to the program.")
    fetch_files: list[str] = Field(
        [], description="Relative paths read back after the run and returned in `files` (base64), if they exist."
    )


class RunStatus(str, Enum):
    Success = "Success"
    Failed = "Failed"
    SandboxError = "SandboxError"


class CommandRunStatus(str, Enum):
    Finished = "Finished"
    Error = "Error"
    TimeLimitExceeded = "TimeLimitExceeded"


class CommandRunResult(BaseModel):
    """One step (compile or run), as SandboxFusion reports it."""

    status: CommandRunStatus
    execution_time: float | None = None
    return_code: int | None = None
    stdout: str | None = None
    stderr: str | None = None


class RunCodeResponse(BaseModel):
    """SandboxFusion's ``RunCodeResponse``; ``executor_pod_name`` is always null here."""

    status: RunStatus
    message: str
    compile_result: CommandRunResult | None = None
    run_result: CommandRunResult | None = None
    executor_pod_name: str | None = None
    files: dict[str, str] = {}


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def command_result(result: RunResult, stdout: bool = True) -> CommandRunResult:
    """A sandbox run as SandboxFusion's step result: a time limit is ``TimeLimitExceeded``, else ``Finished``."""
    out = _text(result.stdout) if stdout else ""
    if result.limit == "time limit":
        return CommandRunResult(status=CommandRunStatus.TimeLimitExceeded, execution_time=result.wall_s,
                                stdout=out, stderr=_text(result.stderr))  # fmt: skip
    code = result.exit_code
    if result.signal:
        code = -result.signal  # as Python's subprocess (and so SandboxFusion) reports a killed process
    err = _text(result.stderr)
    if result.limit is not None:
        code = code or -9  # killed by the parent for a limit (output): never a return code 0
        err += f"\nrewardflow sandbox: {result.limit}"
    return CommandRunResult(status=CommandRunStatus.Finished, execution_time=result.wall_s, return_code=code,
                            stdout=out, stderr=err)  # fmt: skip


def _failed(step: CommandRunResult | None) -> bool:
    return step is not None and (step.status is not CommandRunStatus.Finished or step.return_code != 0)


def _message(compile_result: CommandRunResult | None, run_result: CommandRunResult | None) -> str:
    """Which step failed and how, in one line (SandboxFusion leaves ``message`` empty; clients ignore it)."""
    for name, step in (("compile", compile_result), ("run", run_result)):
        if step is None:
            continue
        if step.status is CommandRunStatus.TimeLimitExceeded:
            return f"{name}: time limit"
        if step.return_code != 0:
            lines = (step.stderr or "").strip().splitlines()
            # the compiler's first error names the problem; a traceback's last line does
            line = next((x for x in lines if "error" in x), "") if name == "compile" else (lines or [""])[-1]
            return f"{name}: return code {step.return_code}" + (f": {line.strip()[:200]}" if line else "")
    return ""


class CodeRunner:
    """Runs ``/run_code`` requests in the sandbox on a bounded thread pool; see the module docstring."""

    def __init__(self, workers: int, *, max_s: float, require: Isolation | str = Isolation.UNSHARE) -> None:
        self.workers = max(1, workers)
        self.max_s = max_s
        self.sandbox = Sandbox(require=require)
        self._pool: ThreadPoolExecutor | None = None

    async def run(self, request: RunCodeRequest) -> RunCodeResponse:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="rf-run-code")
        return await asyncio.get_running_loop().run_in_executor(self._pool, self.run_sync, request)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def run_sync(self, request: RunCodeRequest) -> RunCodeResponse:
        """One request, blocking: infrastructure failures become ``SandboxError``, never an exception."""
        if request.language not in SUPPORTED:
            message = f"language {request.language!r} is not supported by rewardflow (supported: python, cpp)"
            return RunCodeResponse(status=RunStatus.SandboxError, message=message)
        fetched: dict[str, bytes] = {}
        try:
            files = self._files(request)
            if request.language == "cpp":
                compile_result, run_result = self._cpp(request, files, fetched)
            else:
                compile_result, run_result = None, self._python(request, files, fetched)
        except (RewardflowError, OSError, ValueError) as exc:
            logger.warning("run_code: sandbox failure: %s", exc)
            return RunCodeResponse(status=RunStatus.SandboxError, message=f"sandbox error: {exc}")
        failed = _failed(compile_result) or _failed(run_result)
        return RunCodeResponse(
            status=RunStatus.Failed if failed else RunStatus.Success,
            message=_message(compile_result, run_result) if failed else "",
            compile_result=compile_result,
            run_result=run_result,
            files={name: base64.b64encode(content).decode() for name, content in fetched.items()},
        )

    # ---------------------------------------------------------------------------------------------------------

    def _files(self, request: RunCodeRequest) -> dict[str, bytes]:
        out = {}
        for name, content in request.files.items():
            if content is None:
                continue  # SandboxFusion skips these too
            try:
                out[name] = base64.b64decode(content, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ValueError(f"files[{name!r}] is not valid base64: {exc}") from None
        return out

    def _limits(self, timeout: float, memory_mb: int) -> Limits:
        wall = min(timeout, self.max_s)
        limits = self.sandbox.limits.with_(wall_s=wall, cpu_s=math.ceil(wall) + 1)
        if memory_mb > 0:
            limits = limits.with_(memory_bytes=min(memory_mb, MAX_MEMORY_MB) * _MIB)
        return limits

    def _python(self, request: RunCodeRequest, files: dict[str, bytes], fetched: dict[str, bytes]) -> CommandRunResult:
        files = {**files, "main.py": request.code.encode()}
        # -E -s: no PYTHON* variables, no user site; the script's directory stays on sys.path (for `files`).
        result = self.sandbox.run(
            [self.sandbox.python, "-E", "-s", "main.py"],
            files=files,
            stdin=request.stdin or "",
            limits=self._limits(request.run_timeout, request.memory_limit_MB),
            collect=request.fetch_files,
        )
        fetched.update(result.files)
        return command_result(result)

    def _cpp(
        self, request: RunCodeRequest, files: dict[str, bytes], fetched: dict[str, bytes]
    ) -> tuple[CommandRunResult, CommandRunResult | None]:
        # Compile in one sandbox and read the binary back on stdout; the compiler's messages go to stderr.
        limits = self._limits(request.compile_timeout, -1)
        limits = limits.with_(memory_bytes=max(limits.memory_bytes, COMPILE_MEMORY), output_bytes=limits.file_bytes)
        script = f"g++ {' '.join(CPP_FLAGS)} -o main main.cpp 1>&2 && cat main"
        built = self.sandbox.run(
            ["/bin/sh", "-c", script], files={**files, "main.cpp": request.code.encode()}, limits=limits
        )
        compiled = command_result(built, stdout=False)
        if _failed(compiled) or not built.stdout:
            return compiled, None
        result = self.sandbox.run(
            ["/bin/sh", "-c", "chmod 700 main && exec ./main"],
            files={**files, "main": built.stdout},
            stdin=request.stdin or "",
            limits=self._limits(request.run_timeout, request.memory_limit_MB),
            collect=request.fetch_files,
        )
        fetched.update(result.files)
        return compiled, command_result(result)
