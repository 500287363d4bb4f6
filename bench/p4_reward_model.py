"""P4: a reward model per sample (the seed's pattern) vs ``RewardModel.score`` over the whole batch.

Both score the same 512 GSM8K completions (prompt + solution as a text pair) with the same model, the real
all-MiniLM-L6-v2 encoder loaded as a sequence classifier (its one-logit head is random but seeded identically, so
both must produce the same scores: checked below). Both run side by side in this process, alternating, best of
``ROUNDS``; model loading is timed separately and excluded from the throughput.

* seed: a reward function that loads the model lazily into a global and runs one forward pass per completion,
  ``max_length`` hard-coded, called sequentially;
* rewardflow: ``RewardModel.score(samples)``: one call, token-budget micro-batches sorted by length (default
  budget on the CPU: 1024 tokens; the 8192 GPU default is measured too).

Extra rows: batches of 64 in input order (what batching without sorting costs in padding); for context, the
seed as it was deployed: a per-sample reward in 2 worker processes, each loading its own copy of the model (on
64 samples), with rewardflow's per-worker thread cap and without it (what a plain process pool does); and the
documented ``dtype="bfloat16"`` override on the CPU (different arithmetic, so not the headline). Then the
compute ceiling: the exact FLOPs of the 512 forward passes (``torch.utils.flop_counter``) against this CPU's
fp32 matmul rate, i.e. the best speed-up over the seed that *any* implementation doing the same fp32
arithmetic could reach here. Last, the offload lifecycle: onload/offload times and resident memory per mode
(on a CPU-only machine ``cpu`` mode has nothing to move). Targets: >= 5x samples/s, padding waste <= 15 %.

    cd bench && python p4_reward_model.py
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

from _common import gsm8k_rows, machine, table, timed

from rewardflow import Sample
from rewardflow.models import RewardModel
from rewardflow.models.similarity import default_encoder_path

N = 512
ROUNDS = 2
WORKER_N = 64
MINILM = str(default_encoder_path())

# ----------------------------------------------------------------------------- the seed's pattern

_seed_model: Any = None
_seed_tokenizer: Any = None


def seed_reward(prompt: str, completions: str, prompt_ids: Any = None, completion_ids: Any = None, **kw: Any) -> float:
    """The seed proposal's reward: a lazily loaded global model, one forward pass per completion."""
    global _seed_model, _seed_tokenizer
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if _seed_model is None:
        _seed_tokenizer = AutoTokenizer.from_pretrained(MINILM)
        torch.manual_seed(0)  # the same random head as RewardModel's below
        _seed_model = AutoModelForSequenceClassification.from_pretrained(MINILM, num_labels=1)  # .cuda() in the seed
        _seed_model.eval()
    inputs = _seed_tokenizer(prompt, completions, return_tensors="pt", truncation=True, max_length=512)
    with torch.no_grad():
        return _seed_model(**inputs).logits[0, 0].item()


# ----------------------------------------------------------------------------- helpers


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def load_rm(**kwargs: Any) -> tuple[RewardModel, float]:
    import torch

    torch.manual_seed(0)
    rm = RewardModel(MINILM, num_labels=1, max_length=512, allow_missing_weights=True, **kwargs)
    _, seconds = timed(rm.load)
    return rm, seconds


def main() -> None:
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    rows = gsm8k_rows(N)
    samples = [Sample(r["prompt"], r["completion"]) for r in rows]
    load_start = os.getloadavg()[0]

    _, seed_load = timed(lambda: seed_reward(samples[0].prompt, samples[0].completion))
    rm, rm_load = load_rm()
    rm.score(samples[:8])  # warm-up
    seed_times, rm_times = [], []
    for _ in range(ROUNDS):
        seed_scores, t = timed(lambda: [seed_reward(s.prompt, s.completion) for s in samples])
        seed_times.append(t)
        rm_scores, t = timed(lambda: rm.score(samples))
        rm_times.append(t)
        print(f"round: seed {seed_times[-1]:.1f} s, rewardflow {t:.1f} s", flush=True)
    report = rm.last_report
    assert report is not None
    big, _ = load_rm(token_budget=8192)
    _, t_big = timed(lambda: big.score(samples))
    big_report = big.last_report
    assert big_report is not None
    in_order, _ = load_rm(token_budget=10**9, max_batch_size=64)
    (_, order_real, order_padded), t_order = timed(lambda: _in_input_order(in_order, samples))
    workers_n = WORKER_N
    t_workers, lat_workers = _seed_in_workers(samples[:WORKER_N], None)
    t_nocap, lat_nocap = _seed_in_workers(samples[:WORKER_N], 0)
    bf16, _ = load_rm(dtype="bfloat16")
    bf16.score(samples[:8])
    bf16_scores, t_bf16 = timed(lambda: bf16.score(samples))
    flops = _seed_flops(samples)
    peak = _matmul_peak()

    diff = max(abs(a - b) for a, b in zip(seed_scores, rm_scores, strict=True))
    t_seed, t_rm = min(seed_times), min(rm_times)
    speedup = t_seed / t_rm
    print(f"P4 reward model, {N} GSM8K completions, all-MiniLM-L6-v2 as a sequence classifier, CPU fp32")
    print(f"{machine()}, torch {torch.__version__} ({torch.get_num_threads()} threads)")
    print(f"load average at start {load_start:.1f}, at end {os.getloadavg()[0]:.1f} (other work shares these cores)")
    print(f"best of {ROUNDS} alternating rounds; all rounds (s): seed {_fmt(seed_times)}, rewardflow {_fmt(rm_times)}")
    print(
        table(
            [
                ("path", "seconds", "samples/s", "vs seed", "padding waste", "forward passes"),
                ("seed: one forward per completion", f"{t_seed:.2f}", f"{N / t_seed:.1f}", "1.00x", "0.0%", str(N)),
                (
                    f"RewardModel.score, default budget ({rm.token_budget} on CPU)",
                    f"{t_rm:.2f}",
                    f"{N / t_rm:.1f}",
                    f"{speedup:.2f}x",
                    f"{report.padding_waste:.1%}",
                    str(report.micro_batches),
                ),
                (
                    "RewardModel.score, budget 8192 (the GPU default)",
                    f"{t_big:.2f}",
                    f"{N / t_big:.1f}",
                    f"{t_seed / t_big:.2f}x",
                    f"{big_report.padding_waste:.1%}",
                    str(big_report.micro_batches),
                ),
                (
                    "ablation: batches of 64 in input order",
                    f"{t_order:.2f}",
                    f"{N / t_order:.1f}",
                    f"{t_seed / t_order:.2f}x",
                    f"{1 - order_real / order_padded:.1%}",
                    str(-(-N // 64)),
                ),
                (
                    f"context: seed in 2 reward workers ({workers_n} samples, loads incl.)",
                    f"{t_workers:.2f}",
                    f"{workers_n / t_workers:.1f}",
                    f"{(workers_n / t_workers) / (N / t_seed):.2f}x",
                    "0.0%",
                    str(workers_n),
                ),
                (
                    "  same, no thread cap (worker_threads=0, as a plain process pool)",
                    f"{t_nocap:.2f}",
                    f"{workers_n / t_nocap:.1f}",
                    f"{(workers_n / t_nocap) / (N / t_seed):.2f}x",
                    "0.0%",
                    str(workers_n),
                ),
                (
                    "context: RewardModel.score, dtype=bfloat16 override",
                    f"{t_bf16:.2f}",
                    f"{N / t_bf16:.1f}",
                    f"{t_seed / t_bf16:.2f}x",
                    f"{report.padding_waste:.1%}",
                    str(report.micro_batches),
                ),
            ]
        )
    )
    print(f"max |seed - rewardflow| score: {diff:.1e} (same model, same inputs; must be < 1e-4: {diff < 1e-4})")
    print(
        f"seed in 2 workers, median call: {lat_workers * 1000:.0f} ms with rewardflow's thread cap "
        f"(1 torch thread per worker here), {lat_nocap * 1000:.0f} ms without (every worker one thread per CPU)"
    )
    print(f"model load: seed {seed_load:.2f} s (inside its first call), RewardModel {rm_load:.2f} s (page cache warm)")
    bf16_diff = max(abs(a - b) for a, b in zip(bf16_scores, rm_scores, strict=True))
    print(f"bf16 override: max |bf16 - fp32| score {bf16_diff:.1e} (the scale of the scores: {_spread(rm_scores):.1e})")
    ceiling = peak / (flops / t_seed)
    print(
        f"compute ceiling: {flops / N / 1e9:.2f} GFLOP per sample (exact count); seed runs at "
        f"{flops / t_seed / 1e9:.0f} GFLOP/s, RewardModel.score at {flops / t_rm / 1e9:.0f} GFLOP/s, this CPU's fp32 "
        f"matmul peak is {peak / 1e9:.0f} GFLOP/s, so no fp32 implementation can beat the seed by more than "
        f"{ceiling:.2f}x here (>= 5x reachable: {ceiling >= 5})"
    )
    print(
        f"targets: speed-up {speedup:.2f}x (>= 5x: {speedup >= 5}), "
        f"padding waste {report.padding_waste:.1%} (<= 15 %: {report.padding_waste <= 0.15})"
    )
    lifecycle()


def _in_input_order(rm: RewardModel, samples: list[Sample]) -> tuple[list[float], int, int]:
    """Fixed chunks of 64 in input order, each one padded batch: batching without sorting."""
    out: list[float] = []
    real = padded = 0
    for i in range(0, len(samples), 64):
        out += rm.score(samples[i : i + 64])
        assert rm.last_report is not None
        real += rm.last_report.real_tokens
        padded += rm.last_report.padded_tokens
    return out, real, padded


def _seed_in_workers(samples: list[Sample], worker_threads: int | None) -> tuple[float, float]:
    """The seed as deployed: a process-kind reward, so each worker process lazily loads its own model copy.

    Returns the wall time and the median per-call latency (the steady state, model loads aside).
    """
    from rewardflow import Engine

    with Engine(seed_reward, workers=2, timeout=3600, worker_threads=worker_threads) as engine:
        results, seconds = timed(lambda: engine.score(samples))
    assert all(r.ok for r in results), results[0].reason
    return seconds, statistics.median(r.latency for r in results)


def _seed_flops(samples: list[Sample]) -> int:
    """Exact floating-point operations of the seed's 512 forward passes (batching adds only its padding)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        for s in samples:
            seed_reward(s.prompt, s.completion)
    return int(counter.get_total_flops())


def _matmul_peak(n: int = 2048, repeats: int = 10) -> float:
    """This CPU's fp32 matmul rate in FLOP/s, best of ``repeats``: an upper bound for any forward pass."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best = min(timed(lambda: a @ b)[1] for _ in range(repeats))
    return 2 * n**3 / best


def _spread(scores: list[float]) -> float:
    return statistics.pstdev(scores)


def _fmt(values: list[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


def lifecycle() -> None:
    """Onload/offload cost and resident memory, per offload mode, on the same model."""
    warm = [Sample("warm", "up the pages")]
    rows: list[tuple[str, ...]] = [("offload mode", "onload s", "offload s", "RSS onloaded MB", "RSS offloaded MB")]
    for mode in ("release", "cpu", "none"):
        rm, _ = load_rm(offload=mode)
        onload, offload, on_mb, off_mb = [], [], [], []
        for _ in range(5):
            rm.score(warm)  # one call = onload -> score -> offload, timed in its report
            report = rm.last_report
            assert report is not None
            onload.append(report.onload_s)
            offload.append(report.offload_s)
            with rm.onloaded():
                rm.score(warm)  # touches every weight, as a forward pass does
                on_mb.append(rss_mb())
            off_mb.append(rss_mb())
        rows.append(
            (
                mode,
                f"{statistics.median(onload):.4f}",
                f"{statistics.median(offload):.4f}",
                f"{statistics.median(on_mb):.0f}",
                f"{statistics.median(off_mb):.0f}",
            )
        )
        rm.close()
        time.sleep(0.1)
    print("offload lifecycle (median of 5 cycles; CPU compute device, so 'cpu' mode has nothing to move):")
    print(table(rows))


if __name__ == "__main__":
    main()
