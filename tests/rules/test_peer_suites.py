"""Other projects' own test cases (``tests/rules/peer/*.json``): rewardflow's ``math`` against plain math-verify.

Every case is scored by both; the suite fails if ``math`` is right on fewer cases than math-verify in any
source's suite, or if ``math`` gives a single wrong 1.0 (a wrong answer accepted) anywhere. The table with the
counts is ``bench/RESULTS_accuracy.md`` (``python bench/p_accuracy.py``).
"""

from __future__ import annotations

import logging

import pytest

from tests.rules.peer.suites import SUITES, load, math_verify_says, rewardflow_says


@pytest.mark.parametrize("suite", SUITES)
def test_suite_has_its_provenance(suite: str) -> None:
    source, cases = load(suite)
    assert set(source) >= {"repo", "commit", "paths", "licence"}
    assert len(source["commit"]) == 40 and source["licence"]
    assert cases and all(c.expected in (0, 1) for c in cases)


@pytest.mark.parametrize("suite", SUITES)
def test_math_is_never_below_math_verify(suite: str) -> None:
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    _, cases = load(suite)
    ours_right = mv_right = 0
    wrong_ones: list[str] = []
    for case in cases:
        ours, _ = rewardflow_says(case)
        ours_right += ours == case.expected
        mv_right += math_verify_says(case) == case.expected
        if ours == 1.0 and case.expected == 0:
            wrong_ones.append(f"{case.origin}: gold {case.gold!r}, completion {case.completion[-80:]!r}")
    assert not wrong_ones, f"wrong 1.0s: {wrong_ones}"
    assert ours_right >= mv_right, f"{suite}: rewardflow {ours_right} < math-verify {mv_right} of {len(cases)}"
