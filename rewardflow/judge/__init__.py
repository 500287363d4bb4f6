"""LLM-as-judge rewards: natively async, one shared client per endpoint, bounded retries, usage accounting.

Modules: :mod:`~rewardflow.judge.client` (the HTTP client: limits, retries, cache, usage),
:mod:`~rewardflow.judge.rewards` (``judge_score``, ``judge_reference``, ``judge_rubric``, ``judge_group``),
:mod:`~rewardflow.judge.parse` (reply parsing and output schemas), :mod:`~rewardflow.judge.templates` (prompt
templates), :mod:`~rewardflow.judge.config` (endpoint identity and limits), :mod:`~rewardflow.judge.http` (the
HTTP transport: aiohttp or httpx), :mod:`~rewardflow.judge.limits` (rate limits, backoff),
:mod:`~rewardflow.judge.cache`, :mod:`~rewardflow.judge.usage` (accounting) and :mod:`~rewardflow.judge.testing`
(a deterministic OpenAI-compatible server on loopback).

``BUILTINS`` declares the rewards for the registry by import path; the public names below are imported lazily,
so ``import rewardflow`` never imports aiohttp, httpx or jinja2.
"""

from __future__ import annotations

from rewardflow._lazy import lazy_exports
from rewardflow.registry import Entry

_EXTRA = "judge"

BUILTINS: list[Entry] = [
    Entry(
        "judge_score",
        "rewardflow.judge.rewards:judge_score",
        "LLM judge: pointwise score in [min_score, max_score] (default 0-10), normalised to [0, 1].",
        factory=True,
        extra=_EXTRA,
    ),
    Entry(
        "judge_reference",
        "rewardflow.judge.rewards:judge_reference",
        "LLM judge: 1 if the final answer is equivalent to the row's reference answer, else 0.",
        factory=True,
        extra=_EXTRA,
    ),
    Entry(
        "judge_rubric",
        "rewardflow.judge.rewards:judge_rubric",
        "LLM judge: weighted criteria scored separately; per-criterion components.",
        factory=True,
        extra=_EXTRA,
    ),
    Entry(
        "judge_group",
        "rewardflow.judge.rewards:judge_group",
        "LLM judge, group-level: scores or ranks all completions of one prompt in one call.",
        factory=True,
        extra=_EXTRA,
    ),
]

_LAZY = {
    "ClientConfig": "rewardflow.judge.config",
    "JudgeClient": "rewardflow.judge.client",
    "JudgeReply": "rewardflow.judge.client",
    "JudgeRequest": "rewardflow.judge.client",
    "shared_client": "rewardflow.judge.client",
    "JudgeGroup": "rewardflow.judge.rewards",
    "JudgeReference": "rewardflow.judge.rewards",
    "JudgeRubric": "rewardflow.judge.rewards",
    "JudgeScore": "rewardflow.judge.rewards",
    "judge_group": "rewardflow.judge.rewards",
    "judge_reference": "rewardflow.judge.rewards",
    "judge_rubric": "rewardflow.judge.rewards",
    "judge_score": "rewardflow.judge.rewards",
    "usage_summary": "rewardflow.judge.usage",
    "FakeJudgeServer": "rewardflow.judge.testing",
    "spawn_fake_server": "rewardflow.judge.testing",
}

__all__ = ["BUILTINS", *sorted(_LAZY)]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
