#!/usr/bin/env bash
# One short run on a lent CUDA GPU that measures what CPU-only tests can only stand in for (with the meta device):
#   1. pinned host copies in offload="cpu" mode, and the onload transfer rate (pinned vs a pageable copy);
#   2. device memory back to its baseline after every scoring call (cpu and release modes, 5 cycles each);
#   3. scores on the GPU (fp32, TF32 off) equal to the CPU per-sample transformers loop within 1e-4, with prefix
#      sharing on; the default GPU dtype (bf16): within-group rank agreement with fp32;
#   4. the device chosen per rank (LOCAL_RANK / the current device), never a hard cuda:0;
#   5. GRPO throughput at the full shape (64 prompts x G=8, 300 + 200 tokens): per-sample loop vs prefix sharing.
# Prints a table per check and exits non-zero if a check fails. Needs the repository's venv (make setup) and a GPU
# build of torch (the CPU wheel of `make setup` cannot see a GPU: install the matching CUDA wheel first).
#
#   bash bench/gpu_check.sh            # from the repository root; about 2-4 minutes on one GPU
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-../.venv/bin/python}"
[ -x "$PY" ] || PY=python3
PYTHONPATH=.. exec "$PY" - "$@" <<'PYEOF'
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers

from p4_reward_model import G, build_causal_rm, grpo_batch, per_sample_loop, spearman
from _common import gsm8k_rows, table
from rewardflow.models import RewardModel
from rewardflow.models.loading import resolve_device

transformers.logging.set_verbosity_error()
if not torch.cuda.is_available():
    sys.exit("gpu_check: no CUDA device visible to torch (is a CUDA build of torch installed?)")
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
failures: list[str] = []


def check(name: str, ok: bool, detail: str) -> None:
    print(f"[{'ok' if ok else 'FAIL'}] {name}: {detail}", flush=True)
    if not ok:
        failures.append(name)


print(f"device: {torch.cuda.get_device_name()} x{torch.cuda.device_count()}, torch {torch.__version__}, "
      f"transformers {transformers.__version__}")
rows = gsm8k_rows(1024)
tmp = tempfile.TemporaryDirectory()
path = build_causal_rm(Path(tmp.name) / "rm", rows)

# 4. device per rank
os.environ["LOCAL_RANK"] = str(torch.cuda.device_count() - 1)
picked = resolve_device(None)
check("device per rank", picked.index == torch.cuda.device_count() - 1,
      f"LOCAL_RANK={os.environ['LOCAL_RANK']} -> {picked}")
del os.environ["LOCAL_RANK"]

# 1 + 2. pinned transfer and memory back to baseline
for mode in ("cpu", "release"):
    rm = RewardModel(str(path), device="cuda", dtype="float32", offload=mode, max_length=1024)
    rm.load()
    host = [t for t in rm.weights.tensors() if t.device.type == "cpu"]
    if mode == "cpu":
        check("pinned host copies", all(t.is_pinned() for t in host), f"{len(host)} tensors, all page-locked")
    base = torch.cuda.memory_allocated()
    on, after = [], []
    for _ in range(5):
        rm(["warm up"], ["the pages"])
        report = rm.last_report
        on.append(report.onload_s)
        after.append(report.device_memory_after - report.device_memory_before)
    size = sum(t.numel() * t.element_size() for t in rm.weights.tensors())
    check(f"memory back to baseline ({mode})", max(after) == 0 and torch.cuda.memory_allocated() == base,
          f"after - before per call: {after} bytes; onload median {statistics.median(on) * 1e3:.2f} ms "
          f"({size / statistics.median(on) / 1e9:.1f} GB/s for {size / 1e6:.0f} MB)")
    rm.close()
blob = torch.empty(256 * 2**20, dtype=torch.uint8)
pinned = blob.pin_memory()
rates = {}
for name, src in (("pageable", blob), ("pinned", pinned)):
    src.to("cuda"); torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(5):
        src.to("cuda", non_blocking=True)
    torch.cuda.synchronize()
    rates[name] = 5 * blob.numel() / (time.perf_counter() - start) / 1e9
check("pinned transfer rate", rates["pinned"] >= rates["pageable"],
      f"host->device {rates['pinned']:.1f} GB/s pinned vs {rates['pageable']:.1f} GB/s pageable (256 MB)")

# 3 + 5. scores and GRPO throughput at the full shape
fp32 = RewardModel(str(path), device="cuda", dtype="float32", offload="none", max_length=1024)
prompts, completions = grpo_batch(fp32.tokenizer, rows, 64)
ids = fp32.encode(prompts, completions)
cpu_model = transformers.AutoModelForSequenceClassification.from_pretrained(str(path)).eval()
reference = per_sample_loop(cpu_model, ids[:64])
scores = fp32(prompts, completions)
diff = max(abs(a - b) for a, b in zip(scores[:64], reference, strict=True))
check("GPU fp32 scores == CPU per-sample loop", diff < 1e-4 and fp32.last_report.prefix_sharing == "on",
      f"max |diff| {diff:.1e} over 64 samples; prefix sharing: {fp32.last_report.prefix_sharing}")
gpu_model = cpu_model.to("cuda")


def loop() -> list[float]:
    with torch.inference_mode():
        out = [gpu_model(input_ids=torch.tensor([s], device="cuda")).logits[0, 0] for s in ids]
    return [float(x) for x in out]


plain = RewardModel(str(path), device="cuda", dtype="float32", offload="none", max_length=1024, share_prefix=False)
bf16 = RewardModel(str(path), device="cuda", offload="none", max_length=1024)  # the GPU default dtype
for fn in (loop, lambda: fp32(prompts, completions), lambda: plain(prompts, completions),
           lambda: bf16(prompts, completions)):
    fn()  # warm-up
times: dict[str, list[float]] = {"loop": [], "shared": [], "plain": [], "bf16": []}
for _ in range(3):
    for key, fn in (("loop", loop), ("shared", lambda: fp32(prompts, completions)),
                    ("plain", lambda: plain(prompts, completions)), ("bf16", lambda: bf16(prompts, completions))):
        torch.cuda.synchronize(); start = time.perf_counter(); out = fn(); torch.cuda.synchronize()
        times[key].append(time.perf_counter() - start)
        if key == "bf16":
            bf16_scores = out
n = len(prompts)
print(table([("path", "best s", "samples/s", "vs loop")] + [
    (k, f"{min(v):.3f}", f"{n / min(v):.0f}", f"{min(times['loop']) / min(v):.2f}x") for k, v in times.items()]))
speedup = min(times["loop"]) / min(times["shared"])
check("GRPO prefix sharing vs per-sample loop on GPU", speedup >= 2, f"{speedup:.2f}x at 64 x {G} (target >= 2x)")
corr = [spearman(bf16_scores[g:g + G], scores[g:g + G]) for g in range(0, n, G)]
print(f"bf16 (GPU default) vs fp32: within-group Spearman min {min(corr):.4f}, mean {statistics.fmean(corr):.4f}")
tmp.cleanup()
print("gpu_check:", "all checks passed" if not failures else f"FAILED: {', '.join(failures)}")
sys.exit(1 if failures else 0)
PYEOF
