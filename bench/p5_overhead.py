"""P5: engine overhead per sample for a trivial inline reward, measured against calling the function directly.

Both loops run here on the same 200,000 samples; the overhead is ``(engine - direct) / n``. Target: <= 20 us.
The same trivial reward through the process pool is printed too, for the cost of isolation.

    python bench/p5_overhead.py
"""

from __future__ import annotations

import statistics

from _common import machine, table, timed

from rewardflow import Engine, Sample

N = 200_000


def trivial(completion: str) -> float:
    return 1.0 if completion else 0.0


def main() -> None:
    samples = [Sample("prompt", f"completion {i}") for i in range(N)]

    def direct() -> list[float]:
        return [trivial(completion=s.completion) for s in samples]

    with Engine(trivial, kind="inline") as engine:
        runs = [(timed(direct)[1], timed(lambda: engine.score(samples))[1]) for _ in range(5)]
    t_direct = statistics.median(r[0] for r in runs)
    t_engine = statistics.median(r[1] for r in runs)
    overhead_us = (t_engine - t_direct) / N * 1e6
    pool_n = 50_000
    with Engine(trivial, workers=2) as pooled:
        pooled.score(samples[:100])
        _, t_pool = timed(lambda: pooled.score(samples[:pool_n]))
    print(f"P5 engine overhead, trivial reward, {N} samples, median of 5, {machine()}")
    print(
        table(
            [
                ("path", "seconds", "us/sample"),
                ("direct function calls", f"{t_direct:.3f}", f"{t_direct / N * 1e6:.2f}"),
                ("Engine(kind='inline').score", f"{t_engine:.3f}", f"{t_engine / N * 1e6:.2f}"),
                (f"Engine(workers=2).score ({pool_n} samples)", f"{t_pool:.3f}", f"{t_pool / pool_n * 1e6:.2f}"),
            ]
        )
    )
    print(f"inline engine overhead: {overhead_us:.2f} us/sample (target <= 20 us): {overhead_us <= 20}")


if __name__ == "__main__":
    main()
