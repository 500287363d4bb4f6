"""P4: reward models, side by side in one process: per-sample loops vs ``RewardModel``.

Part 1, GRPO (the headline): a causal reward model (a random, seeded Llama sequence classifier, 4 layers x 256
wide, big enough that its matmuls are compute-bound on a CPU) on GRPO-shaped batches: ``--prompts`` prompts of
300 tokens x G=8 completions of 200 tokens (64 x 8 is the full shape; the default, 16 x 8, keeps the shape and its
ratios and fits a shared 2-core machine). The model's tokenizer has no pad token (Llama-3 style) and a chat
template ending with EOS. Four paths, alternating, best of ``--rounds``:

* the per-sample loop: plain transformers, one unpadded forward pass per sample, on the very token ids
  ``RewardModel.encode`` produces (the reference the scores must equal, to 1e-4);
* ``RewardModel.score`` with prefix sharing (default): each group's 300-token prompt once, then its 8
  completions against the KV cache, batched;
* the same without sharing (``share_prefix=False``): sorted, padded micro-batches;
* prefix sharing with torch's default linear kernels (``cpu_linear="torch"``, the loop's own): the gain of
  sharing alone, apart from the oneDNN linears (:mod:`rewardflow.models.kernels`).

Then bf16 (``dtype="bfloat16"``) against fp32 on the same batch: time, largest score difference, and the
rank agreement within each group (Spearman correlation, and whether the best-of-group is the same sample).

Part 2, MiniLM: the seed's per-sample reward vs ``RewardModel.score`` (default, and with ``cpu_linear="torch"``)
on GSM8K completions with the real all-MiniLM-L6-v2 encoder as a sequence classifier (seeded random head), and
the compute ceiling: the exact FLOPs of the seed's unpadded passes (``torch.utils.flop_counter``, attention
included) per second, against the fp32 matmul peak on MiniLM's own linear shapes (the faster of torch's two
kernels, ``F.linear`` and oneDNN with plain or prepacked weights), measured before every round (interleaved) and
reported with its spread. Then the ceiling this CPU allows: the fraction of the peak reached if every linear layer
ran at the peak and nothing but attention cost time, with attention at torch's fastest fp32 CPU kernel for each
sequence length (fused SDPA or eager, each sequence alone and unmasked, as packed rows run it).
Part 3: onload/offload cost per offload mode. Part ``levers``: what each setting does to MiniLM's time. Part
``similarity``: the built-in similarity reward with packed rows vs padded micro-batches.

    cd bench && PYTHONPATH=.. python p4_reward_model.py [--part grpo|minilm|lifecycle|all] [--prompts 16]
        [--rounds 3] [--threads N] [--clock wall|cpu] [--minilm-n 256]
    cd bench && PYTHONPATH=.. python p4_reward_model.py --part levers [--compile] [--minilm-n 128]
    cd bench && PYTHONPATH=.. python p4_reward_model.py --part similarity [--minilm-n 256]
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
from rewardflow.models.attention import MAX_LENGTH, MIN_LENGTH, FusedAttention, bucket, fused_blocker
from rewardflow.models.attention import shared as shared_attention
from rewardflow.models.base import PRECISION_GUARD
from rewardflow.models.similarity import default_encoder_path

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


def build_causal_rm(
    directory: Path,
    rows: list[dict[str, Any]],
    *,
    hidden: int = 256,
    intermediate: int = 1024,
    layers: int = 4,
    heads: int = 4,
    dtype: str | None = None,
) -> Path:
    """A seeded random Llama-architecture sequence classifier and a no-pad BPE tokenizer trained on GSM8K
    (4 x 256 by default; ``bench/gpu_check.py`` also builds a 0.6B-parameter one, saved in ``dtype``)."""
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
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
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
            param.normal_(0.0, 0.05 * (256 / hidden) ** 0.5)  # the same activation scale at any width
    if dtype is not None:
        model = model.to(getattr(torch, dtype))
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


def _timing_cells(label: str, times: list[float], n: int) -> tuple[str, str, str, str]:
    """A table row's first cells: label, best seconds, every round, samples/s at the best."""
    return label, f"{min(times):.2f}", ", ".join(f"{v:.2f}" for v in times), f"{n / min(times):.1f}"


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
        blas = RewardModel(str(path), max_length=1024, cpu_linear="torch")
        model = transformers.AutoModelForSequenceClassification.from_pretrained(str(path)).eval()
        shared.score_texts(texts_p[:G], texts_c[:G])  # warm-up (also runs the causality probe once)
        plain.score_texts(texts_p[:G], texts_c[:G])
        blas.score_texts(texts_p[:G], texts_c[:G])
        per_sample_loop(model, ids[:2])
        times: dict[str, list[float]] = {"loop": [], "shared": [], "plain": [], "blas": []}
        peaks: list[float] = []
        for r in range(rounds):
            peaks.append(_matmul_peak())
            loop_scores, t = measure(lambda: per_sample_loop(model, ids))
            times["loop"].append(t)
            shared_scores, t = measure(lambda: shared.score_texts(texts_p, texts_c))
            times["shared"].append(t)
            plain_scores, t = measure(lambda: plain.score_texts(texts_p, texts_c))
            times["plain"].append(t)
            blas_scores, t = measure(lambda: blas.score_texts(texts_p, texts_c))
            times["blas"].append(t)
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
        report, plain_report, blas_report = shared.last_report, plain.last_report, blas.last_report
        assert report is not None and plain_report is not None and blas_report is not None
        # precision_guard=None: time bf16 itself; the guard's verdict on the same batch is printed below
        bf16 = RewardModel(str(path), max_length=1024, dtype="bfloat16", precision_guard=None)
        bf16.score_texts(texts_p[:G], texts_c[:G])
        bf16_times = []
        for _ in range(rounds):
            bf16_scores, t = measure(lambda: bf16.score_texts(texts_p, texts_c))
            bf16_times.append(t)
        checked = RewardModel(str(path), max_length=1024, dtype="bfloat16")  # the default precision_guard
        checked.score_texts(texts_p, texts_c)
        guarded = checked.precision
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
        "blas": "RewardModel.score, prefix sharing, cpu_linear='torch'",
    }
    passes = {
        "loop": str(n),
        "shared": str(report.micro_batches),
        "plain": str(plain_report.micro_batches),
        "blas": str(blas_report.micro_batches),
    }
    for key, label in labels.items():
        table_rows.append((*_timing_cells(label, times[key], n), f"{best['loop'] / best[key]:.2f}x", passes[key]))
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
    d_blas = max(abs(a - b) for a, b in zip(blas_scores, loop_scores, strict=True))
    print(
        f"max |score - per-sample loop|: sharing {d_shared:.1e}, padded {d_plain:.1e}, sharing with torch's "
        f"linears {d_blas:.1e} (score spread {statistics.pstdev(loop_scores):.2e}; must be < 1e-4: "
        f"{max(d_shared, d_plain, d_blas) < 1e-4})"
    )
    print(f"linear layers (default): {report.cpu_linear}")
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
    print(f"dtype='bfloat16' with the default precision guard on this batch: {guarded}")
    speedup = best["loop"] / best["shared"]
    alone = best["loop"] / best["blas"]
    print(
        f"target: prefix sharing >= 2x the per-sample loop's samples/s: {speedup:.2f}x ({speedup >= 2}); "
        f"with the loop's own linear kernels (sharing alone): {alone:.2f}x ({alone >= 2})"
    )


# ----------------------------------------------------------------------------- part 2: MiniLM

_seed_model: Any = None
_seed_tokenizer: Any = None


MINILM_DIR: dict[str, str] = {}  # --minilm-dir: a local copy instead of the weights package


def minilm_path() -> str:
    """all-MiniLM-L6-v2 from ``--minilm-dir`` or its weights package, looked up only by the parts that score it
    (the GRPO part and gpu_check.py need no MiniLM)."""
    return MINILM_DIR.get("path") or str(default_encoder_path())


def seed_reward(prompt: str, completions: str, prompt_ids: Any = None, completion_ids: Any = None, **kw: Any) -> float:
    """The seed proposal's reward: a lazily loaded global model, one forward pass per completion."""
    global _seed_model, _seed_tokenizer
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if _seed_model is None:
        _seed_tokenizer = AutoTokenizer.from_pretrained(minilm_path())
        torch.manual_seed(0)  # the same random head as RewardModel's below
        # .cuda() in the seed
        _seed_model = AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=1)
        _seed_model.eval()
    inputs = _seed_tokenizer(prompt, completions, return_tensors="pt", truncation=True, max_length=512)
    with torch.no_grad():
        return _seed_model(**inputs).logits[0, 0].item()


def load_rm(**kwargs: Any) -> tuple[RewardModel, float]:
    import torch

    torch.manual_seed(0)
    rm = RewardModel(minilm_path(), num_labels=1, max_length=512, allow_missing_weights=True, **kwargs)
    _, seconds = timed(rm.load)
    return rm, seconds


def minilm(n: int, rounds: int) -> None:
    import torch

    rows = gsm8k_rows(n)
    samples = [Sample(r["prompt"], r["completion"]) for r in rows]
    seed_reward(samples[0].prompt, samples[0].completion)
    rms = {"torch": load_rm(cpu_linear="torch", cpu_attention="torch")[0], "auto": load_rm()[0]}
    for rm in rms.values():
        rm.score(samples[:8])  # warm-up
    times: dict[str, list[float]] = {"seed": [], "torch": [], "auto": []}
    peaks: list[dict[str, float]] = []
    scores: dict[str, list[float]] = {}
    for r in range(rounds):
        peaks.append(_shape_peak())
        scores["seed"], t = measure(lambda: [seed_reward(s.prompt, s.completion) for s in samples])
        times["seed"].append(t)
        for key, rm in rms.items():
            scores[key], t = measure(lambda rm=rm: rm.score(samples))
            times[key].append(t)
        print(
            f"round {r + 1}: peak {_best(peaks[-1]) / 1e9:.0f} GFLOP/s, "
            + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()),
            flush=True,
        )
    peaks.append(_shape_peak())
    report = rms["auto"].last_report
    assert report is not None
    flops, attention = _seed_flops(samples)
    best = {k: min(v) for k, v in times.items()}
    shaped = [_best(p) for p in peaks]
    peak = statistics.median(shaped)
    print(f"P4 MiniLM: {n} GSM8K completions, all-MiniLM-L6-v2 as a sequence classifier, CPU fp32")
    print(
        f"{machine()}, torch {torch.__version__} ({torch.get_num_threads()} threads); "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    labels = {
        "seed": "seed: one forward per completion",
        "torch": f"RewardModel.score, torch's kernels (budget {rms['torch'].token_budget})",
        "auto": (
            f"RewardModel.score, default: {report.cpu_linear.split(' ')[0]} linears, "
            f"{report.cpu_attention.split(' ')[0]} attention"
        ),
    }
    table_rows = [("path", "seconds (best)", "all rounds", "samples/s", "GFLOP/s", "of matmul peak")]
    for key, label in labels.items():
        rate = flops / best[key]
        table_rows.append((*_timing_cells(label, times[key], n), f"{rate / 1e9:.0f}", f"{rate / peak:.0%}"))
    print(table(table_rows))
    print(
        f"useful work: {flops / 1e9:.1f} GFLOP over the real tokens of the per-sample passes (no padding), "
        f"attention's {attention / 1e9:.1f} GFLOP included"
    )
    print(
        f"matmul peak = the best fp32 rate torch reaches on MiniLM's linear shapes ({_SHAPE_ROWS} rows x "
        f"384->384, 384->1536, 1536->384, weighted by their FLOPs), best of F.linear and oneDNN (plain or prepacked "
        f"weights), measured "
        f"{len(peaks)} times interleaved: {', '.join(f'{p / 1e9:.0f}' for p in shaped)} GFLOP/s; median "
        f"{peak / 1e9:.0f}, spread {(max(shaped) - min(shaped)) / peak:.0%} of the median"
    )
    for backend in ("torch", "onednn", "prepacked", "square"):
        values = [p[backend] for p in peaks]
        what = {
            "torch": "F.linear (torch's default BLAS) on those shapes",
            "onednn": "oneDNN (torch.ops.mkldnn._linear_pointwise) on those shapes",
            "prepacked": "oneDNN with the weights prepacked (torch.ops.mkldnn._reorder_linear_weight)",
            "square": "a @ b, 2048 x 2048 (the peak this bench used before)",
        }[backend]
        listed = ", ".join(f"{v / 1e9:.0f}" for v in values)
        print(f"  {what}: median {statistics.median(values) / 1e9:.0f} GFLOP/s ({listed})")
    share = flops / best["auto"] / peak
    print(
        f"RewardModel.score (default) at {share:.0%} of the median peak ({flops / best['auto'] / max(shaped):.0%} "
        f"of the highest); target >= 85 %: {share >= 0.85}; {best['torch'] / best['auto']:.2f}x torch's kernels "
        f"(cpu_linear='torch', cpu_attention='torch'); linear layers: {report.cpu_linear}; attention: "
        f"{report.cpu_attention}; prefix sharing: {report.prefix_sharing}"
    )
    diff = max(abs(a - b) for k in ("torch", "auto") for a, b in zip(scores["seed"], scores[k], strict=True))
    print(f"max |seed - rewardflow| score: {diff:.1e} (must be < 1e-4: {diff < 1e-4})")
    seconds, kernel_rates = _attention_floor(samples)
    linear = flops - attention
    ceiling = flops / (linear / peak + seconds) / peak
    print(
        f"ceiling on this CPU: {ceiling:.0%} of the peak, if every linear layer ran at the peak and everything but "
        f"attention were free: attention's {attention / 1e9:.1f} GFLOP take at least {seconds:.2f} s at the "
        f"fastest fp32 CPU attention torch offers for each sequence length (per sequence, unmasked, best of "
        f"{', '.join(f'{k} {v / 1e9:.0f}' for k, v in kernel_rates.items())} GFLOP/s over these lengths); "
        f"RewardModel.score reaches {share / ceiling:.0%} of that ceiling"
    )
    chains = [_chain_rate() for _ in range(3)]
    chain = max(chains)
    in_model = flops / (linear / chain + seconds) / peak
    print(
        f"linear layers in a model: MiniLM's 36 GEMMs run back to back (6 layers' own prepacked weights, each "
        f"output the next input, GELU fused, {_SHAPE_ROWS} rows, oneDNN) reach {chain / 1e9:.0f} GFLOP/s, "
        f"{chain / peak:.0%} of the peak (best of {', '.join(f'{c / 1e9:.0f}' for c in chains)}): each call finds "
        f"its weights and input out of cache, where the peak's repeated call finds them in it; ceiling with the "
        f"linear layers at that rate and the attention floor above: {in_model:.0%} of the peak; RewardModel.score "
        f"reaches {share / in_model:.0%} of it"
    )


def _attention_floor(samples: list[Sample]) -> tuple[float, dict[str, float]]:
    """The least time torch's fp32 CPU kernels take for MiniLM's attention on these samples (all 6 layers).

    Each sequence alone (no padding, no mask: what packed rows run), timed per distinct length for each kernel,
    best of 5: ``scaled_dot_product_attention`` (torch's flash kernel), the eager matmul-softmax-matmul, and
    oneDNN's fused graph (``rewardflow.models.attention``, when this torch has it). The floor takes the fastest
    kernel for each length. Returns ``(seconds, kernel -> its own FLOP/s over all sequences)``.
    """
    import collections

    import torch

    seed_reward(samples[0].prompt, samples[0].completion)  # loads the seed tokenizer
    counts = collections.Counter(
        len(_seed_tokenizer(s.prompt, s.completion, truncation=True, max_length=512)["input_ids"]) for s in samples
    )
    heads, dim, layers = 12, 32, 6

    def eager(q: Any, k: Any, v: Any) -> Any:
        return torch.matmul(torch.matmul(q, k.transpose(-1, -2)).mul_(dim**-0.5).softmax(-1), v)

    kernels: dict[str, Any] = {"sdpa": torch.nn.functional.scaled_dot_product_attention, "eager": eager}
    if fused_blocker() is None:
        graphs = FusedAttention()
        kernels["onednn-graph"] = lambda q, k, v: graphs(q, k, v, dim**-0.5)
    per_kernel = dict.fromkeys(kernels, 0.0)
    floor = 0.0
    for length, count in counts.items():
        q, k, v = (torch.randn(1, heads, length, dim) for _ in range(3))
        best = {}
        with torch.inference_mode():
            for name, fn in kernels.items():
                fn(q, k, v)
                best[name] = min(measure(lambda fn=fn, q=q, k=k, v=v: fn(q, k, v))[1] for _ in range(5))
        for name, t in best.items():
            per_kernel[name] += t * count * layers
        floor += min(best.values()) * count * layers
    total = sum(4 * n * n * heads * dim * c * layers for n, c in counts.items())
    return floor, {name: total / t for name, t in per_kernel.items()}


def _chain_rate(repeats: int = 10) -> float:
    """fp32 FLOP/s of MiniLM's 36 linear layers run back to back through oneDNN, as a forward pass runs them.

    Six layers, each with its own prepacked weights (query, key, value, output, FFN up with the GELU fused, FFN
    down), ``_SHAPE_ROWS`` rows; each output feeds the next layer as the model's would. Best of ``repeats`` passes.
    """
    import torch

    op = torch.ops.mkldnn._linear_pointwise.default
    gen = torch.Generator().manual_seed(0)

    def weight(k: int, n: int) -> tuple[Any, Any]:
        w = torch.randn(n, k, generator=gen) * k**-0.5
        return torch.ops.mkldnn._reorder_linear_weight(w, _SHAPE_ROWS), torch.zeros(n)

    layers = [[weight(k, n) for k, n in _MINILM_LINEARS] for _ in range(6)]

    def forward(h: Any) -> Any:
        for (wq, bq), (wk, bk), (wv, bv), (wo, bo), (wu, bu), (wd, bd) in layers:
            _, _, v = (op(h, w, b, "none", [], "") for w, b in ((wq, bq), (wk, bk), (wv, bv)))
            o = op(v, wo, bo, "none", [], "")  # attention would mix q, k and v here
            h = op(op(o, wu, bu, "gelu", [], "none"), wd, bd, "none", [], "")
        return h

    x = torch.randn(_SHAPE_ROWS, 384, generator=gen)
    with torch.inference_mode():
        forward(x)
        seconds = min(measure(lambda: forward(x))[1] for _ in range(repeats))
    return 6 * sum(2 * _SHAPE_ROWS * k * n for k, n in _MINILM_LINEARS) / seconds


def _seed_flops(samples: list[Sample]) -> tuple[int, int]:
    """Exact floating-point operations of the seed's forward passes, and attention's part of them.

    ``torch.utils.flop_counter`` has no formula for the CPU's fused attention kernel
    (``_scaled_dot_product_flash_attention_for_cpu``) and would count its matmuls as 0; it is given torch's own
    SDPA formula, which counts exactly what the eager attention's two batched matmuls count.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def cpu_sdpa(query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
        return sdpa_flop_count(query, key, value)

    kernel = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    with FlopCounterMode(display=False, custom_mapping={kernel: cpu_sdpa}) as counter:
        for s in samples:
            seed_reward(s.prompt, s.completion)
    attention = sum(v for k, v in counter.get_flop_counts()["Global"].items() if "attention" in str(k))
    return int(counter.get_total_flops()), int(attention)


#: rows of the peak's GEMMs: the CPU token budget, what each micro-batch of RewardModel.score holds
_SHAPE_ROWS = 1024
#: MiniLM's linear layers per encoder layer, as (in, out): query, key, value, attention output, FFN up, FFN down
_MINILM_LINEARS = ((384, 384),) * 4 + ((384, 1536), (1536, 384))


def _shape_peak(repeats: int = 10) -> dict[str, float]:
    """fp32 rates (FLOP/s) this CPU reaches: MiniLM's linear shapes through each backend, and the square matmul."""
    import torch

    op = torch.ops.mkldnn._linear_pointwise.default
    backends = {
        "torch": lambda x, w, b: torch.nn.functional.linear(x, w, b),
        "onednn": lambda x, w, b: op(x, w, b, "none", [], ""),
        "prepacked": lambda x, w, b: op(x, w, b, "none", [], ""),  # w packed below, as RewardModel keeps it
    }
    out: dict[str, float] = {}
    for name, fn in backends.items():
        seconds = 0.0
        for k, n in _MINILM_LINEARS:
            x, w, b = torch.randn(_SHAPE_ROWS, k), torch.randn(n, k), torch.randn(n)
            if name == "prepacked":
                w = torch.ops.mkldnn._reorder_linear_weight(w, _SHAPE_ROWS)
            with torch.inference_mode():
                for _ in range(3):
                    fn(x, w, b)
                seconds += min(measure(lambda fn=fn, x=x, w=w, b=b: fn(x, w, b))[1] for _ in range(repeats))
        out[name] = sum(2 * _SHAPE_ROWS * k * n for k, n in _MINILM_LINEARS) / seconds
    out["square"] = _matmul_peak()
    return out


def _best(peak: dict[str, float]) -> float:
    """The peak for the model's shapes: the fastest of the backends (the square matmul is context only)."""
    return max(peak["torch"], peak["onednn"], peak["prepacked"])


def _matmul_peak(n: int = 2048, repeats: int = 10) -> float:
    """This CPU's fp32 ``a @ b`` rate in FLOP/s for square ``n x n`` matrices, best of ``repeats``."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best = min(measure(lambda: a @ b)[1] for _ in range(repeats))
    return 2 * n**3 / best


# ----------------------------------------------------------------------------- part "levers": MiniLM settings


BF16 = 'dtype="bf16"'


def levers(n: int, rounds: int, compile_too: bool) -> None:
    """Each setting's MiniLM time against the default ``RewardModel.score``, interleaved, best of ``rounds``.

    ``torch.compile``, which rewardflow does not ship, is applied to a copy here only, to measure what it would give.
    """

    import torch

    rows = gsm8k_rows(n)
    samples = [Sample(r["prompt"], r["completion"]) for r in rows]
    variants: dict[str, Any] = {
        "default (cpu_linear='auto', cpu_attention='torch', packed rows, budget 1024)": load_rm()[0]
    }
    variants["cpu_linear='torch'"] = load_rm(cpu_linear="torch")[0]
    variants["cpu_linear='onednn' (forced; fused GELU, prepacked)"] = load_rm(cpu_linear="onednn")[0]
    variants["cpu_attention='onednn' (fused oneDNN graph)"] = load_rm(cpu_attention="onednn")[0]
    for budget in (256, 512, 2048, 4096):
        variants[f"token_budget={budget}"] = load_rm(token_budget=budget)[0]
    variants["max_batch_size=1 (no batching)"] = load_rm(max_batch_size=1)[0]
    eager = load_rm()[0]
    eager.load()
    eager._model.set_attn_implementation("eager")
    variants['attn_implementation="eager"'] = eager
    variants["packing=False (sorted, padded micro-batches)"] = load_rm(packing=False)[0]
    variants[BF16] = load_rm(dtype="bfloat16", precision_guard=None)[0]  # bf16 itself; the guard's view below
    compile_s = None
    if compile_too:
        compiled = load_rm()[0]
        compiled.load()
        compiled._model = torch.compile(compiled._model, dynamic=True)
        _, compile_s = timed(lambda: compiled.score(samples))
        variants["torch.compile(dynamic=True) (measured only)"] = compiled
    for rm in variants.values():
        rm.score(samples[:8])  # warm-up
    times: dict[str, list[float]] = {k: [] for k in variants}
    scores: dict[str, list[float]] = {}
    for r in range(rounds):
        for key, rm in variants.items():
            scores[key], t = measure(lambda rm=rm: rm.score(samples))
            times[key].append(t)
        print(f"round {r + 1} done", flush=True)
    base_key = next(iter(variants))
    base = min(times[base_key])
    out = [("setting", "seconds (best)", "all rounds", "vs default", "max |score diff|", "padding")]
    for key, rm in variants.items():
        diff = max(abs(a - b) for a, b in zip(scores[key], scores[base_key], strict=True))
        report = rm.last_report
        out.append(
            (
                key,
                f"{min(times[key]):.2f}",
                ", ".join(f"{v:.2f}" for v in times[key]),
                f"{base / min(times[key]):.2f}x",
                f"{diff:.1e}",
                f"{report.padding_waste:.1%}",
            )
        )
    print(
        f"P4 levers: MiniLM on {n} GSM8K completions, {torch.get_num_threads()} torch thread(s), load average "
        f"{os.getloadavg()[0]:.1f}; 'vs default' > 1 means faster than the default"
    )
    print(table(out))
    rho = spearman(scores[BF16], scores[base_key])
    print(
        f"bf16 vs fp32 Spearman over the {n} scores: {rho:.4f}; the default precision guard "
        f"({PRECISION_GUARD}) would {'keep bf16' if rho >= PRECISION_GUARD else 'fall back to float32'}"
    )
    if compile_s is not None:
        print(f"torch.compile: first call (compile + score) took {compile_s:.1f} s wall")


# ----------------------------------------------------------------------------- part "attention": the opt-in lever


def attention_ab(n: int, rounds: int) -> None:
    """MiniLM with ``cpu_attention='torch'`` and ``'onednn'``, interleaved: the whole call, and its attention alone.

    The attention function rewardflow registers with transformers is wrapped by a timer, so "attention" is the
    time spent in it during the call: the per-span kernels, their copies and the writes into the packed output.
    """
    import torch
    from transformers import AttentionInterface

    from rewardflow.models import packing

    rows = gsm8k_rows(n)
    samples = [Sample(r["prompt"], r["completion"]) for r in rows]
    spent = [0.0]
    original = packing._attention
    clock = time.process_time if CLOCK["name"] == "cpu" else time.perf_counter

    def timed_attention(*args: Any, **kwargs: Any) -> Any:
        start = clock()
        try:
            return original(*args, **kwargs)
        finally:
            spent[0] += clock() - start

    packing.register()
    AttentionInterface.register(packing.NAME, timed_attention)
    every = FusedAttention()  # first, before any model: the memory the graphs of every bucket hold
    before = rss_mb()
    with torch.inference_mode():
        for length in sorted({bucket(n) for n in range(MIN_LENGTH, MAX_LENGTH + 1)}):
            q = torch.randn(1, 12, length, 32)
            every(q, q, q, 32**-0.5)
    held = (len(every), rss_mb() - before, every.compile_s)
    every.clear()
    rms = {kernel: load_rm(cpu_attention=kernel)[0] for kernel in ("torch", "onednn")}
    for rm in rms.values():
        rm.score(samples)  # warm-up over every length: the fused graphs are compiled here, once
    calls: dict[str, list[float]] = {k: [] for k in rms}
    attention: dict[str, list[float]] = {k: [] for k in rms}
    scores: dict[str, list[float]] = {}
    for _ in range(rounds):
        for kernel, rm in rms.items():
            spent[0] = 0.0
            scores[kernel], seconds = measure(lambda rm=rm: rm.score(samples))
            calls[kernel].append(seconds)
            attention[kernel].append(spent[0])
    AttentionInterface.register(packing.NAME, original)
    fused = shared_attention()

    print(f"P4 attention: MiniLM on {n} GSM8K completions, {torch.get_num_threads()} torch thread(s), best of {rounds}")
    out = [("cpu_attention", "call s (best)", "all rounds", "attention s (best)", "attention GFLOP/s")]
    _, attention_flops = _seed_flops(samples)
    for kernel in rms:
        out.append(
            (
                kernel,
                f"{min(calls[kernel]):.2f}",
                ", ".join(f"{v:.2f}" for v in calls[kernel]),
                f"{min(attention[kernel]):.2f}",
                f"{attention_flops / min(attention[kernel]) / 1e9:.0f}",
            )
        )
    print(table(out))
    diff = max(abs(a - b) for a, b in zip(scores["torch"], scores["onednn"], strict=True))
    print(
        f"onednn vs torch: call {min(calls['torch']) / min(calls['onednn']):.2f}x, attention "
        f"{min(attention['torch']) / min(attention['onednn']):.2f}x; max |score diff| {diff:.1e}; "
        f"{fused.compiled} graphs compiled in {fused.compile_s:.2f} s (warm-up); "
        f"{rms['onednn'].last_report.cpu_attention}"
    )
    print(
        f"every bucket of {MIN_LENGTH}-{MAX_LENGTH} tokens at MiniLM's heads: {held[0]} graphs, compiled in "
        f"{held[2]:.2f} s, resident memory +{held[1]:.0f} MB (measured before any model was loaded)"
    )


# ----------------------------------------------------------------------------- part "similarity": packed rows


def similarity(n: int, rounds: int) -> None:
    """The built-in ``similarity`` reward with packed rows (default) vs padded micro-batches, interleaved.

    Two workloads from the same GSM8K rows: short texts (each completion's last line vs the gold number, the
    answer-similarity use) and long ones (the whole solution vs the reference solution).
    """
    from _common import gold_of

    from rewardflow.models.similarity import SimilarityReward

    rows = gsm8k_rows(n)
    workloads = {
        "short: last line vs gold number": (
            [r["completion"].strip().splitlines()[-1][:80] for r in rows],
            [gold_of(r) for r in rows],
        ),
        "long: solution vs reference solution": ([r["completion"] for r in rows], [r["answer"] for r in rows]),
    }
    models = {"packed": SimilarityReward(), "padded": SimilarityReward(packing=False)}
    out = [("texts", "packed s (best)", "padded s (best)", "packed / padded speed", "padding avoided", "max |diff|")]
    for label, (completions, references) in workloads.items():
        for model in models.values():
            model.score_texts(completions[:8], references[:8])  # warm-up (and the packing probe)
        times: dict[str, list[float]] = {k: [] for k in models}
        scores: dict[str, list[float]] = {}
        for _ in range(rounds):
            for key, model in models.items():
                scores[key], t = measure(lambda m=model, c=completions, r=references: m.score_texts(c, r))
                times[key].append(t)
        waste = models["padded"].last_report.padding_waste  # type: ignore[union-attr]
        diff = max(abs(a - b) for a, b in zip(scores["packed"], scores["padded"], strict=True))
        packed, padded = min(times["packed"]), min(times["padded"])
        out.append((label, f"{packed:.2f}", f"{padded:.2f}", f"{padded / packed:.2f}x", f"{waste:.1%}", f"{diff:.1e}"))
        assert models["packed"].last_report.packing == "on"  # type: ignore[union-attr]
    print(f"P4 similarity: {n} GSM8K rows, all-MiniLM-L6-v2 embeddings, best of {rounds} interleaved rounds")
    print(table(out))


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
    parts = ["grpo", "minilm", "lifecycle", "levers", "attention", "similarity", "all"]
    parser.add_argument("--part", choices=parts, default="all")
    parser.add_argument("--compile", action="store_true", help="levers: also time torch.compile (slow to build)")
    parser.add_argument("--prompts", type=int, default=16, help="GRPO prompts (x G=8); 64 is the full shape")
    parser.add_argument("--minilm-n", type=int, default=256, help="GSM8K completions for the MiniLM part")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall", help="what the seconds measure")
    parser.add_argument("--minilm-dir", default=None, help="a local all-MiniLM-L6-v2 (default: its weights package)")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    CLOCK["name"] = args.clock
    if args.minilm_dir:
        MINILM_DIR["path"] = args.minilm_dir
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
    if args.part == "levers":
        levers(args.minilm_n, args.rounds, args.compile)
    if args.part == "attention":
        attention_ab(args.minilm_n, args.rounds)
    if args.part in ("similarity", "all"):
        similarity(args.minilm_n, args.rounds)


if __name__ == "__main__":
    main()
