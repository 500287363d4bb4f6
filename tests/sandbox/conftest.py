"""Shared helpers for the sandbox tests: a bwrap sandbox (skipped where bubblewrap cannot run) and leak checks."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest

from rewardflow.sandbox import Isolation, Limits, Sandbox, probe_isolation


def processes_with_cmdline(marker: str) -> list[int]:
    """PIDs of live processes whose command line contains ``marker`` (the sandbox clears the environment)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def wait_no_process(marker: str, seconds: float = 10.0) -> list[int]:
    deadline = time.monotonic() + seconds
    left = processes_with_cmdline(marker)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = processes_with_cmdline(marker)
    return left


@pytest.fixture(scope="session")
def bwrap_sandbox() -> Sandbox:
    if probe_isolation() < Isolation.BWRAP:
        pytest.skip("bubblewrap cannot run here (install it: apt-get install bubblewrap)")
    return Sandbox(Limits(wall_s=10, cpu_s=5, memory_bytes=512 << 20, nproc=32), require="bwrap")


class Py:
    """Runs a Python snippet in a sandbox with a unique marker in its command line."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.marker = "rfmark" + uuid.uuid4().hex

    def run(self, code: str, **kwargs):  # type: ignore[no-untyped-def]
        source = f"# {self.marker}\n{code}"
        return self.sandbox.run([self.sandbox.python, "-I", "-S", "-c", source], **kwargs)


@pytest.fixture
def py(bwrap_sandbox: Sandbox):  # type: ignore[no-untyped-def]
    runner = Py(bwrap_sandbox)
    yield runner
    left = wait_no_process(runner.marker)
    assert left == [], f"processes left behind: {left}"
