"""A long-lived bwrap sandbox that serves many jobs: the start-up cost paid once per worker, not once per row.

A :class:`Session` starts one bubblewrap sandbox running a *zygote* (the code harness's ``zygote`` mode, PID 1 of
the sandbox's PID namespace) and sends it one job at a time over stdin; answers come back as JSON lines on
stdout, ending with ``{"ready": <job>}``. Between two jobs the zygote SIGKILLs every other process in the
namespace (``kill(-1)``, which PID 1 itself survives) and empties ``/work`` and ``/tmp``, so nothing a program
leaves behind (a daemon, a file) reaches the next job.

The host keeps the hard limits: a job past its wall-clock deadline, or writing past its output cap, kills the
whole sandbox (the next job starts a fresh one); so does anything unexpected (the zygote gone, a malformed line).
After ``max_jobs`` jobs the sandbox is replaced anyway.

What a reused sandbox does not give, compared with one sandbox per run: the jobs of one worker share a user
namespace and a (size-capped) tmpfs, one after the other. They never overlap in time.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from typing import Any

from rewardflow.errors import SandboxError
from rewardflow.sandbox.limits import Isolation, Limits
from rewardflow.sandbox.runner import DEFAULT_ENV, Sandbox, limited

__all__ = ["Session"]


class Session:
    """One reusable bwrap sandbox running ``argv`` (a zygote); not thread-safe across jobs (a lock serialises)."""

    def __init__(self, sandbox: Sandbox, argv: Sequence[str], *, limits: Limits, max_jobs: int = 500) -> None:
        if sandbox.level is not Isolation.BWRAP:
            raise SandboxError("a reusable session needs the bwrap level")
        self.sandbox = sandbox
        self.argv = list(argv)
        self.limits = limits
        self.max_jobs = max_jobs
        self._proc: subprocess.Popen[bytes] | None = None
        self._jobs = 0
        self._buffer = b""
        self._lock = threading.Lock()

    def _start(self) -> subprocess.Popen[bytes]:
        cmd, fds = self.sandbox.bwrap_command(self.argv, {}, self.limits, DEFAULT_ENV, as_pid1=True)
        try:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                pass_fds=fds,
                start_new_session=True,
                preexec_fn=lambda: limited(self.limits),
                cwd="/",
                env={"PATH": "/usr/bin:/bin"},
            )
        except OSError as exc:
            raise SandboxError(f"could not start the sandbox: {exc}") from exc
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
        os.set_blocking(proc.stdout.fileno(), False)  # type: ignore[union-attr]
        self._jobs = 0
        self._buffer = b""
        return proc

    def close(self) -> None:
        """Kill the sandbox (every process in it dies with its PID namespace)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        for stream in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError):
                stream.close()  # type: ignore[union-attr]
        proc.wait()

    def job(
        self, payload: bytes, *, job_id: int, wall_s: float, output_bytes: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Send one job; return its answer lines (without the ready line) and the limit hit, if any.

        Raises :class:`SandboxError` when the sandbox broke for a reason other than the job's limits (the caller
        may retry the job elsewhere); the session is closed then, and restarts on the next job.
        """
        with self._lock:
            if self._proc is None or self._proc.poll() is not None or self._jobs >= self.max_jobs:
                self.close()
                self._proc = self._start()
            proc = self._proc
            self._jobs += 1
            deadline = time.perf_counter() + wall_s
            try:
                proc.stdin.write(payload)  # type: ignore[union-attr]
                proc.stdin.flush()  # type: ignore[union-attr]
            except OSError as exc:
                self.close()
                raise SandboxError(f"the sandbox stopped taking jobs: {exc}") from exc
            lines: list[dict[str, Any]] = []
            received = 0
            fd = proc.stdout.fileno()  # type: ignore[union-attr]
            with selectors.DefaultSelector() as sel:
                sel.register(fd, selectors.EVENT_READ)
                while True:
                    while b"\n" in self._buffer:
                        raw, _, self._buffer = self._buffer.partition(b"\n")
                        try:
                            doc = json.loads(raw)
                        except json.JSONDecodeError:
                            continue
                        if isinstance(doc, dict) and doc.get("ready") == job_id:
                            if doc.get("dirty"):  # the zygote could not empty the disk: start afresh next time
                                self.close()
                            return lines, None
                        if isinstance(doc, dict):
                            lines.append(doc)
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        self.close()
                        return lines, "time limit"
                    if not sel.select(min(remaining, 0.5)):
                        continue
                    try:
                        chunk = os.read(fd, 65536)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        self.close()
                        raise SandboxError("the sandbox's zygote exited mid-job")
                    received += len(chunk)
                    if received > output_bytes:
                        self.close()
                        return lines, "output limit"
                    self._buffer += chunk
