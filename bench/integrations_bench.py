"""Integrations benchmark: each adapter against the framework behaviour it replaces, side by side in one run.

I1 (TRL). A batch of completions scored by a sync reward function the way TRL calls one (a single call in the
training loop, the function looping over the batch) versus ``trl_reward`` over the same function (the batch
through the engine's worker processes). Two rewards: a slow one (50 ms of waiting per completion, standing for
a sandboxed test run or a remote check) and the cheap built-in GSM8K rule reward on real model solutions, where
worker processes cannot beat a plain loop and ``kind="inline"`` is the right choice.

I2 (AReaL). Rollouts awaited concurrently, a few of them hanging forever, through (a) a baseline reproducing
the documented mechanism of AReaL's wrapper (``ProcessPoolExecutor`` + ``asyncio.wait_for``, timeouts retried,
0 after the last) and (b) rewardflow's ``AsyncRewardWrapper``. Reported: correct scores, failures reported as
failures, failures disguised as 0, wall time, and worker processes still busy with a hung call afterwards.

Run: ``PYTHONPATH=. python bench/integrations_bench.py`` (about a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from importlib.resources import files
from typing import Any

from rewardflow.errors import RewardFailedError
from rewardflow.integrations.areal import AsyncRewardWrapper
from rewardflow.integrations.trl import trl_reward
from rewardflow.rules.math import gsm8k_reward


def slow_check(completion: str, answer: str, **_: Any) -> float:
    """A reward that waits 50 ms per completion (sandboxed execution, a remote verifier)."""
    time.sleep(0.05)
    return float(completion.strip().endswith(answer))


def gsm8k_value(completion: str, answer: str, **_: Any) -> float:
    return gsm8k_reward(completion, answer=answer).value


def areal_reward(prompt: str, completions: str, prompt_ids: list[int], completion_ids: list[int], **data: Any) -> float:
    """AReaL's signature; 'hang' never returns (a runaway sympy call), everything else takes 20 ms."""
    if completions == "hang":
        while True:
            pass
    time.sleep(0.02)
    return float(completions == data["answer"])


def trl_loop(reward: Any, prompts: list[str], completions: list[str], answers: list[str]) -> list[float]:
    """How a plain sync reward function scores TRL's batch: one completion after another, in the caller."""
    return [reward(c, a) for c, a in zip(completions, answers, strict=True)]


def bench_trl(n: int, workers: int) -> list[str]:
    lines = ["## I1: TRL batch, plain sync reward function vs trl_reward", ""]
    lines.append("| reward | batch | plain function (TRL today) | trl_reward | ratio |")
    lines.append("|---|---|---|---|---|")
    prompts = ["q"] * n
    answers = ["7"] * n
    completions = [f"... {'7' if i % 2 else '8'}" for i in range(n)]
    fn = trl_reward(slow_check, workers=workers, timeout=10)
    fn(prompts=prompts[:workers], completions=completions[:workers], answer=answers[:workers])  # start workers
    t_base, base = _best(lambda: trl_loop(slow_check, prompts, completions, answers), repeat=1)
    t_ours, ours = _best(lambda: fn(prompts=prompts, completions=completions, answer=answers, trainer_state=None), 3)
    fn.close()
    assert ours == base
    lines.append(
        f"| 50 ms check, {workers} workers | {n} | {t_base:.2f} s | {t_ours:.2f} s | {t_base / t_ours:.1f}x faster |"
    )

    rows = _gsm8k_rows(n * 8)
    completions = [r["completion"] for r in rows]
    answers = [r["answer"] for r in rows]
    prompts = [r["prompt"] for r in rows]
    timings = {}
    for label, options in (("process, 2 workers", {"workers": 2}), ("inline", {"kind": "inline"})):
        fn = trl_reward(gsm8k_value, timeout=10, **options)
        fn(prompts=prompts[:4], completions=completions[:4], answer=answers[:4])  # warm up (imports, workers)
        timings[label], ours = _best(lambda fn=fn: fn(prompts=prompts, completions=completions, answer=answers), 5)
        fn.close()
    t_base, base = _best(lambda: trl_loop(gsm8k_value, prompts, completions, answers), 5)
    assert ours == base
    for label, t in timings.items():
        ratio = t_base / t
        verdict = f"{ratio:.1f}x faster" if ratio >= 1 else f"{1 / ratio:.1f}x slower"
        lines.append(f"| GSM8K rule, {label} | {len(rows)} | {t_base:.3f} s | {t:.3f} s | {verdict} |")
    lines.append("")
    return lines


def _best(call: Any, repeat: int) -> tuple[float, Any]:
    """Best wall time of ``repeat`` runs, and the last result."""
    best = float("inf")
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = call()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _gsm8k_rows(n: int) -> list[dict[str, Any]]:
    path = files("rewardflow.data") / "gsm8k_example_solutions.jsonl.gz"
    rows = []
    with gzip.open(str(path), "rt", encoding="utf-8") as f:
        for line in f:
            rows.append(json.loads(line))
            if len(rows) == n:
                break
    return rows


class ExecutorWrapperBaseline:
    """The mechanism AReaL's wrapper documents: a shared ProcessPoolExecutor, ``asyncio.wait_for`` around each
    call, timeouts retried ``max_retries`` times, then 0. (Reimplemented from that description for comparison.)"""

    def __init__(self, reward_fn: Any, timeout_seconds: float, max_workers: int, max_retries: int) -> None:
        self.reward_fn = reward_fn
        self.timeout = timeout_seconds
        self.max_retries = max_retries
        self.executor = ProcessPoolExecutor(max_workers=max_workers)

    async def __call__(self, *args: Any, **kwargs: Any) -> float:
        loop = asyncio.get_running_loop()
        for _ in range(self.max_retries + 1):
            try:
                future = loop.run_in_executor(self.executor, partial(self.reward_fn, *args, **kwargs))
                return await asyncio.wait_for(future, self.timeout)
            except asyncio.TimeoutError:
                continue
        return 0.0


def _descendants() -> dict[int, str]:
    """pid -> state of every process descended from this one (forkserver workers are grandchildren)."""
    parent_of: dict[int, tuple[int, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent_of[int(entry)] = (int(fields[1]), fields[0])
    found: dict[int, str] = {}
    frontier = {os.getpid()}
    while frontier:
        frontier = {pid for pid, (ppid, _) in parent_of.items() if ppid in frontier and pid not in found}
        found.update({pid: parent_of[pid][1] for pid in frontier})
    return found


def _spinning() -> int:
    """Descendant processes still running on a CPU (a hung reward spins), a second after shutdown."""
    time.sleep(1.0)
    return sum(1 for state in _descendants().values() if state == "R")


async def _run_rollouts(wrapper: Any, completions: list[str]) -> tuple[list[Any], float]:
    await wrapper("p", "42", [1], [2], answer="42")  # warm up: worker start-up is not what is measured
    t0 = time.perf_counter()
    calls = [wrapper("p", c, [1], [2], answer="42") for c in completions]
    out = await asyncio.gather(*calls, return_exceptions=True)
    return list(out), time.perf_counter() - t0


def bench_areal(n: int, hangs: int, timeout: float, workers: int) -> list[str]:
    completions = ["hang" if i % (n // hangs) == 0 else ("42" if i % 3 else "41") for i in range(n)]
    truth = [None if c == "hang" else float(c == "42") for c in completions]
    lines = [f"## I2: AReaL, {n} rollouts awaited together, {hangs} hang forever (timeout {timeout:g} s)", ""]
    lines.append(
        "| wrapper | correct scores | failures reported | failures returned as 0 | wrong scores | wall time "
        "| hung workers still running after shutdown |"
    )
    lines.append("|---|---|---|---|---|---|---|")
    for label, make in (
        (
            f"baseline: ProcessPoolExecutor + wait_for, {workers} workers, retries 3",
            lambda: ExecutorWrapperBaseline(areal_reward, timeout, workers, 3),
        ),
        (
            f"rewardflow AsyncRewardWrapper, {workers} workers",
            lambda: AsyncRewardWrapper(areal_reward, timeout, workers, 3),
        ),
    ):
        wrapper = make()
        out, wall = asyncio.run(_run_rollouts(wrapper, completions))
        correct = sum(1 for o, t in zip(out, truth, strict=True) if t is not None and o == t)
        reported = sum(1 for o in out if isinstance(o, RewardFailedError))
        zeros_for_failures = sum(1 for o, t in zip(out, truth, strict=True) if t is None and o == 0.0)
        wrong = sum(1 for o, t in zip(out, truth, strict=True) if t is not None and o != t)
        if isinstance(wrapper, ExecutorWrapperBaseline):
            pids = list(wrapper.executor._processes or {})  # to clean up after measuring
            wrapper.executor.shutdown(wait=False, cancel_futures=True)
        else:
            pids = []
            AsyncRewardWrapper.close_all()
        left = _spinning()
        lines.append(
            f"| {label} | {correct}/{n - hangs} | {reported} | {zeros_for_failures} | {wrong} | {wall:.1f} s | {left} |"
        )
        for pid in pids:  # the baseline's hung workers would otherwise spin until this script exits
            try:
                os.kill(pid, 9)
            except OSError:
                pass
    lines.append("")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--rollouts", type=int, default=40)
    parser.add_argument("--hangs", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=1.0)
    args = parser.parse_args()
    lines = [f"cpus: {os.cpu_count()}", ""]
    lines += bench_trl(args.batch, args.workers)
    lines += bench_areal(args.rollouts, args.hangs, args.timeout, workers=2)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
