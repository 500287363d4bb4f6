"""``rewardflow demo --code``: HumanEval's canonical solutions must all pass, their broken variants all fail."""

from __future__ import annotations

import time
from collections import Counter

from rich.console import Console
from rich.table import Table

from rewardflow.code.humaneval import rows
from rewardflow.code.reward import CodeReward
from rewardflow.engine import Engine
from rewardflow.types import Sample, Status

__all__ = ["run_demo"]

VARIANTS = ("canonical", "off_by_one", "wrong_return")


def run_demo(*, workers: int = 2, limit: int | None = None, console: Console | None = None) -> int:
    """Score 164 canonical solutions and two wrong variants of each; 0 when every one is judged right."""
    console = console or Console(stderr=True)
    data = [r for r in rows(VARIANTS) if limit is None or int(r["task_id"].split("/")[1]) < limit]
    console.print(f"HumanEval (MIT, (c) OpenAI): {len(data)} completions, variants {', '.join(VARIANTS)}")
    samples = [
        Sample(r["prompt"], r["completion"], row={"test": r["test"], "entry_point": r["entry_point"]}) for r in data
    ]
    start = time.perf_counter()
    with Engine(CodeReward(), workers=workers) as engine:
        results = engine.score(samples)
    elapsed = time.perf_counter() - start
    counts: Counter[tuple[str, str]] = Counter()
    levels: Counter[str] = Counter()
    wrong: list[str] = []
    for row, result in zip(data, results, strict=True):
        expected = 1.0 if row["variant"] == "canonical" else 0.0
        if result.status is not Status.OK:
            outcome = result.status.value
        else:
            outcome = "pass" if result.value == 1.0 else "fail"
            levels[str((result.info or {}).get("isolation"))] += 1
        counts[(row["variant"], outcome)] += 1
        if result.status is not Status.OK or result.value != expected:
            wrong.append(f"{row['task_id']} {row['variant']}: {result.status.value} {result.value} {result.reason}")
    table = Table(title="rewardflow demo --code: HumanEval")
    for column in ("variant", "rows", "pass", "fail", "error/timeout", "expected"):
        table.add_column(column)
    for variant in VARIANTS:
        n = sum(v for (name, _), v in counts.items() if name == variant)
        bad = counts[(variant, "error")] + counts[(variant, "timeout")]
        want = "all pass" if variant == "canonical" else "all fail"
        table.add_row(variant, str(n), str(counts[(variant, "pass")]), str(counts[(variant, "fail")]), str(bad), want)
    console.print(table)
    console.print(f"isolation: {dict(levels)}; {len(data) / elapsed:.1f} rows/s with {workers} workers")
    for line in wrong[:20]:
        console.print(f"[red]unexpected[/red] {line}")
    Console().print(f"judged as expected: [bold]{len(data) - len(wrong)} / {len(data)}[/bold]")
    return 0 if not wrong else 1
