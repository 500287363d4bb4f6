"""P7: the Ray executor vs the local process pool, side by side in one run, on a local 2-CPU Ray.

Three measurements, each on the same rows for both executors, warm (workers/actors started before the clock):

* a 20 ms sleep reward, 2,000 samples, 2 workers vs 2 actors (target: Ray >= 90 % of the pool's rows/s);
* gsm8k on the 5,276 packaged solutions (target: Ray >= 50 % of the pool; chunked dispatch carries it); the
  results must be identical;
* a no-op reward, 20,000 samples: per-sample cost in microseconds (wall time per sample, and the driver's CPU
  time per sample, which is what one driver must pay for every rollout of a step on a big cluster);
* the cost of one Ray call (no-op reward, one sample per call): what chunking amortizes;
* actor start time: from creating an actor to its first answer (rewards loaded).

    python bench/p7_ray.py
"""

from __future__ import annotations

import os
import statistics
import time

from _common import gsm8k_rows, machine, table

from rewardflow import Engine, Sample

N_SLEEP = 2000
N_NOOP = 20000
N_CALLS = 2000


def sleep20(completion: str) -> float:
    time.sleep(0.02)
    return 1.0


def noop(completion: str) -> float:
    return 1.0


def run(engine: Engine, rows: list) -> tuple[list, float, float]:
    """(results, wall seconds, this process's CPU seconds): the pool or Ray started beforehand."""
    engine.score(rows[:64])  # warm: workers/actors up, rewards imported
    cpu, start = time.process_time(), time.perf_counter()
    out = engine.score(rows)
    return out, time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    t0 = time.perf_counter()
    ray.init(
        address="local", num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024 * 1024, log_to_driver=False
    )
    t_init = time.perf_counter() - t0
    print(f"P7 Ray executor vs process pool, local Ray with 2 CPUs, {machine()}, load {os.getloadavg()[0]:.2f}")
    rows_out = [("workload", "pool rows/s", "ray rows/s", "ray / pool", "target")]
    gsm = gsm8k_rows()
    sleepers = [Sample("p", str(i)) for i in range(N_SLEEP)]
    noops = [Sample("p", str(i)) for i in range(N_NOOP)]
    figures: dict[str, tuple[float, float]] = {}
    starts: list[float] = []
    for name, reward, rows, target in (
        ("sleep 20 ms", sleep20, sleepers, ">= 90 %"),
        ("gsm8k 5,276", "gsm8k", gsm, ">= 50 %"),
        ("no-op", noop, noops, "-"),
    ):
        with Engine(reward, workers=2, timeout=30) as pool:
            base, t_pool, cpu_pool = run(pool, rows)
        with Engine(reward, executor="ray", workers=2, timeout=30) as remote:
            got, t_ray, cpu_ray = run(remote, rows)
            starts.extend(remote.pool.stats.start_s)
        assert [(r.value, r.status, r.reason) for r in base] == [(r.value, r.status, r.reason) for r in got], name
        assert all(r.ok for r in got), name
        n = len(rows)
        figures[name] = (t_pool, t_ray)
        ratio = t_pool / t_ray
        rows_out.append((name, f"{n / t_pool:.0f}", f"{n / t_ray:.0f}", f"{100 * ratio:.0f} %", target))
        if name == "no-op":
            per = {
                "pool wall": t_pool / n,
                "ray wall": t_ray / n,
                "pool driver cpu": cpu_pool / n,
                "ray driver cpu": cpu_ray / n,
            }
    with Engine("gsm8k", executor="ray", workers=2, timeout=30, ray_options={"max_chunk": 1}) as unchunked:
        _, t_unchunked, _ = run(unchunked, gsm)  # what chunked dispatch buys on a cheap reward
    g_pool = figures["gsm8k 5,276"][0]
    n = len(gsm)
    rows_out.append(
        (
            "gsm8k, 1 sample/call",
            f"{n / g_pool:.0f}",
            f"{n / t_unchunked:.0f}",
            f"{100 * g_pool / t_unchunked:.0f} %",
            "-",
        )
    )
    with Engine(noop, executor="ray", workers=2, timeout=30, ray_options={"max_chunk": 1}) as single:
        _, t_call, cpu_call = run(single, noops[:N_CALLS])  # one Ray call per sample: the per-call cost
    print(table(rows_out))
    print("per-sample cost, no-op reward, 2 workers/actors, 20,000 samples:")
    for k, v in per.items():
        print(f"  {k}: {v * 1e6:.1f} us/sample")
    print(
        f"per Ray call (no-op, one sample per call, {N_CALLS} calls, 2 actors): wall {t_call / N_CALLS * 1e6:.0f} us, "
        f"driver cpu {cpu_call / N_CALLS * 1e6:.0f} us"
    )
    print(
        f"actor start (create -> ready, rewards loaded): median {1000 * statistics.median(starts):.0f} ms, "
        f"max {1000 * max(starts):.0f} ms over {len(starts)} actors; ray.init (local 2-CPU cluster) {t_init:.1f} s"
    )
    s_pool, s_ray = figures["sleep 20 ms"]
    g_pool, g_ray = figures["gsm8k 5,276"]
    print(f"target sleep >= 90 %: {100 * s_pool / s_ray:.0f} %; target gsm8k >= 50 %: {100 * g_pool / g_ray:.0f} %")
    ray.shutdown()


if __name__ == "__main__":
    main()
