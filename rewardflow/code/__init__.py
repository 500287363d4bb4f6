"""Code-execution rewards: the completion's code runs against the row's tests inside :mod:`rewardflow.sandbox`.

Three test formats (assert-style as in HumanEval/MBPP, stdin/stdout as in APPS/CodeContests, call tests as in
LiveCodeBench), Python and C++, all-or-nothing or fractional scoring. See ``docs/en/code-rewards.md``.
"""

from __future__ import annotations

from rewardflow._lazy import lazy_exports
from rewardflow.registry import Entry

_LAZY = {
    "CodeBlock": "rewardflow.code.extract",
    "CodeReward": "rewardflow.code.reward",
    "Suite": "rewardflow.code.suites",
    "extract_code": "rewardflow.code.extract",
    "same_stdout": "rewardflow.code.compare",
    "same_value": "rewardflow.code.compare",
    "suite_from_row": "rewardflow.code.suites",
}

__all__ = ["BUILTINS", *sorted(_LAZY)]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())

BUILTINS: list[Entry] = [
    Entry(
        "code",
        "rewardflow.code.reward:CodeReward",
        "Runs the last fenced code block against the row's tests in the sandbox (assert, stdin/stdout, call).",
        datasets=(
            "openai_humaneval",
            "openai/openai_humaneval",
            "humaneval",
            "mbpp",
            "google-research-datasets/mbpp",
            "codeparrot/apps",
            "apps",
            "deepmind/code_contests",
            "code_contests",
            "livecodebench/code_generation_lite",
            "livecodebench",
        ),
        factory=True,
    ),
    Entry(
        "code_fraction",
        "rewardflow.code.reward:code_fraction",
        "Like `code`, scored as the fraction of tests passed.",
        factory=True,
    ),
]
