"""The three test formats, both languages and every outcome the code reward distinguishes, one table row each.

Rows are written in each dataset's own column layout (HumanEval, MBPP, APPS ``input_output``, CodeContests
``public_tests``, LiveCodeBench ``public_test_cases`` + ``metadata.func_name``).
"""

from __future__ import annotations

import json
import shutil
import textwrap

import pytest

from rewardflow import Engine, Sample, Status
from rewardflow.code import CodeReward, extract_code, same_stdout, same_value, suite_from_row
from rewardflow.errors import InputError, SandboxError
from rewardflow.sandbox import Isolation, Sandbox, probe_isolation


def fenced(code: str, tag: str = "python") -> str:
    return f"```{tag}\n{textwrap.dedent(code).strip()}\n```"


@pytest.fixture(scope="module")
def reward() -> CodeReward:
    if probe_isolation() < Isolation.BWRAP:
        pytest.skip("bubblewrap cannot run here")
    return CodeReward(require="bwrap", case_timeout=3)


# -- extraction ------------------------------------------------------------------------------------------------------

EXTRACT = [
    # (completion, expected code or None, expected tag)
    ("```python\nx = 1\n```", "x = 1\n", "python"),
    ("```\nx = 1\n```", "x = 1\n", ""),  # no tag
    ("```py\na\n```\ntext\n```cpp\nint main(){}\n```", "int main(){}\n", "cpp"),  # the last block wins
    ("````python\nprint('```')\n````", "print('```')\n", "python"),  # a longer fence holds backticks
    ("no code here", None, None),
    ("```python\nprint(1)\n", None, None),  # cut off inside the block: no program
]


@pytest.mark.parametrize(("completion", "code", "tag"), EXTRACT)
def test_extraction(completion: str, code: str | None, tag: str | None) -> None:
    block = extract_code(completion)
    if code is None:
        assert block is None
    else:
        assert block is not None and block.code == code and block.tag == tag


# -- comparison ------------------------------------------------------------------------------------------------------

STDOUT = [
    # (got, want, whitespace, float_tol, same)
    ("1 2\n3\n", "1 2 3", "tokens", None, True),  # token mode ignores layout
    ("1 2\n3\n", "1 2 3", "lines", None, False),  # line mode does not
    ("a  \nb\n\n", "a\nb", "lines", None, True),  # trailing spaces and blank lines
    ("a\nb", "a\nb\n", "exact", None, False),
    ("0.3333333", "0.333333333", "tokens", 1e-6, True),
    ("0.3333333", "0.333333333", "tokens", None, False),
    ("0.34", "0.333333333", "tokens", 1e-6, False),
    ("nan", "nan", "tokens", 1e-6, True),  # identical text is equal whatever it says
    ("YES", "yes", "tokens", None, False),  # case matters
]


@pytest.mark.parametrize(("got", "want", "ws", "tol", "same"), STDOUT)
def test_stdout_comparison(got: str, want: str, ws: str, tol: float | None, same: bool) -> None:
    assert same_stdout(got, want, whitespace=ws, float_tol=tol) is same


def test_value_comparison() -> None:
    assert same_value((1, [2, 3]), [1, [2, 3]])  # tuples compare as lists (JSON has none)
    assert not same_value([1, 2], [2, 1])
    assert same_value(0.1 + 0.2, 0.3, float_tol=1e-9) and not same_value(0.1 + 0.2, 0.3)
    assert not same_value(float("nan"), float("nan"), float_tol=1e-9)


def test_rows_without_tests_are_input_errors() -> None:
    with pytest.raises(InputError, match="no tests"):
        suite_from_row({"answer": "42"})
    with pytest.raises(InputError, match="2 inputs but 1 outputs"):
        suite_from_row({"input_output": json.dumps({"inputs": ["1", "2"], "outputs": ["1"]})})


# -- the formats, end to end -----------------------------------------------------------------------------------------

APPS_STDIO = {"input_output": json.dumps({"inputs": ["3\n1 2 3\n", "1\n10\n"], "outputs": ["6\n", "10\n"]})}
APPS_CALL = {"input_output": json.dumps({"inputs": [[[1, 2, 3]], [[]]], "outputs": [[6], [0]], "fn_name": "total"})}
CONTESTS = {
    "public_tests": {"input": ["2 3\n"], "output": ["5\n"]},
    "private_tests": {"input": ["-1 1\n"], "output": ["0\n"]},
}
LCB_CALL = {
    "public_test_cases": json.dumps(
        [
            {"input": "[2,7,11,15]\n9", "output": "[0, 1]", "testtype": "functional"},
            {"input": "[3,2,4]\n6", "output": "[1, 2]", "testtype": "functional"},
        ]
    ),
    "metadata": json.dumps({"func_name": "twoSum"}),
}
LCB_STDIN = {"public_test_cases": json.dumps([{"input": "4\n", "output": "16\n", "testtype": "stdin"}])}
MBPP = {
    "test_list": [
        "assert square(2) == 4",
        "assert square(-3) == 9",
        "assert math.isclose(square(0.5), 0.25)",
    ],
    "test_imports": ["import math"],
}

SUM_STDIN = "n = int(input())\nprint(sum(map(int, input().split())))"
TWO_SUM = """
class Solution:
    def twoSum(self, nums, target):
        seen = {}
        for i, x in enumerate(nums):
            if target - x in seen:
                return [seen[target - x], i]
            seen[x] = i
"""

CASES = [
    # (row, completion, value, reason starts with, passed)
    (APPS_STDIO, fenced(SUM_STDIN), 1.0, None, 2),
    (APPS_STDIO, fenced("input()\nprint(0)"), 0.0, "test 1: wrong answer", 0),
    (APPS_STDIO, fenced("import sys\nsys.exit(0)"), 0.0, "test 1: wrong answer", 0),  # a clean exit prints nothing
    (APPS_STDIO, fenced("n = int(input())\nprint(1 / 0)"), 0.0, "test 1: runtime error", 0),
    (APPS_STDIO, fenced("while True:\n    pass"), 0.0, "time limit", 0),  # stops at the first failure
    (APPS_CALL, fenced("def total(xs):\n    return sum(xs)"), 1.0, None, 2),
    (APPS_CALL, fenced("def total(xs):\n    return len(xs)"), 0.0, "test 1: wrong answer: expected [6], got 3", 1),
    (CONTESTS, fenced("a, b = map(int, input().split())\nprint(a + b)"), 1.0, None, 2),
    (LCB_CALL, fenced(TWO_SUM), 1.0, None, 2),
    (LCB_CALL, fenced(TWO_SUM.replace("[seen[target - x], i]", "(seen[target - x], i)")), 1.0, None, 2),  # tuple
    (LCB_CALL, fenced(TWO_SUM.replace("return [seen[target - x], i]", "return [i]")), 0.0, "test 1: wrong", 0),
    (LCB_STDIN, fenced("print(int(input()) ** 2)"), 1.0, None, 1),
    (MBPP, fenced("def square(x):\n    return x * x"), 1.0, None, 3),
    (MBPP, fenced("def square(x):\n    return abs(x) * 2"), 0.0, "test 2: failed: assert square(-3) == 9", 1),
    (MBPP, "I cannot write code.", 0.0, "no fenced code block", 0),
    (MBPP, fenced("def square(x) return", "python"), 0.0, "test 1: the program did not load: SyntaxError", 0),
    (MBPP, fenced("fn main() {}", "rust"), 0.0, "cannot run code tagged 'rust'", 0),
]


@pytest.mark.parametrize(("row", "completion", "value", "reason", "passed"), CASES)
def test_code_reward_table(reward: CodeReward, row, completion, value, reason, passed) -> None:  # type: ignore[no-untyped-def]
    score = reward(completion, **row)
    assert score.value == value, score
    if reason is None:
        assert score.reason is None
    else:
        assert score.reason is not None and score.reason.startswith(reason), score
    assert score.components["passed"] == passed


def test_fraction_scoring(reward: CodeReward) -> None:
    fraction = CodeReward(scoring="fraction", require="bwrap")
    score = fraction(fenced("def square(x):\n    return abs(x) * 2"), **MBPP)
    assert score.value == pytest.approx(1 / 3)
    assert score.components == {"passed": 1.0, "total": 3.0}
    assert score.info["first_failure"].startswith("test 2")


def test_whitespace_and_float_options(reward: CodeReward) -> None:
    row = {"input_output": {"inputs": [""], "outputs": ["0.333333333\n"]}}
    program = fenced("print(1 / 3)")
    assert reward(program, **row).value == 0.0
    assert CodeReward(float_tol=1e-6, require="bwrap")(program, **row).value == 1.0
    lines = {"input_output": {"inputs": [""], "outputs": ["1 2"]}}
    assert reward(fenced("print(1)\nprint(2)"), **lines).value == 1.0
    assert CodeReward(whitespace="lines", require="bwrap")(fenced("print(1)\nprint(2)"), **lines).value == 0.0


needs_gxx = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")

CPP_SUM = """
#include <bits/stdc++.h>
int main() { long long a, b; std::cin >> a >> b; std::cout << a + b << "\\n"; }
"""


@needs_gxx
def test_cpp_passes_fails_and_reports_compile_errors_apart(reward: CodeReward) -> None:
    cpp = CodeReward(require="bwrap", memory_mb=2048)
    ok = cpp(fenced(CPP_SUM, "cpp"), **CONTESTS)
    assert ok.value == 1.0 and ok.components["compiled"] == 1.0, ok
    wrong = cpp(fenced(CPP_SUM.replace("a + b", "a - b"), "c++"), **CONTESTS)
    assert wrong.value == 0.0 and wrong.components["compiled"] == 1.0 and wrong.reason.startswith("test 1: wrong")
    broken = cpp(fenced("int main() { return undefined_name; }", "cpp"), **CONTESTS)
    assert broken.value == 0.0 and broken.components["compiled"] == 0.0
    assert broken.reason.startswith("compile error:") and "undefined_name" in broken.reason
    crash = cpp(fenced("int main() { int *p = nullptr; return *p; }", "cpp"), **CONTESTS)
    assert crash.value == 0.0 and crash.reason.startswith("test 1: runtime error")


# -- statuses through the engine -------------------------------------------------------------------------------------


def test_statuses_through_the_engine(reward: CodeReward) -> None:
    """ok 1.0, ok 0.0 with reasons, error for a row without tests; every row gets exactly one result."""
    samples = [
        Sample("p", fenced(SUM_STDIN), row=APPS_STDIO),
        Sample("p", fenced("while True:\n    pass"), row=APPS_STDIO),
        Sample("p", "no code", row=APPS_STDIO),
        Sample("p", fenced(SUM_STDIN), row={}),
    ]
    with Engine(reward, workers=2, timeout=60) as engine:
        results = engine.score(samples)
    assert [r.status for r in results] == [Status.OK, Status.OK, Status.OK, Status.ERROR]
    assert [r.value for r in results[:3]] == [1.0, 0.0, 0.0]
    assert results[1].reason == "time limit"
    assert "no tests" in results[3].reason


def test_engine_timeout_stays_a_timeout() -> None:
    slow = CodeReward(case_timeout=30, engine_timeout=1.5)
    with Engine(slow, workers=1) as engine:
        (result,) = engine.score([Sample("p", fenced("import time\ntime.sleep(60)"), row=APPS_STDIO)])
    assert result.status is Status.TIMEOUT and result.value is None


def test_sandbox_failure_is_an_error_not_a_zero(reward: CodeReward) -> None:
    broken = CodeReward(require="bwrap")
    broken._sandbox = Sandbox(level="bwrap", bind=["/nonexistent/rf-toolchain"])
    with pytest.raises(SandboxError):
        broken(fenced(SUM_STDIN), **APPS_STDIO)


def test_required_isolation_is_enforced_per_call() -> None:
    from rewardflow.errors import IsolationError

    strict = CodeReward(level="rlimits", require="bwrap")
    with pytest.raises(IsolationError):
        strict(fenced(SUM_STDIN), **APPS_STDIO)
