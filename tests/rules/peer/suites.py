"""Load the harvested peer suites and score one case with rewardflow's ``math`` and with plain math-verify.

Each ``*.json`` here holds one source's test cases (see its ``source`` block: repository, commit, paths,
licence, and ``how`` the cases were read). A case is ``gold``, ``completion`` and ``expected`` (1 right, 0
wrong), copied from that project's own tests; ``bench/harvest_peer.py`` wrote the files.

math-verify is called the way its README and most trainers call it: ``verify(parse(gold), parse(completion))``
with its default extraction configs, on the main thread (its own signal timeouts on).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: Suites in the order the results table lists them.
SUITES = (
    "math_verify",
    "lm_eval_minerva",
    "nemo_skills",
    "hendrycks_math",
    "qwen25_math",
    "open_r1",
    "rllm",
    "verl",
    "lighteval",
)


@dataclass(frozen=True, slots=True)
class Case:
    suite: str
    id: int
    origin: str
    gold: str
    completion: str
    expected: int


def load(suite: str) -> tuple[dict, list[Case]]:
    """The ``source`` block and the cases of one suite."""
    doc = json.loads((HERE / f"{suite}.json").read_text())
    cases = [Case(suite, c["id"], c["origin"], c["gold"], c["completion"], int(c["expected"])) for c in doc["cases"]]
    return doc["source"], cases


def rewardflow_says(case: Case, unanchored: str | None = None) -> tuple[float | None, str]:
    """rewardflow ``math``'s score for a case (``None`` when it raised, e.g. an unparseable gold) and reason."""
    from rewardflow.errors import RewardflowError
    from rewardflow.rules.math import math_reward

    try:
        options = {} if unanchored is None else {"unanchored": unanchored}
        score = math_reward(case.completion, answer=case.gold, **options)
    except RewardflowError as exc:
        return None, f"error: {exc}"
    return score.value, score.reason or ""


def math_verify_says(case: Case) -> float:
    """Plain math-verify: ``1.0`` if ``verify(parse(gold), parse(completion))``, else ``0.0`` (errors too)."""
    from math_verify import parse, verify

    try:
        return float(bool(verify(parse(case.gold), parse(case.completion))))
    except Exception:  # math-verify raises on some inputs; a user's loop counts that as not verified
        return 0.0
