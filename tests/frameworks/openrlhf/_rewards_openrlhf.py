"""Rewards the OpenRLHF tests name in spec files (worker processes import them by path)."""

from __future__ import annotations


def fails_on_boom(completion: str, answer: str) -> float:
    """Exact match on the label; a completion containing 'boom' raises (a crashing verifier)."""
    if "boom" in completion:
        raise RuntimeError("verifier crashed on this completion")
    return float(completion.strip() == str(answer).strip())
