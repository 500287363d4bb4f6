"""Rewards the AReaL tests name by import path (worker processes and the single-controller child import them)."""

from __future__ import annotations

import time


def slow_on_hang(prompt, completions, prompt_ids, completion_ids, **data):
    """AReaL's reward signature; a completion containing 'hang' never returns (a runaway sympy call, say)."""
    if "hang" in completions:
        while True:
            time.sleep(0.05)
    return float(completions.strip().startswith("#### " + str(data["answer"]).split("####")[-1].strip()))


def math_reward_fn(completions: str, answer: str) -> float:
    """The signature of AReaL's agent ``math_reward_fn``, importable by worker processes (math-verify, as AReaL)."""
    from math_verify import parse, verify

    return float(verify(parse(answer), parse(completions)))
