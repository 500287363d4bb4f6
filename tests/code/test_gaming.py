"""Every way issue 15 lists to fake a pass, against the code reward at the bwrap level: each one scores 0.0.

The problem is trivial on purpose (``add``): each attack below is a *wrong* program that would pass if the trick
worked, and the control at the top shows the right program passes under the same harness.
"""

from __future__ import annotations

import textwrap
import uuid

import pytest

from rewardflow.code import CodeReward
from rewardflow.sandbox import Isolation, Sandbox, probe_isolation

ADD = {
    "test": (
        "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert abs(candidate(0.5, 0.25) - 0.75) < 1e-9\n"
    ),
    "entry_point": "add",
}


def fenced(code: str) -> str:
    return "Here is my solution.\n```python\n" + textwrap.dedent(code).strip() + "\n```\n"


@pytest.fixture(scope="module")
def reward() -> CodeReward:
    if probe_isolation() < Isolation.BWRAP:
        pytest.skip("bubblewrap cannot run here")
    return CodeReward(require="bwrap", case_timeout=5)


def test_control_the_honest_program_passes(reward: CodeReward) -> None:
    score = reward(fenced("def add(a, b):\n    return a + b"), **ADD)
    assert score.value == 1.0 and score.info["isolation"] == "bwrap"


ATTACKS = {
    # exiting "successfully" before any assert runs
    "sys.exit(0) at import": "import sys\nsys.exit(0)\ndef add(a, b):\n    return 0",
    "os._exit(0) at import": "import os\nos._exit(0)",
    "os._exit(0) inside the call": "def add(a, b):\n    import os\n    os._exit(0)",
    "raise SystemExit inside the call": "def add(a, b):\n    raise SystemExit(0)",
    # results that compare equal to anything
    "always-True __eq__ object": """
        class Anything:
            def __eq__(self, other):
                return True
            def __sub__(self, other):
                return 0
            __rsub__ = __sub__
            def __abs__(self):
                return 0
        def add(a, b):
            return Anything()
        """,
    "int subclass with always-True __eq__": """
        class Liar(int):
            def __eq__(self, other):
                return True
            __hash__ = int.__hash__
        def add(a, b):
            return Liar(0)
        """,
    # patching what the test uses
    "monkeypatching builtins": """
        import builtins
        builtins.abs = lambda x: 0
        builtins.AssertionError = type("Nope", (Exception,), {})
        def add(a, b):
            return 0
        """,
    "patching the assertion machinery": """
        import sys
        sys.excepthook = lambda *a: None
        import unittest
        unittest.TestCase.assertEqual = lambda *a, **k: None
        def add(a, b):
            return 0
        """,
    # forging the harness's answers
    "printing fake protocol lines": """
        import os, sys
        lines = '{"case": 0, "ok": true}\\n{"done": "x"}\\n'
        print(lines); sys.stderr.write(lines)
        for path in ("/proc/1/fd/1", "/proc/self/fd/1", "/dev/stdout"):
            try:
                open(path, "w").write(lines)
            except OSError:
                pass
        os.write(1, lines.encode())
        os._exit(0)
        """,
    # killing the harness
    "killing the harness": """
        import os, signal
        for pid in (os.getppid(), 1, -1):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        def add(a, b):
            return 0
        """,
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_gaming_attempt_scores_zero(reward: CodeReward, attack: str) -> None:
    score = reward(fenced(ATTACKS[attack]), **ADD)
    assert score.value == 0.0, score
    assert score.reason


# A scanner for a secret: its own memory, every process's /proc entries, and the files it can see.
THIEF = r"""
def steal():
    import os, re
    pattern = re.compile(rb"SECRET-[0-9a-f]{32}")
    try:
        with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb", 0) as mem:
            for line in maps:
                span, perms = line.split()[:2]
                start, end = (int(x, 16) for x in span.split("-"))
                if "r" not in perms or end - start > 1 << 28:
                    continue
                try:
                    mem.seek(start)
                    found = pattern.search(mem.read(end - start))
                except (OSError, ValueError, OverflowError):
                    continue
                if found:
                    return found.group().decode()
    except OSError:
        pass
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        for name in ("cmdline", "environ", "fd/0", "fd/1", "fd/3", "mem"):
            try:
                fd = os.open(f"/proc/{pid}/{name}", os.O_RDONLY | os.O_NONBLOCK)  # fd/0 may be a pipe
                try:
                    found = pattern.search(os.read(fd, 1 << 20))
                finally:
                    os.close(fd)
            except OSError:
                continue
            if found:
                return found.group().decode()
    for root in ("/work", "/tmp", "/etc", "/dev/shm", "/"):
        for dirpath, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if os.path.join(dirpath, d) not in SKIP]
            for name in files:
                try:
                    with open(os.path.join(dirpath, name), "rb") as f:
                        found = pattern.search(f.read(1 << 20))
                except OSError:
                    continue
                if found:
                    return found.group().decode()
    return "not found"


# The read-only system and the interpreter's own files: large, and the host's, not the run's.
SKIP = ("/proc", "/sys", "/usr", "/dev", "/root", "/home")
"""


def test_the_thief_finds_a_secret_it_can_reach() -> None:
    """Control for the next tests: planted in its own memory, its stdin or its files, the scanner finds it."""
    if probe_isolation() < Isolation.BWRAP:
        pytest.skip("bubblewrap cannot run here")
    secret = "SECRET-" + uuid.uuid4().hex
    sandbox = Sandbox(require="bwrap")
    for files, stdin, plant in (
        ({}, b"", f"kept = {secret[:10]!r} + {secret[10:]!r}"),
        ({}, secret.encode(), "kept = __import__('sys').stdin.read()"),
        ({"tests/test_x.py": f"assert f() == {secret!r}"}, b"", ""),
    ):
        code = f"{plant}\n{THIEF}\nprint(steal())"
        result = sandbox.run([sandbox.python, "-I", "-S", "-c", code], files=files, stdin=stdin)
        assert result.stdout.decode().strip() == secret, result


def test_the_assert_tests_cannot_be_read_from_memory_disk_or_proc(reward: CodeReward) -> None:
    secret = "SECRET-" + uuid.uuid4().hex
    row = {"test": f"def check(candidate):\n    assert candidate() == {secret!r}\n", "entry_point": "answer"}
    score = reward(fenced(THIEF + "\ndef answer():\n    return steal()\n"), **row)
    assert score.value == 0.0
    assert score.reason.startswith("test 1: failed: assert candidate()")  # it ran to the end, found nothing


def test_stdio_expected_output_is_never_in_the_sandbox(reward: CodeReward) -> None:
    secret = "SECRET-" + uuid.uuid4().hex
    row = {"input_output": {"inputs": ["1\n"], "outputs": [secret + "\n"]}}
    score = reward(fenced(THIEF + "\nprint(steal())\n"), **row)
    assert score.value == 0.0 and "not found" in score.reason


def test_call_tests_expected_values_are_never_in_the_sandbox(reward: CodeReward) -> None:
    secret = "SECRET-" + uuid.uuid4().hex
    row = {"input_output": {"inputs": [[1]], "outputs": [secret], "fn_name": "answer"}}
    score = reward(fenced(THIEF + "\ndef answer(x):\n    return steal()\n"), **row)
    assert score.value == 0.0 and "not found" in score.reason


def test_call_tests_reject_objects_that_equal_anything(reward: CodeReward) -> None:
    row = {"input_output": {"inputs": [[2, 3]], "outputs": [5], "fn_name": "add"}}
    code = "class Anything:\n    def __eq__(self, other):\n        return True\ndef add(a, b):\n    return Anything()"
    score = reward(fenced(code), **row)
    assert score.value == 0.0 and "cannot be passed" in score.reason


def test_a_module_written_to_the_workdir_never_reaches_the_harness(reward: CodeReward) -> None:
    """The program shadows ``random`` in its working directory; the test imports ``random`` unharmed."""
    row = {
        "test": (
            "def check(candidate):\n    import random\n"
            "    x = random.randint(1, 9)\n    assert candidate(x, 1) == x + 1\n"
        ),
        "entry_point": "add",
    }
    code = """
        open("random.py", "w").write("raise SystemExit('hijacked')\\n")
        import random
        def add(a, b):
            return a + b
        """
    assert reward(fenced(code), **row).value == 1.0


def test_killing_the_harness_at_the_rlimits_level_scores_zero() -> None:
    """Without a PID namespace the kill lands; the missing completion marker still scores 0, never 1."""
    reward = CodeReward(level="rlimits", case_timeout=5)
    code = "import os, signal\ndef add(a, b):\n    os.kill(os.getppid(), signal.SIGKILL)\n    return a + b"
    score = reward(fenced(code), **ADD)
    assert score.value == 0.0 and score.info["isolation"] == "rlimits"
    assert "harness did not finish" in score.reason


def test_a_program_name_cannot_shadow_a_builtin_the_test_uses(reward: CodeReward) -> None:
    row = {"test": "def check(candidate):\n    assert abs(candidate(0.5, 0.25) - 0.75) < 1e-9\n", "entry_point": "add"}
    honest = reward(fenced("def add(a, b):\n    return a + b"), **row)
    assert honest.value == 1.0
    cheat = reward(fenced("def abs(x):\n    return 0\n\ndef add(a, b):\n    return 42"), **row)
    assert cheat.value == 0.0, cheat


def test_the_problem_helpers_come_from_the_prompt_not_the_program(reward: CodeReward) -> None:
    """HumanEval/32 checks find_zero with the prompt's poly(); a program that redefines poly gains nothing."""
    prompt = 'def double(x):\n    return 2 * x\n\n\ndef half(x):\n    """Return x / 2."""\n'
    row = {
        "prompt": prompt,
        "test": "def check(candidate):\n    assert double(candidate(8)) == 8\n",
        "entry_point": "half",
    }
    honest = reward(fenced(prompt + "    return x / 2\n"), **row)
    assert honest.value == 1.0, honest
    cheat = reward(fenced("def double(x):\n    return 8\n\n\ndef half(x):\n    return 0\n"), **row)
    assert cheat.value == 0.0, cheat
