"""P4: reward models, side by side in one process: per-sample loops vs ``RewardModel``.

Part 1, GRPO (the headline): a causal reward model (a random, seeded Llama sequence classifier, 4 layers x 256
wide, big enough that its matmuls are compute-bound on a CPU) on GRPO-shaped batches: ``--prompts`` prompts of
300 tokens x G=8 completions of 200 tokens (64 x 8 is the full shape; the default, 16 x 8, keeps the shape and its
ratios and fits a shared 2-core machine). The model's tokenizer has no pad token (Llama-3 style) and a chat
template ending with EOS. Three paths, alternating, best of ``--rounds``:

* the per-sample loop: plain transformers, one unpadded forward pass per sample, on the very token ids
  ``RewardModel.encode`` produces (the reference the scores must equal, to 1e-4);
* ``RewardModel.score`` with prefix sharing (default): each group's 300-token prompt once, then its 8
  completions against the KV cache, batched;
* the same without sharing (``share_prefix=False``): sorted, padded micro-batches.

Then bf16 (``dtype="bfloat16"``) against fp32 on the same batch: time, largest score difference, and the
rank agreement within each group (Spearman correlation, and whether the best-of-group is the same sample).

Part 2, MiniLM: the seed's per-sample reward vs ``RewardModel.score`` on GSM8K completions with the real
all-MiniLM-L6-v2 encoder as a sequence classifier (seeded random head), and the compute ceiling: exact FLOPs
(``torch.utils.flop_counter``) against this CPU's fp32 matmul peak, measured before every round (interleaved)
and reported with its spread. Part 3: onload/offload cost per offload mode.

    cd bench && PYTHONPATH=.. python p4_reward_model.py [--part grpo|minilm|lifecycle|all] [--prompts 16]
        [--rounds 3] [--threads N] [--clock wall|cpu]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import gsm8k_rows, machine, table, timed

from rewardflow import Sample
from rewardflow.models import RewardModel
from rewardflow.models.similarity import default_encoder_path

MINILM = str(default_encoder_path())
G = 8
PROMPT_TOKENS = 300
COMPLETION_TOKENS = 200
# the reward model's template (Llama-2 shape): BOS, [INST] user [/INST], the answer, EOS last
TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
    "{% else %} {{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
)


CLOCK = {"name": "wall"}


def measure(fn: Any) -> tuple[Any, float]:
    """``(fn(), seconds)`` on the chosen clock: wall time, or this process's CPU time (``--clock cpu``).

    On a machine whose cores other jobs share, wall time counts the time this process waited for a core; CPU time
    counts only the time it ran, so with one torch thread (``--threads 1``, no spinning helper threads) it is the
    steadier measure of the work each path does. Every figure of one run uses the same clock.
    """
    clock = time.process_time if CLOCK["name"] == "cpu" else time.perf_counter
    start = clock()
    out = fn()
    return out, clock() - start


# ----------------------------------------------------------------------------- part 1: GRPO, causal RM


def build_causal_rm(directory: Path, rows: list[dict[str, Any]]) -> Path:
    """A seeded random Llama-architecture sequence classifier and a no-pad BPE tokenizer trained on GSM8K."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForSequenceClassification, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2000,
        special_tokens=["<s>", "</s>", "[INST]", "[/INST]"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([r["prompt"] + " " + r["completion"] for r in rows], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")  # no pad token
    fast.chat_template = TEMPLATE
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        num_labels=1,
        pad_token_id=None,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(config)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.05)
    model.save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory


def grpo_batch(tokenizer: Any, rows: list[dict[str, Any]], prompts: int) -> tuple[list[str], list[str]]:
    """``prompts`` x G samples: prompts of ~300 tokens, completions of ~200 (GSM8K text, cut by token count)."""
    text = " ".join(r["prompt"] + " " + r["completion"] for r in rows)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    rng = random.Random(0)

    def piece(n: int) -> str:
        start = rng.randrange(0, len(ids) - n)
        return tokenizer.decode(ids[start : start + n]).strip()

    out_p, out_c = [], []
    for _ in range(prompts):
        prompt = piece(PROMPT_TOKENS)
        for _ in range(G):
            out_p.append(prompt)
            out_c.append(piece(COMPLETION_TOKENS))
    return out_p, out_c


def per_sample_loop(model: Any, ids: list[list[int]]) -> list[float]:
    """Plain transformers, one unpadded sequence per forward pass: the reference."""
    import torch

    with torch.inference_mode():
        return [float(model(input_ids=torch.tensor([seq])).logits[0, 0]) for seq in ids]


def spearman(a: list[float], b: list[float]) -> float:
    def ranks(x: list[float]) -> list[float]:
        order = sorted(range(len(x)), key=lambda i: x[i])
        out = [0.0] * len(x)
        for r, i in enumerate(order):
            out[i] = float(r)
        return out

    ra, rb = ranks(a), ranks(b)
    ma, mb = statistics.fmean(ra), statistics.fmean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    var = (sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)) ** 0.5
    return cov / var if var else 1.0


def grpo(prompts: int, rounds: int) -> None:
    import torch
    import transformers

    rows = gsm8k_rows(1024)
    with tempfile.TemporaryDirectory() as tmp:
        path = build_causal_rm(Path(tmp) / "rm", rows)
        shared = RewardModel(str(path), max_length=1024)
        texts_p, texts_c = grpo_batch(shared.tokenizer, rows, prompts)
        n = len(texts_p)
        ids = shared.encode(texts_p, texts_c)
        plain = RewardModel(str(path), max_length=1024, share_prefix=False)
        model = transformers.AutoModelForSequenceClassification.from_pretrained(str(path)).eval()
        shared.score_texts(texts_p[:G], texts_c[:G])  # warm-up (also runs the causality probe once)
        plain.score_texts(texts_p[:G], texts_c[:G])
        per_sample_loop(model, ids[:2])
        times: dict[str, list[float]] = {"loop": [], "shared": [], "plain": []}
        peaks: list[float] = []
        for r in range(rounds):
            peaks.append(_matmul_peak())
            loop_scores, t = measure(lambda: per_sample_loop(model, ids))
            times["loop"].append(t)
            shared_scores, t = measure(lambda: shared.score_texts(texts_p, texts_c))
            times["shared"].append(t)
            plain_scores, t = measure(lambda: plain.score_texts(texts_p, texts_c))
            times["plain"].append(t)
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
        report, plain_report = shared.last_report, plain.last_report
        assert report is not None and plain_report is not None
        bf16 = RewardModel(str(path), max_length=1024, dtype="bfloat16")
        bf16.score_texts(texts_p[:G], texts_c[:G])
        bf16_times = []
        for _ in range(rounds):
            bf16_scores, t = measure(lambda: bf16.score_texts(texts_p, texts_c))
            bf16_times.append(t)
    best = {k: min(v) for k, v in times.items()}
    lengths = [len(x) for x in ids]
    print(
        f"P4 GRPO: causal RM (Llama seq-cls, 4 x 256, no pad token), {prompts} prompts x G={G} = {n} samples, "
        f"{statistics.mean(lengths):.0f} tokens per sample on average (prompt ~{PROMPT_TOKENS}, completion "
        f"~{COMPLETION_TOKENS}, plus the template), CPU fp32"
    )
    print(
        f"{machine()}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"transformers {transformers.__version__}"
    )
    print(
        f"load average now {os.getloadavg()[0]:.1f} (other work shares these cores); "
        f"best of {rounds} alternating rounds"
    )
    print(f"matmul peak before each round (GFLOP/s): {', '.join(f'{p / 1e9:.0f}' for p in peaks)}")
    table_rows = [("path", "seconds (best)", "all rounds", "samples/s", "vs loop", "forward passes")]
    labels = {
        "loop": "per-sample transformers loop",
        "shared": "RewardModel.score, prefix sharing (default)",
        "plain": "RewardModel.score, share_prefix=False",
    }
    passes = {"loop": str(n), "shared": str(report.micro_batches), "plain": str(plain_report.micro_batches)}
    for key, label in labels.items():
        table_rows.append(
            (
                label,
                f"{best[key]:.2f}",
                ", ".join(f"{v:.2f}" for v in times[key]),
                f"{n / best[key]:.1f}",
                f"{best['loop'] / best[key]:.2f}x",
                passes[key],
            )
        )
    table_rows.append(
        (
            'RewardModel.score, dtype="bfloat16" (option)',
            f"{min(bf16_times):.2f}",
            ", ".join(f"{v:.2f}" for v in bf16_times),
            f"{n / min(bf16_times):.1f}",
            f"{best['loop'] / min(bf16_times):.2f}x",
            passes["shared"],
        )
    )
    print(table(table_rows))
    d_shared = max(abs(a - b) for a, b in zip(shared_scores, loop_scores, strict=True))
    d_plain = max(abs(a - b) for a, b in zip(plain_scores, loop_scores, strict=True))
    print(
        f"max |score - per-sample loop|: sharing {d_shared:.1e}, padded {d_plain:.1e} (score spread "
        f"{statistics.pstdev(loop_scores):.2e}; must be < 1e-4: {max(d_shared, d_plain) < 1e-4})"
    )
    print(
        f"prefix sharing: {report.prefix_sharing}, {report.shared_groups} groups, {report.shared_tokens} prompt "
        f"tokens not recomputed; tokens computed {report.padded_tokens} vs {plain_report.padded_tokens} padded "
        f"({plain_report.padded_tokens / max(report.padded_tokens, 1):.2f}x less work)"
    )
    corr = [spearman(bf16_scores[g : g + G], shared_scores[g : g + G]) for g in range(0, n, G)]
    same_best = sum(
        max(range(G), key=lambda i: bf16_scores[g + i]) == max(range(G), key=lambda i: shared_scores[g + i])
        for g in range(0, n, G)
    )
    d_bf16 = max(abs(a - b) for a, b in zip(bf16_scores, shared_scores, strict=True))
    print(
        f"bf16 vs fp32: speed {min(times['shared']) / min(bf16_times):.2f}x, max |diff| {d_bf16:.1e}, "
        f"within-group Spearman min {min(corr):.4f} / mean {statistics.fmean(corr):.4f} "
        f"(>= 0.999: {min(corr) >= 0.999}), same best-of-group in {same_best}/{n // G} groups"
    )
    speedup = best["loop"] / best["shared"]
    print(f"target: prefix sharing >= 2x the per-sample loop's samples/s: {speedup:.2f}x ({speedup >= 2})")


# ----------------------------------------------------------------------------- part 2: MiniLM

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


def load_rm(**kwargs: Any) -> tuple[RewardModel, float]:
    import torch

    torch.manual_seed(0)
    rm = RewardModel(MINILM, num_labels=1, max_length=512, allow_missing_weights=True, **kwargs)
    _, seconds = timed(rm.load)
    return rm, seconds


def minilm(n: int, rounds: int) -> None:
    import torch

    rows = gsm8k_rows(n)
    samples = [Sample(r["prompt"], r["completion"]) for r in rows]
    seed_reward(samples[0].prompt, samples[0].completion)
    rm, _ = load_rm()
    rm.score(samples[:8])  # warm-up
    seed_times, rm_times, peaks = [], [], []
    for r in range(rounds):
        peaks.append(_matmul_peak())
        seed_scores, t = measure(lambda: [seed_reward(s.prompt, s.completion) for s in samples])
        seed_times.append(t)
        rm_scores, t = measure(lambda: rm.score(samples))
        rm_times.append(t)
        print(f"round {r + 1}: peak {peaks[-1] / 1e9:.0f} GFLOP/s, seed {seed_times[-1]:.2f} s, rewardflow {t:.2f} s")
    peaks.append(_matmul_peak())
    report = rm.last_report
    assert report is not None
    flops = _seed_flops(samples)
    t_seed, t_rm = min(seed_times), min(rm_times)
    peak = statistics.median(peaks)
    diff = max(abs(a - b) for a, b in zip(seed_scores, rm_scores, strict=True))
    print(f"P4 MiniLM: {n} GSM8K completions, all-MiniLM-L6-v2 as a sequence classifier, CPU fp32")
    print(
        f"{machine()}, torch {torch.__version__} ({torch.get_num_threads()} threads); "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(
        table(
            [
                ("path", "seconds (best)", "all rounds", "samples/s", "GFLOP/s", "of matmul peak"),
                (
                    "seed: one forward per completion",
                    f"{t_seed:.2f}",
                    ", ".join(f"{v:.2f}" for v in seed_times),
                    f"{n / t_seed:.1f}",
                    f"{flops / t_seed / 1e9:.0f}",
                    f"{flops / t_seed / peak:.0%}",
                ),
                (
                    f"RewardModel.score (budget {rm.token_budget}, {report.micro_batches} passes)",
                    f"{t_rm:.2f}",
                    ", ".join(f"{v:.2f}" for v in rm_times),
                    f"{n / t_rm:.1f}",
                    f"{flops / t_rm / 1e9:.0f}",
                    f"{flops / t_rm / peak:.0%}",
                ),
            ]
        )
    )
    print(
        f"matmul peak (2048^2 fp32, best of 10), measured {len(peaks)} times interleaved: "
        f"{', '.join(f'{p / 1e9:.0f}' for p in peaks)} GFLOP/s; median {peak / 1e9:.0f}, spread "
        f"{(max(peaks) - min(peaks)) / peak:.0%} of the median"
    )
    share = flops / t_rm / peak
    print(
        f"RewardModel.score at {share:.0%} of the median peak ({flops / t_rm / max(peaks):.0%} of the highest); "
        f"target >= 85 %: {share >= 0.85}; prefix sharing: {report.prefix_sharing}"
    )
    shaped = statistics.median(_gemm_rate(1024, 384, 1536) for _ in range(3))
    print(
        f"context: a matmul of MiniLM's own feed-forward shape (1024 x 384 @ 384 x 1536) runs at "
        f"{shaped / 1e9:.0f} GFLOP/s ({shaped / peak:.0%} of the 2048^2 peak): RewardModel.score reaches "
        f"{flops / t_rm / shaped:.0%} of it"
    )
    print(f"max |seed - rewardflow| score: {diff:.1e} (must be < 1e-4: {diff < 1e-4})")


def _seed_flops(samples: list[Sample]) -> int:
    """Exact floating-point operations of the seed's forward passes (batching adds only its padding)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        for s in samples:
            seed_reward(s.prompt, s.completion)
    return int(counter.get_total_flops())


def _gemm_rate(m: int, k: int, n: int, repeats: int = 20) -> float:
    """FLOP/s of one ``(m x k) @ (k x n)`` fp32 product plus bias (a linear layer), best of ``repeats``."""
    import torch

    x, w, b = torch.randn(m, k), torch.randn(n, k), torch.randn(n)
    for _ in range(3):
        torch.nn.functional.linear(x, w, b)
    best = min(measure(lambda: torch.nn.functional.linear(x, w, b))[1] for _ in range(repeats))
    return 2 * m * k * n / best


def _matmul_peak(n: int = 2048, repeats: int = 10) -> float:
    """This CPU's fp32 matmul rate in FLOP/s, best of ``repeats``: an upper bound for any forward pass."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best = min(measure(lambda: a @ b)[1] for _ in range(repeats))
    return 2 * n**3 / best


# ----------------------------------------------------------------------------- part 3: offload lifecycle


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


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


def main() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["grpo", "minilm", "lifecycle", "all"], default="all")
    parser.add_argument("--prompts", type=int, default=16, help="GRPO prompts (x G=8); 64 is the full shape")
    parser.add_argument("--minilm-n", type=int, default=256, help="GSM8K completions for the MiniLM part")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall", help="what the seconds measure")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    CLOCK["name"] = args.clock
    print(
        f"load average at start {os.getloadavg()[0]:.1f}; clock: {args.clock} seconds; "
        f"{torch.get_num_threads()} torch thread(s)"
    )
    if args.part in ("grpo", "all"):
        grpo(args.prompts, args.rounds)
    if args.part in ("minilm", "all"):
        minilm(args.minilm_n, args.rounds)
    if args.part in ("lifecycle", "all"):
        lifecycle()


if __name__ == "__main__":
    main()
