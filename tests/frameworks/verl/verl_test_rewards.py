"""Rewards for the real-verl tests: module-level, so worker processes import them by name (a name of its own:
verl installs a top-level ``tests`` package)."""

from __future__ import annotations

import time

from rewardflow import reward


def hang_on_gold(completion: str, ground_truth: str, **_: object) -> float:
    """Exact match; a ground truth of "hang" never returns (a runaway verifier)."""
    if ground_truth == "hang":
        time.sleep(3600)
    return float(completion.strip().endswith(str(ground_truth)))


@reward(kind="batch")
def batch_size_seen(prompts: list[str], completions: list[str], **_: object) -> list[float]:
    """A batch reward: every sample's score is the size of the batch it was scored in."""
    return [float(len(completions))] * len(completions)


def plain_compute_score(data_source, solution_str, ground_truth, extra_info=None, **_):
    """A verl compute_score as users write them (no rewardflow): hangs on a ground truth of "hang"."""
    return hang_on_gold(solution_str, ground_truth)
