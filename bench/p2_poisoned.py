"""P2: a poisoned batch. 400 clean GSM8K rows, then the same rows with 4 pathological completions mixed in.

Pathological = answers whose evaluation never ends (``\\boxed{10^{10^{10^{10}}}}``, ``((10^{8})!)!``: sympy
tries to build numbers with billions of digits). Plain factorials like ``(10^{8})!`` are no longer pathological:
the hardened ``math`` decides them quickly. Per-call timeout 5 s. Target: poisoned wall time <= clean + 5 s + 1 s,
every row present with its status, and a clean batch right after is as fast as before with identical results
(no leftover hung worker eats the CPU, unlike AReaL's AsyncRewardWrapper).

    python bench/p2_poisoned.py
"""

from __future__ import annotations

import os
import random
import statistics
from collections.abc import Callable
from typing import TypeVar

from _common import gsm8k_rows, machine, table, timed

from rewardflow import Engine, Status

PATHOLOGICAL = [
    "The answer is \\boxed{10^{10^{10^{10}}}}",
    "So the final answer is \\boxed{((10^{8})!)!}",
    "#### \\boxed{9^{9^{9^{9}}}}",
    "The answer is \\boxed{((10^{7})!)!}",
]
TIMEOUT = 5.0
T = TypeVar("T")


def busy_children() -> int:
    """Processes of this session burning CPU right now (hung workers left behind would show up here)."""
    import psutil

    me = psutil.Process(os.getpid())
    kids = me.children(recursive=True)
    for k in kids:
        k.cpu_percent(None)
    psutil.cpu_percent(0.5)
    return sum(1 for k in kids if k.is_running() and k.cpu_percent(None) > 50)


def median_run(fn: Callable[[], T], repeats: int = 5) -> tuple[T, float]:
    """Result of the last run and the median wall time of ``repeats`` runs (tiny batches are noisy)."""
    times = []
    for _ in range(repeats):
        out, seconds = timed(fn)
        times.append(seconds)
    return out, statistics.median(times)


def main() -> None:
    clean = gsm8k_rows(400)
    poisoned = list(clean)
    rng = random.Random(0)
    positions = sorted(rng.sample(range(len(clean)), len(PATHOLOGICAL)))
    for offset, (pos, text) in enumerate(zip(positions, PATHOLOGICAL, strict=True)):
        poisoned.insert(pos + offset, {**clean[pos], "completion": text, "is_correct": False})

    with Engine("gsm8k", workers=2, timeout=TIMEOUT) as engine:
        engine.score(clean[:20])  # start the workers: the figures below are steady-state
        before, t_before = median_run(lambda: engine.score(clean))
        mixed, t_mixed = timed(lambda: engine.score(poisoned))
        busy = busy_children()  # hung workers left running would show here
        after, t_after = median_run(lambda: engine.score(clean))
        stats = engine.pool.stats

    statuses = {s.value: sum(r.status is s for r in mixed) for s in Status}
    same = [r.value for r in before] == [r.value for r in after]
    clean_in_mixed = [r.value for r, row in zip(mixed, poisoned, strict=True) if row["completion"] not in PATHOLOGICAL]
    print(f"P2 poisoned batch, timeout {TIMEOUT:g}s, {machine()}")
    print(
        table(
            [
                ("batch", "rows", "seconds", "statuses"),
                ("clean (before, median of 5)", str(len(before)), f"{t_before:.2f}", f"{sum(r.ok for r in before)} ok"),
                ("poisoned", str(len(mixed)), f"{t_mixed:.2f}", ", ".join(f"{v} {k}" for k, v in statuses.items())),
                ("clean (after, median of 5)", str(len(after)), f"{t_after:.2f}", f"{sum(r.ok for r in after)} ok"),
            ]
        )
    )
    limit = t_before + TIMEOUT + 1.0
    print(f"poisoned {t_mixed:.2f}s <= clean {t_before:.2f}s + {TIMEOUT:g}s + 1s = {limit:.2f}s: {t_mixed <= limit}")
    print(f"every row present: {len(mixed) == len(poisoned)}; timeouts: {statuses['timeout']} (expected 4)")
    print(f"clean rows inside the poisoned batch scored as before: {clean_in_mixed == [r.value for r in before]}")
    print(f"clean after / clean before: {t_after / t_before:.2f}x time, identical results: {same}")
    print(f"workers killed on timeout: {stats.killed_timeout}; busy child processes after the poisoned batch: {busy}")


if __name__ == "__main__":
    main()
