"""P3: LLM-as-judge throughput against a judge server with 100 ms latency per request, side by side in one run.

Variants (same judgments, same server, same parse):

  (a) seed    the seed guides' synchronous judge: a new ``openai.OpenAI`` client per call, called sequentially;
  (b) pool2   the same function through a 2-worker process pool, ``loop.run_in_executor`` + ``asyncio.gather``
              (AReaL ``AsyncRewardWrapper`` style; the pool is started and warmed before timing);
  (c) rf      rewardflow: ``Engine(judge_score(..., concurrency=64))`` with its default HTTP backend (aiohttp),
              a cold engine, one ``score()`` call; run ``--rf-runs`` times (default 3), median in the table;
  (d) rf-httpx  the same with ``http_backend="httpx"`` (reference: why aiohttp is the default);
  (e) aopenai one shared ``openai.AsyncOpenAI`` awaited natively under ``asyncio.Semaphore(64)`` (the
              tongyi_deepresearch pattern with a concurrency limit added);
  (f) httpx   one ``httpx.AsyncClient`` with a 64-connection pool under ``asyncio.Semaphore(64)`` (reference: the
              cost of httpcore's pool, which is why rewardflow does not use a single httpx pool).

The server (``rewardflow.judge.testing``) runs in its own process so it does not share the client's GIL. Server
capacity at concurrency 64 is ``n x latency / 64`` (1.5625 s for 1,000 x 100 ms); "efficiency" is that ideal
divided by the measured wall time. Every variant's scores are checked against the expected ones (a marker in each
completion fixes the judge's score), so a fast but wrong variant would fail the run.

The 1-minute load average is printed before and after: on a shared machine, other processes' CPU shows up
directly in (c)-(f).

Run:  PYTHONPATH=. python bench/p3_judge.py              ((a) and (b) on 200 judgments, extrapolated; ~1 minute)
      PYTHONPATH=. python bench/p3_judge.py --sync-n 0    (all 1,000 for every variant; ~4 minutes on 2 cores)

Overload (g), in the same run unless ``--skip overload``: the fake server with a capacity (``--capacity 8``
requests computed at full speed; more share it, so latency grows with load) and no abort of abandoned requests
(like llama-server), ``--overload-n`` judgments with a per-attempt timeout of 3.5x the no-load latency, no retry
after a timeout (an unknown server). Side by side: (g1) fixed concurrency at the capacity (the reference), (g2)
fixed concurrency 4x too high, (g3) adaptive concurrency with the same too-high maximum. Goodput = judgments that
came back ok per second of wall time. Target: (g3) >= 1.5x (g2).

      PYTHONPATH=. python bench/p3_judge.py --only-overload   (just (g); ~1 minute)

(a) is sequential and (b) is two sequential lanes, so their time per judgment is constant and the extrapolation
from 200 to 1,000 is linear; the output says when it extrapolated.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import platform
import sys
import time
import urllib.request
from concurrent.futures import ProcessPoolExecutor
from typing import Any

MODEL = "fake-judge"
CONCURRENCY = 64
PROMPT = "Rate the response to the question from 0 to 10.\nQuestion: {prompt}\nResponse: {completion}\nScore:"


def seed_judge(prompt: str, completion: str, base_url: str) -> float:
    """The seed's judge, as written in the guides: a new client per call, no timeout handling, no retry."""
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key="EMPTY")
    response = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": PROMPT.format(prompt=prompt, completion=completion)}],
        temperature=0.0,
    )
    return float(json.loads(response.choices[0].message.content)["score"]) / 10.0


def make_rows(n: int) -> list[dict[str, Any]]:
    return [
        {"prompt": f"What is {i} + {i}?", "completion": f"It is {2 * i}. [[score={i % 11}]]", "expected": (i % 11) / 10}
        for i in range(n)
    ]


def check(name: str, values: list[float | None], rows: list[dict[str, Any]]) -> None:
    wrong = [i for i, (v, r) in enumerate(zip(values, rows, strict=True)) if v is None or abs(v - r["expected"]) > 1e-9]
    if wrong:
        raise SystemExit(f"{name}: {len(wrong)} wrong or failed judgments (first: row {wrong[0]}: {values[wrong[0]]})")


def run_seed(rows: list[dict[str, Any]], base_url: str) -> float:
    start = time.perf_counter()
    values = [seed_judge(r["prompt"], r["completion"], base_url) for r in rows]
    wall = time.perf_counter() - start
    check("seed", values, rows)
    return wall


def run_pool(rows: list[dict[str, Any]], base_url: str) -> float:
    async def main(pool: ProcessPoolExecutor) -> list[float]:
        loop = asyncio.get_running_loop()
        calls = [
            loop.run_in_executor(pool, functools.partial(seed_judge, r["prompt"], r["completion"], base_url))
            for r in rows
        ]
        return await asyncio.gather(*calls)

    with ProcessPoolExecutor(max_workers=2) as pool:
        list(
            pool.map(seed_judge, ["warm"] * 2, ["up [[score=0]]"] * 2, [base_url] * 2)
        )  # workers started, openai imported
        start = time.perf_counter()
        values = asyncio.run(main(pool))
        wall = time.perf_counter() - start
    check("pool2", values, rows)
    return wall


def run_rewardflow(rows: list[dict[str, Any]], base_url: str, backend: str) -> tuple[float, dict[str, Any]]:
    from rewardflow import Engine
    from rewardflow.judge import judge_score

    reward = judge_score(
        base_url=base_url,
        model=MODEL,
        concurrency=CONCURRENCY,
        cache=False,  # every judgment reaches the server, as in the other variants
        http_backend=backend,
        template="Rate the response from 0 to 10.\nQuestion: {prompt}\nResponse: {completion}",
    )
    samples = [{"prompt": r["prompt"], "completion": r["completion"]} for r in rows]
    with Engine(reward) as engine:
        start = time.perf_counter()
        results = engine.score(samples)
        wall = time.perf_counter() - start
    check(f"rewardflow-{backend}", [r.value for r in results], rows)
    usage = reward.usage()
    reward.close()
    return wall, usage


def run_async_openai(rows: list[dict[str, Any]], base_url: str) -> float:
    from openai import AsyncOpenAI

    async def main() -> list[float]:
        client = AsyncOpenAI(base_url=base_url, api_key="EMPTY")
        sem = asyncio.Semaphore(CONCURRENCY)

        async def one(r: dict[str, Any]) -> float:
            async with sem:
                response = await client.chat.completions.create(
                    model=MODEL,
                    messages=[{"role": "user", "content": PROMPT.format(**r)}],
                    temperature=0.0,
                )
            return float(json.loads(response.choices[0].message.content)["score"]) / 10.0

        try:
            return await asyncio.gather(*(one(r) for r in rows))
        finally:
            await client.close()

    start = time.perf_counter()
    values = asyncio.run(main())
    wall = time.perf_counter() - start
    check("aopenai", values, rows)
    return wall


def run_httpx_single_pool(rows: list[dict[str, Any]], base_url: str) -> float:
    import httpx

    async def main() -> list[float]:
        limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
        sem = asyncio.Semaphore(CONCURRENCY)
        async with httpx.AsyncClient(limits=limits, timeout=60, trust_env=False) as client:

            async def one(r: dict[str, Any]) -> float:
                body = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT.format(**r)}]}
                async with sem:
                    response = await client.post(base_url + "/chat/completions", json=body)
                content = response.json()["choices"][0]["message"]["content"]
                return float(json.loads(content)["score"]) / 10.0

            return await asyncio.gather(*(one(r) for r in rows))

    start = time.perf_counter()
    values = asyncio.run(main())
    wall = time.perf_counter() - start
    check("httpx", values, rows)
    return wall


def run_overload_variant(
    rows: list[dict[str, Any]], base_url: str, concurrency: int, adaptive: bool, timeout: float
) -> tuple[float, int, dict[str, Any]]:
    """One overload variant: wall time, judgments ok, client usage (limits included)."""
    from rewardflow import Engine
    from rewardflow.judge import judge_score

    reward = judge_score(
        base_url=base_url,
        model=f"{MODEL}-{concurrency}-{adaptive}",
        concurrency=concurrency,
        adaptive=adaptive,
        timeout=timeout,
        cache=False,
        template="Rate the response from 0 to 10.\nQuestion: {prompt}\nResponse: {completion}",
    )
    samples = [{"prompt": r["prompt"], "completion": r["completion"]} for r in rows]
    with Engine(reward) as engine:
        start = time.perf_counter()
        results = engine.score(samples)
        wall = time.perf_counter() - start
        states = list(reward.client._states.values())
        usage = reward.usage()
        if states:
            usage["limit_final"] = states[0].limit.limit
            usage["limit_lowest"] = states[0].limit.lowest
            usage["limit_cuts"] = states[0].limit.cuts
    ok = [(r.value, row) for r, row in zip(results, rows, strict=True) if r.ok]
    wrong = [v for v, row in ok if abs(v - row["expected"]) > 1e-9]
    if wrong:
        raise SystemExit(f"overload c={concurrency} adaptive={adaptive}: {len(wrong)} wrong judgments")
    reward.close()
    return wall, len(ok), usage


def run_overload(args: argparse.Namespace) -> None:
    from rewardflow.judge.testing import spawn_fake_server

    n, cap, latency = args.overload_n, args.capacity, args.overload_latency
    timeout = args.overload_timeout or 3.5 * latency
    high = 4 * cap
    print()
    print(
        f"(g) overload: {n} judgments against a server of capacity {cap} x {latency * 1000:.0f} ms "
        f"(goodput ceiling {cap / latency:.1f}/s), abandoned requests not aborted, per-attempt timeout "
        f"{timeout:g} s, no retry after a timeout"
    )
    print(f"load average before: {load()}")
    variants = [
        (f"(g1) fixed concurrency {cap} (= capacity, reference)", cap, False),
        (f"(g2) fixed concurrency {high} (4x too high)", high, False),
        (f"(g3) adaptive concurrency, max {high}", high, True),
    ]
    table = []
    for name, concurrency, adaptive in variants:
        args_ = ["--capacity", str(cap)]
        with spawn_fake_server(latency=latency, args=args_) as base_url:
            wall, ok, usage = run_overload_variant(make_rows(n), base_url, concurrency, adaptive, timeout)
            stats = server_stats(base_url)
        table.append((name, wall, ok, usage, stats))
    print()
    print("| variant | wall (s) | ok | timed out / failed | goodput (ok/s) | server computed | limit (lowest, end) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, wall, ok, usage, stats in table:
        limit = (
            f"{usage['limit_lowest']:.1f}, {usage['limit_final']:.1f} ({usage['limit_cuts']} cuts)"
            if "limit_final" in usage and name.startswith("(g3)")
            else "fixed"
        )
        print(f"| {name} | {wall:.2f} | {ok} | {n - ok} | {ok / wall:.1f} | {stats['completed']} | {limit} |")
    g2 = table[1][2] / table[1][1]
    g3 = table[2][2] / table[2][1]
    ratio = f"{g3 / g2:.1f}x" if g2 > 0 else "infinite (g2 had no ok judgment)"
    print()
    print(f"- target (g3) goodput >= 1.5x (g2): {g3:.1f} / {g2:.1f} ok/s = {ratio}")
    print(f"- (g3) vs the reference (g1): {g3 / (table[0][2] / table[0][1]):.0%}")
    print(f"load average after: {load()}")


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f} (1, 5, 15 min)"


def versions() -> str:
    from importlib.metadata import version

    return ", ".join(f"{name} {version(name)}" for name in ("aiohttp", "httpx", "httpcore", "openai"))


def server_stats(base_url: str) -> dict[str, Any]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(base_url.removesuffix("/v1") + "/stats", timeout=10) as response:
        return json.loads(response.read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="judgments per variant")
    parser.add_argument("--sync-n", type=int, default=200, help="judgments for (a) and (b); 0 means --n")
    parser.add_argument("--latency", type=float, default=0.1, help="server latency per request, seconds")
    parser.add_argument("--rf-runs", type=int, default=3, help="times to run (c); the table shows the median")
    parser.add_argument(
        "--skip", action="append", default=[], help="skip: seed, pool2, rf-httpx, aopenai, httpx, overload"
    )
    parser.add_argument("--only-overload", action="store_true", help="run only the overload comparison (g)")
    parser.add_argument("--overload-n", type=int, default=400, help="judgments per overload variant")
    parser.add_argument("--capacity", type=int, default=8, help="overload: requests the server computes at once")
    parser.add_argument("--overload-latency", type=float, default=0.2, help="overload: no-load latency, seconds")
    parser.add_argument("--overload-timeout", type=float, default=0.0, help="overload: per-attempt timeout")
    args = parser.parse_args()
    if args.only_overload:
        run_overload(args)
        return
    from rewardflow.judge.testing import spawn_fake_server

    n = args.n
    sync_n = min(args.sync_n or n, n)
    rows, sync_rows = make_rows(n), make_rows(sync_n)
    ideal = n * args.latency / CONCURRENCY
    print(f"P3 judge throughput: {n} judgments, server latency {args.latency * 1000:.0f} ms")
    print(f"ideal at concurrency {CONCURRENCY}: {ideal:.4f} s")
    print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}, {versions()}")
    print(f"load average before: {load()}")
    table: list[tuple[str, int, float]] = []
    notes: list[str] = []
    with spawn_fake_server(latency=args.latency) as base_url:
        runs = [run_rewardflow(rows, base_url, "aiohttp") for _ in range(max(1, args.rf_runs))]
        walls = sorted(wall for wall, _ in runs)
        usage = runs[0][1]
        table.append(("(c) rewardflow, concurrency 64", n, walls[len(walls) // 2]))
        notes.append(
            f"(c) ran {len(walls)} times: " + ", ".join(f"{w:.3f}" for w in walls) + " s "
            f"(efficiency {ideal / walls[-1]:.1%} to {ideal / walls[0]:.1%}); median in the table"
        )
        notes.append(
            f"rewardflow client: {usage['requests']} requests, peak {usage['peak_concurrency']} in flight, "
            f"{usage['clients_created']} connection pool created, {usage['failures']} failures"
        )
        if "rf-httpx" not in args.skip:
            table.append(("(d) rewardflow, httpx backend", n, run_rewardflow(rows, base_url, "httpx")[0]))
        if "aopenai" not in args.skip:
            table.append(("(e) shared AsyncOpenAI + Semaphore(64)", n, run_async_openai(rows, base_url)))
        if "httpx" not in args.skip:
            table.append(("(f) one httpx pool + Semaphore(64)", n, run_httpx_single_pool(rows, base_url)))
        if "pool2" not in args.skip:
            table.append(("(b) seed fn in 2-process pool", sync_n, run_pool(sync_rows, base_url)))
        if "seed" not in args.skip:
            table.append(("(a) seed: sync, new client per call", sync_n, run_seed(sync_rows, base_url)))
        stats = server_stats(base_url)
    notes.append(f"server: {stats['requests']} requests, peak {stats['peak_inflight']} in flight")
    notes.append(f"load average after: {load()}")
    per = {name: wall / count for name, count, wall in table}
    seed_per = next((v for k, v in per.items() if k.startswith("(a)")), None)
    rf_per = per["(c) rewardflow, concurrency 64"]
    print()
    print(f"| variant | judgments run | wall (s) | ms / judgment | time for {n} (s) | vs (a) | efficiency |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, count, wall in sorted(table):
        scaled = per[name] * n
        extrapolated = "" if count == n else " (extrapolated)"
        speedup = f"{seed_per / per[name]:.1f}x" if seed_per else "-"
        print(
            f"| {name} | {count} | {wall:.3f} | {per[name] * 1000:.2f} | {scaled:.3f}{extrapolated} | {speedup} | "
            f"{ideal / scaled:.1%} |"
        )
    print()
    for note in notes:
        print("- " + note)
    rf_time = rf_per * n
    print(f"- target (c) >= 50x (a): {seed_per / rf_per:.1f}x" if seed_per else "- (a) skipped")
    print(f"- target (c) within 80% of capacity: {ideal:.4f} / {rf_time:.4f} = {ideal / rf_time:.1%}")
    if sync_n != n and not {"seed", "pool2"} <= set(args.skip):
        print(f"- (a) and (b) ran {sync_n} judgments; their time for {n} is extrapolated linearly")
    if "overload" not in args.skip:
        run_overload(args)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
