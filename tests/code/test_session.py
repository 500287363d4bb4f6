"""The reused sandbox (one per worker, reset between rows): nothing one row leaves behind reaches the next, and a
row that breaks its sandbox costs only itself."""

from __future__ import annotations

import random
import textwrap

import pytest

from rewardflow import Engine, Sample, Status
from rewardflow.code import CodeReward
from rewardflow.sandbox import Isolation, probe_isolation
from tests.sandbox.conftest import processes_with_cmdline, wait_no_process

STDIO = {"input_output": {"inputs": [""], "outputs": ["ok"]}}


def fenced(code: str) -> str:
    return "```python\n" + textwrap.dedent(code).strip() + "\n```"


@pytest.fixture
def reward():  # type: ignore[no-untyped-def]
    if probe_isolation() < Isolation.BWRAP:
        pytest.skip("bubblewrap cannot run here")
    rw = CodeReward(require="bwrap", case_timeout=2)
    yield rw
    rw.close()


def test_a_daemon_and_files_do_not_survive_into_the_next_row(reward: CodeReward) -> None:
    seconds = f"{random.randint(100000, 999999)}"  # a unique command line to find the daemon by
    leave = f"""
        import os
        open("/work/left.txt", "w").write("x")
        open("/tmp/left.txt", "w").write("x")
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.execv("/usr/bin/sleep", ["sleep", "{seconds}"])
            os._exit(0)
        print("ok")
        """
    first = reward(fenced(leave), **STDIO)
    assert first.value == 1.0 and first.info["isolation"] == "bwrap"
    assert wait_no_process(f"sleep\x00{seconds}", 5) == []  # killed when the row ended, not when the worker does
    look = f"""
        import os
        found = []
        for pid in os.listdir("/proc"):
            try:
                if b"{seconds}" in open(f"/proc/{{pid}}/cmdline", "rb").read():
                    found.append(pid)
            except OSError:
                pass
        left = [p for p in ("/work/left.txt", "/tmp/left.txt") if os.path.exists(p)]
        print("ok" if not found and not left else f"found {{found}} {{left}}")
        """
    second = reward(fenced(look), **STDIO)
    assert second.value == 1.0, second


@pytest.mark.parametrize(
    "attack",
    [
        "while True:\n    pass",  # time limit: the whole sandbox is replaced
        "import os\nos.kill(os.getppid(), 9)",  # kills its row's harness
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",  # fork bomb
        "import sys\nsys.stdout.write('x' * (64 << 20))",  # output flood
    ],
)
def test_a_row_that_breaks_its_sandbox_costs_only_itself(reward: CodeReward, attack: str) -> None:
    bad = reward(fenced(attack), **STDIO)
    assert bad.value == 0.0 and bad.reason
    good = reward(fenced("print('ok')"), **STDIO)
    assert good.value == 1.0, good


def test_a_killed_worker_takes_its_sandbox_with_it() -> None:
    if probe_isolation() < Isolation.BWRAP:
        pytest.skip("bubblewrap cannot run here")
    seconds = f"{random.randint(100000, 999999)}"
    code = f"""
        import os
        if os.fork() == 0:
            os.execv("/usr/bin/sleep", ["sleep", "{seconds}"])
        while True:
            pass
        """
    slow = CodeReward(case_timeout=30, engine_timeout=2.0)
    with Engine(slow, workers=1) as engine:
        (result,) = engine.score([Sample("p", fenced(code), row=STDIO)])
        assert result.status is Status.TIMEOUT
        assert wait_no_process(f"sleep\x00{seconds}", 10) == []
    assert processes_with_cmdline(f"sleep\x00{seconds}") == []
