"""Running a program against a :class:`~rewardflow.code.suites.Suite` inside the sandbox, with the harness.

The host sends the job in two frames (program first, tests second, see :mod:`rewardflow.code.harness`), reads
one answer per test, and accepts the answers only when the harness's completion marker carries this run's
nonce. Expected outputs of stdin/stdout and call tests never enter the sandbox: they are compared here.
"""

from __future__ import annotations

import functools
import itertools
import json
import secrets
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from rewardflow.code.harness import decode, frame
from rewardflow.code.suites import Suite
from rewardflow.errors import SandboxError
from rewardflow.sandbox import Isolation, Limits, RunResult, Sandbox
from rewardflow.sandbox.session import Session

__all__ = ["Execution", "execute", "harness_source"]

_JOB_IDS = itertools.count(1)


@functools.lru_cache(maxsize=1)
def harness_source() -> str:
    return resources.files("rewardflow.code").joinpath("harness.py").read_text(encoding="utf-8")


@dataclass
class Execution:
    """Raw answers of one run: ``answers[i]`` is the harness's line for test ``i``."""

    answers: dict[int, dict[str, Any]]
    complete: bool  # the completion marker with the right nonce arrived
    compile_error: str | None
    run: RunResult
    info: dict[str, Any] = field(default_factory=dict)


def execute(
    sandbox: Sandbox,
    program: str,
    suite: Suite,
    *,
    language: str = "python",
    case_s: float = 5.0,
    compile_s: float = 30.0,
    limits: Limits | None = None,
    stop_at_first_failure: bool = False,
    session: Session | None = None,
) -> Execution:
    """Run ``program`` on every test of ``suite``; raise SandboxError for infrastructure failures."""
    limits = limits or sandbox.limits
    setup: dict[str, Any] = {"mode": suite.kind, "program": program, "case_s": case_s, "language": language}
    setup["stop"] = stop_at_first_failure
    nonce = secrets.token_hex(16)
    if suite.kind == "assert":
        setup["count"] = len(suite.tests)
        job: dict[str, Any] = {"setup": suite.setup, "tests": list(suite.tests)}
        job.update(trusted=suite.trusted, entry=suite.entry)
    elif suite.kind == "call":
        setup["fn"] = suite.fn_name
        from rewardflow.code.harness import encode

        job = {"inputs": [encode(list(args)) for args in suite.inputs]}
    else:
        setup["output_bytes"] = limits.output_bytes
        setup["compile_s"] = compile_s
        job = {"inputs": list(suite.inputs)}
    job["nonce"] = nonce
    # The whole run gets every case's budget plus compilation and start-up; the sandbox's own wall limit caps it.
    wall = min(limits.wall_s, (compile_s if language == "cpp" else 0) + case_s * max(len(suite), 1) + 5.0)
    run_limits = limits.with_(
        wall_s=wall,
        cpu_s=min(limits.cpu_s, int(wall) + 1),  # per process; the wall clock is the limit that binds
        output_bytes=limits.output_bytes * max(len(suite), 1) + 65536,
    )
    payload = frame(setup) + frame(job)
    docs: list[Any] | None = None
    if session is not None:
        job_id = next(_JOB_IDS)
        header = frame({"job": job_id, "cpu_s": max(1, int(run_limits.cpu_s))})
        start = time.perf_counter()
        try:
            docs, limit = session.job(
                header + payload, job_id=job_id, wall_s=run_limits.wall_s, output_bytes=run_limits.output_bytes
            )
        except SandboxError:
            docs = None  # the reused sandbox broke: run this job in a sandbox of its own instead
        else:
            result = RunResult(0, None, b"", b"", limit, time.perf_counter() - start, Isolation.BWRAP, {"reused": True})
    if docs is None:
        result = sandbox.run(
            [sandbox.python, "-I", "-S", "-c", harness_source()],
            stdin=payload,
            limits=run_limits,
            as_pid1=True,
        )
        docs = []
        for line in result.stdout.decode("utf-8", errors="replace").splitlines():
            try:
                docs.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    answers: dict[int, dict[str, Any]] = {}
    complete = False
    compile_error = None
    for doc in docs:
        if not isinstance(doc, dict):
            continue
        if "harness_error" in doc:
            raise SandboxError(f"the test harness failed: {doc['harness_error']}")
        if "done" in doc:
            complete = doc["done"] == nonce
        elif "compile_error" in doc:
            compile_error = str(doc["compile_error"])
        elif isinstance(doc.get("case"), int):
            answers[doc["case"]] = doc
    return Execution(answers, complete, compile_error, result, {"isolation": str(result.isolation)})


def returned_value(answer: dict[str, Any]) -> Any:
    """The decoded return value of a call-test answer (raises ValueError on a malformed one)."""
    return decode(answer["value"])
