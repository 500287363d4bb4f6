"""HumanEval's 164 problems (shipped in ``rewardflow/data``, MIT, (c) OpenAI), their canonical solutions, and
wrong variants of each, for the ``rewardflow demo --code`` run, the tests and ``bench/p8_code.py``.

The wrong variants wrap the canonical entry point so that every return value is wrong in a typical way:
``off_by_one`` (numbers +1, sequences one element short or long, booleans flipped) and ``wrong_return``
(always ``None``). A test suite that passes either of them does not check the return value.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from importlib import resources
from typing import Any

__all__ = ["VARIANTS", "completion", "humaneval_problems", "rows"]

HUMANEVAL = "HumanEval.jsonl.gz"

_OFF_BY_ONE = """

def _rf_off_by_one(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value[:-1] if value else "x"
    if isinstance(value, (list, tuple)):
        return type(value)(list(value)[:-1]) if value else type(value)([0])
    if value is None:
        return 0
    return None


_rf_original = {entry}


def {entry}(*args, **kwargs):
    return _rf_off_by_one(_rf_original(*args, **kwargs))
"""

_WRONG_RETURN = """

def {entry}(*args, **kwargs):
    return None
"""

VARIANTS = {"canonical": "", "off_by_one": _OFF_BY_ONE, "wrong_return": _WRONG_RETURN}


def humaneval_problems() -> list[dict[str, Any]]:
    """The 164 problems: ``task_id``, ``prompt``, ``canonical_solution``, ``test``, ``entry_point``."""
    path = resources.files("rewardflow.data").joinpath(HUMANEVAL)
    with path.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def completion(problem: dict[str, Any], variant: str = "canonical") -> str:
    """A model-style completion: prose and one fenced block with the (canonical or broken) program."""
    program = problem["prompt"] + problem["canonical_solution"] + VARIANTS[variant].format(entry=problem["entry_point"])
    return f"Here is the implementation.\n\n```python\n{program.rstrip()}\n```\n"


def rows(variants: tuple[str, ...] = ("canonical",)) -> Iterator[dict[str, Any]]:
    """Scoring rows (``prompt``, ``completion``, ``test``, ``entry_point``, ``task_id``, ``variant``)."""
    for variant in variants:
        for problem in humaneval_problems():
            yield {
                "task_id": problem["task_id"],
                "variant": variant,
                "prompt": problem["prompt"],
                "completion": completion(problem, variant),
                "test": problem["test"],
                "entry_point": problem["entry_point"],
            }
