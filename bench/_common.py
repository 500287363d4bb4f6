"""Shared helpers for the benchmarks: the GSM8K rows and a tiny table printer."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from typing import Any, TypeVar

from rewardflow.data import gsm8k_examples
from rewardflow.rules.math import gsm8k_gold

T = TypeVar("T")


def gsm8k_rows(limit: int | None = None) -> list[dict[str, Any]]:
    """The packaged 5,276 labelled GSM8K example solutions (or the first ``limit``)."""
    return list(gsm8k_examples(limit))


def gold_of(row: dict[str, Any]) -> str:
    return gsm8k_gold(row["answer"])


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def machine() -> str:
    import os

    return (
        f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}"
    )


def speed_row(label: str, seconds: float, n: int, base_seconds: float, extra: str = "") -> tuple[str, ...]:
    """One table row: label, seconds, rows/s, speed-up over the baseline, and an extra column."""
    return (label, f"{seconds:.2f}", f"{n / seconds:.0f}", f"{base_seconds / seconds:.2f}x", extra)


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
