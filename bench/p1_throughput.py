"""P1: gsm8k throughput on the 5,276 labelled solutions, 2 workers vs. sequential math-verify, same rows.

Baseline: what a user writes with math-verify alone, one process, one row at a time:
``verify(parse(gold), parse(completion))`` with math-verify's defaults. Ours: ``Engine("gsm8k", workers=2)``.
Both run here, in one process, on the same rows; the ratio is printed. Agreement with the labels is printed
for both, since speed without correctness is no result.

    python bench/p1_throughput.py
"""

from __future__ import annotations

import logging

from _common import gold_of, gsm8k_rows, machine, speed_row, table, timed

from rewardflow import Engine


def main() -> None:
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    from math_verify import parse, verify

    rows = gsm8k_rows()
    n = len(rows)
    labels = [bool(r["is_correct"]) for r in rows]

    def baseline() -> list[bool]:
        return [bool(verify(parse(gold_of(r)), parse(r["completion"]))) for r in rows]

    base, t_base = timed(baseline)
    with Engine("gsm8k", workers=2, timeout=10) as engine:
        cold, t_cold = timed(lambda: engine.score(rows))  # includes starting the worker processes
        warm, t_warm = timed(lambda: engine.score(rows))
    with Engine("gsm8k", kind="inline") as inline:
        one, t_one = timed(lambda: inline.score(rows))  # same reward, one core, no processes
    agree = {
        "base": sum(b == lab for b, lab in zip(base, labels, strict=True)),
        "ours": sum((r.value == 1.0) == lab for r, lab in zip(warm, labels, strict=True)),
        "one": sum((r.value == 1.0) == lab for r, lab in zip(one, labels, strict=True)),
    }
    assert [r.value for r in cold] == [r.value for r in warm] == [r.value for r in one]
    print(f"P1 gsm8k throughput, {n} rows, {machine()}")
    agreement = {k: f"{v}/{n}" for k, v in agree.items()}
    print(
        table(
            [
                ("run", "seconds", "rows/s", "vs baseline", "agreement with labels"),
                speed_row("math-verify sequential (baseline)", t_base, n, t_base, agreement["base"]),
                speed_row("rewardflow 2 workers, cold", t_cold, n, t_base, agreement["ours"]),
                speed_row("rewardflow 2 workers, warm", t_warm, n, t_base, agreement["ours"]),
                speed_row("rewardflow gsm8k inline (1 core)", t_one, n, t_base, agreement["one"]),
            ]
        )
    )
    print(f"target >= 1.8x: warm {t_base / t_warm:.2f}x, cold {t_base / t_cold:.2f}x")


if __name__ == "__main__":
    main()
