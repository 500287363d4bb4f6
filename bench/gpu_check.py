"""The GPU checks of the reward models, in one short run: what CPU-only tests can only stand in for.

On a CUDA device (``bench/gpu_check.sh``; estimated at about a minute on one GPU, not yet run on one):

1. the device chosen per rank: ``LOCAL_RANK`` picks the GPU, never a hard ``cuda:0``;
2. ``offload="cpu"``: the host copies are page-locked (pinned), and a pinned host-to-device copy is at least as
   fast as a pageable one;
3. device memory back to its baseline after every scoring call, in ``cpu`` and ``release`` modes (5 calls each);
4. fp32 scores on the device (TF32 off) equal to the CPU per-sample transformers loop within 1e-4, prefix sharing
   on; the GPU's default dtype (bf16) against fp32: within-group rank agreement (reported);
5. GRPO at the full shape (64 prompts x G=8, 300 + 200 tokens): prefix sharing >= 2x the per-sample loop and at
   least as fast as padded batches without sharing; groups run together (the accelerator's default) score as one
   pass per group does, within 1e-4;
6. at scale, a 0.6B-parameter RM (1.2 GB in bf16): the pinned onload rate, device memory back to its baseline,
   and GRPO sharing faster than padded batches where the arithmetic decides (16 prompts x G=8).

``--dry-run`` runs the same code on the CPU with small shapes (2 prompts x G=8), so that the script cannot rot
(``tests/models/test_models_gpu_check.py`` runs it): the checks that need CUDA (pinned memory, device memory,
transfer rate, the rank's GPU) run their CPU side (nothing pinned, no device memory to account, the CPU chosen)
and say ``skip`` for the CUDA side; speed is reported, not judged, on a shared CPU. The last line is one
``gpu_check: PASS`` or ``gpu_check: FAIL: <checks>``; the exit status is 0 or 1 (2: cannot run at all).

    cd bench && PYTHONPATH=.. python gpu_check.py [--dry-run] [--prompts 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

NEEDED = ("torch", "transformers", "tokenizers", "safetensors", "pydantic")


class Checks:
    """Collects ``[ok]``/``[FAIL]``/``[skip]`` lines and prints the one-line summary."""

    def __init__(self) -> None:
        self.failed: list[str] = []
        self.passed = 0
        self.skipped = 0

    def check(self, name: str, ok: bool, detail: str) -> None:
        print(f"[{'ok' if ok else 'FAIL'}] {name}: {detail}", flush=True)
        if ok:
            self.passed += 1
        else:
            self.failed.append(name)

    def skip(self, name: str, why: str) -> None:
        print(f"[skip] {name}: {why}", flush=True)
        self.skipped += 1

    def summary(self) -> int:
        if self.failed:
            print(f"gpu_check: FAIL: {', '.join(self.failed)} ({self.passed} passed, {self.skipped} skipped)")
            return 1
        print(f"gpu_check: PASS ({self.passed} checks passed, {self.skipped} skipped)")
        return 0


def _timed(fn: Callable[[], Any], sync: Callable[[], None]) -> tuple[Any, float]:
    sync()
    start = time.perf_counter()
    out = fn()
    sync()
    return out, time.perf_counter() - start


def check_rank_device(checks: Checks, cuda: bool) -> None:
    import torch

    from rewardflow.models.loading import resolve_device

    saved = os.environ.get("LOCAL_RANK")
    try:
        if cuda:
            last = torch.cuda.device_count() - 1
            os.environ["LOCAL_RANK"] = str(last)
            picked = resolve_device(None)
            checks.check("device per rank", picked == torch.device("cuda", last), f"LOCAL_RANK={last} -> {picked}")
        else:
            os.environ["LOCAL_RANK"] = "1"
            picked = resolve_device(None)
            checks.check("device per rank (CPU side)", picked.type == "cpu", f"no CUDA, LOCAL_RANK=1 -> {picked}")
            checks.skip("device per rank", "needs CUDA")
    finally:
        if saved is None:
            os.environ.pop("LOCAL_RANK", None)
        else:
            os.environ["LOCAL_RANK"] = saved


def check_offload(checks: Checks, path: Path, device: str) -> None:
    """Pinned host copies and device memory back to its baseline, per offload mode."""
    import torch

    from rewardflow.models import RewardModel

    cuda = device == "cuda"
    for mode in ("cpu", "release"):
        rm = RewardModel(str(path), device=device, dtype="float32", offload=mode, max_length=1024)
        rm.load()
        size = sum(f.stat().st_size for f in path.glob("*.safetensors"))  # release mode holds no host copy
        host = [t for t in rm.weights.tensors() if t.device.type == "cpu"]
        if mode == "cpu":
            pinned = sum(bool(t.is_pinned()) for t in host) if cuda else 0
            if cuda:
                checks.check("pinned host copies", pinned == len(host) > 0, f"{pinned}/{len(host)} page-locked")
            else:
                checks.check("host copies (CPU side)", len(host) > 0 and pinned == 0, f"{len(host)}, none pinned")
                checks.skip("pinned host copies", "needs CUDA")
        if cuda and mode == "cpu":
            # torch keeps cuBLAS/cuBLASLt workspaces from the first matrix product on a stream to the end of the
            # process (32 MiB on an H200, first seen here as call 1's growth): make them before the baseline
            before = torch.cuda.memory_allocated()
            for dtype in (torch.float32, torch.bfloat16):
                x = torch.ones(8, 64, device="cuda", dtype=dtype)
                torch.nn.functional.linear(x, torch.ones(64, 64, device="cuda", dtype=dtype), x[0])
            torch.cuda.synchronize()
            print(f"[info] torch's cuBLAS workspaces: {torch.cuda.memory_allocated() - before} bytes", flush=True)
        base = torch.cuda.memory_allocated() if cuda else None
        grew, onload, states = [], [], []
        for _ in range(5):
            rm(["warm up"], ["the pages"])
            report = rm.last_report
            assert report is not None
            onload.append(report.onload_s)
            states.append(rm.state.value)
            if cuda:
                assert report.device_memory_after is not None and report.device_memory_before is not None
                grew.append(report.device_memory_after - report.device_memory_before)
            else:
                grew.append(0 if report.device_memory_after is None else report.device_memory_after)
        detail = f"states {sorted(set(states))}; onload median {statistics.median(onload) * 1e3:.2f} ms"
        if cuda:
            back = max(grew) == 0 and torch.cuda.memory_allocated() == base
            rate = size / max(statistics.median(onload), 1e-9) / 1e9
            checks.check(
                f"memory back to baseline ({mode})",
                back and set(states) == {"offloaded"},
                f"after - before per call: {grew} bytes; {detail} ({rate:.1f} GB/s for {size / 1e6:.0f} MB)",
            )
        else:
            checks.check(
                f"offload after each call ({mode}, CPU side)",
                set(states) == {"offloaded"} and max(grew) == 0,
                f"{detail}; no device memory to account (None)",
            )
            checks.skip(f"memory back to baseline ({mode})", "needs CUDA")
        rm.close()


def check_transfer(checks: Checks, cuda: bool) -> None:
    import torch

    if not cuda:
        checks.skip("pinned transfer rate", "needs CUDA (pin_memory needs an accelerator)")
        return
    blob = torch.empty(256 * 2**20, dtype=torch.uint8)
    rates = {}
    for name, src in (("pageable", blob), ("pinned", blob.pin_memory())):
        src.to("cuda")
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(5):
            src.to("cuda", non_blocking=True)
        torch.cuda.synchronize()
        rates[name] = 5 * blob.numel() / (time.perf_counter() - start) / 1e9
    checks.check(
        "pinned transfer rate",
        rates["pinned"] >= rates["pageable"],
        f"host->device {rates['pinned']:.1f} GB/s pinned vs {rates['pageable']:.1f} GB/s pageable (256 MB)",
    )


def check_scores_and_speed(checks: Checks, path: Path, rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    import torch
    import transformers
    from _common import table
    from p4_reward_model import G, grpo_batch, per_sample_loop, spearman

    from rewardflow.models import RewardModel

    device = "cpu" if args.dry_run else "cuda"
    cuda = device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    fp32 = RewardModel(str(path), device=device, dtype="float32", offload="none", max_length=1024)
    fp32.groups_together = True  # the accelerator's default, here on the dry run's CPU too
    prompts, completions = grpo_batch(fp32.tokenizer, rows, args.prompts)
    ids = fp32.encode(prompts, completions)
    n_ref = min(len(ids), 64)
    cpu_model = transformers.AutoModelForSequenceClassification.from_pretrained(str(path)).eval()
    reference = per_sample_loop(cpu_model, ids[:n_ref])
    scores = fp32(prompts, completions)
    report = fp32.last_report
    assert report is not None
    diff = max(abs(a - b) for a, b in zip(scores[:n_ref], reference, strict=True))
    checks.check(
        f"{device} fp32 scores == CPU per-sample loop",
        diff < 1e-4 and report.prefix_sharing == "on",
        f"max |diff| {diff:.1e} over {n_ref} samples; prefix sharing: {report.prefix_sharing}",
    )
    model = cpu_model.to(device)

    def loop() -> list[float]:
        with torch.inference_mode():
            out = [model(input_ids=torch.tensor([s], device=device)).logits[0, 0] for s in ids]
        return [float(x) for x in out]

    plain = RewardModel(str(path), device=device, dtype="float32", offload="none", max_length=1024, share_prefix=False)
    apart = RewardModel(str(path), device=device, dtype="float32", offload="none", max_length=1024)
    apart.groups_together = False  # one pass per group's prompt, and per group's completions (the CPU's choice)
    default = RewardModel(str(path), device=device, offload="none", max_length=1024)  # bf16 on a GPU, fp32 on a CPU
    paths: dict[str, Callable[[], Any]] = {
        "loop": loop,
        "shared": lambda: fp32(prompts, completions),
        "shared, pass per group": lambda: apart(prompts, completions),
        "plain": lambda: plain(prompts, completions),
        "default dtype": lambda: default(prompts, completions),
    }
    for fn in paths.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {k: [] for k in paths}
    outputs: dict[str, Any] = {}
    for _ in range(args.rounds):
        for key, fn in paths.items():
            outputs[key], t = _timed(fn, sync)
            times[key].append(t)
    n = len(prompts)
    best = {k: min(v) for k, v in times.items()}
    print(
        table(
            [("path", "best s", "samples/s", "vs loop")]
            + [(k, f"{best[k]:.3f}", f"{n / best[k]:.0f}", f"{best['loop'] / best[k]:.2f}x") for k in paths]
        )
    )
    speedup = best["loop"] / best["shared"]
    detail = f"{speedup:.2f}x at {args.prompts} x {G} (target >= 2x)"
    over_plain = best["plain"] / best["shared"]
    detail_plain = f"{over_plain:.2f}x padded batches without sharing (compute: 2.1x less)"
    if cuda:
        checks.check("GRPO prefix sharing vs per-sample loop", speedup >= 2, detail)
        checks.check("GRPO prefix sharing vs padded batches", over_plain >= 1, detail_plain)
    else:
        print(f"[info] GRPO prefix sharing vs per-sample loop: {detail}; not judged on a shared CPU", flush=True)
        print(f"[info] GRPO prefix sharing vs padded batches: {detail_plain}; not judged on a shared CPU", flush=True)
    same = max(abs(a - b) for a, b in zip(outputs["shared, pass per group"], outputs["shared"], strict=True))
    checks.check("groups together == pass per group", same < 1e-4, f"max |diff| {same:.1e} over {n} samples")
    other = outputs["default dtype"]
    corr = [spearman(other[g : g + G], scores[g : g + G]) for g in range(0, n, G)]
    print(
        f"default dtype ({str(default.dtype).removeprefix('torch.')}) vs fp32: within-group Spearman min "
        f"{min(corr):.4f}, mean {statistics.fmean(corr):.4f}",
        flush=True,
    )


def check_scale(checks: Checks, rows: list[dict[str, Any]], tmp: Path, args: argparse.Namespace) -> None:
    """A 0.6B-parameter RM (12 x 2048, 1.2 GB in bf16): pinned onload rate and memory back to baseline at a size
    where the copy takes real time, and GRPO sharing where the arithmetic, not kernel launches, decides."""
    import torch
    import transformers
    from p4_reward_model import G, build_causal_rm, grpo_batch

    from rewardflow.models import RewardModel

    cuda = not args.dry_run
    device = "cuda" if cuda else "cpu"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    dims = dict(hidden=2048, intermediate=5632, layers=12, heads=16) if cuda else dict(hidden=256, layers=2)
    path = build_causal_rm(tmp / "rm-large", rows, dtype="bfloat16", **dims)
    size = sum(f.stat().st_size for f in path.glob("*.safetensors"))
    # bf16 as on a GPU (where the 16-bit guard does not apply; on the dry run's CPU it is turned off to match)
    bf16: dict[str, Any] = {"device": device, "dtype": "bfloat16", "max_length": 1024, "precision_guard": None}
    rm = RewardModel(str(path), offload="cpu", **bf16)
    prompts, completions = grpo_batch(rm.tokenizer, rows, 16 if cuda else 1)
    base = torch.cuda.memory_allocated() if cuda else 0
    onload, grew = [], []
    for _ in range(3):
        rm(prompts[:G], completions[:G])
        report = rm.last_report
        assert report is not None
        onload.append(report.onload_s)
        if cuda:
            assert report.device_memory_after is not None and report.device_memory_before is not None
            grew.append(report.device_memory_after - report.device_memory_before)
    rate = size / statistics.median(onload) / 1e9
    detail = f"{size / 1e9:.2f} GB onloaded in {statistics.median(onload) * 1e3:.0f} ms median ({rate:.1f} GB/s)"
    if cuda:
        back = max(grew) == 0 and torch.cuda.memory_allocated() == base
        checks.check("memory back to baseline at 1.2 GB (cpu)", back, f"after - before per call: {grew}; {detail}")
    else:
        print(f"[info] onload at scale (CPU side): {detail}", flush=True)
    rm.close()
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(path), dtype=torch.bfloat16)
    model = model.to(device).eval()
    shared = RewardModel(str(path), offload="none", **bf16)
    plain = RewardModel(str(path), offload="none", share_prefix=False, **bf16)
    ids = shared.encode(prompts, completions)

    def loop() -> list[float]:
        with torch.inference_mode():
            return [float(model(input_ids=torch.tensor([s], device=device)).logits[0, 0]) for s in ids]

    paths = {"loop": loop, "shared": lambda: shared(prompts, completions), "plain": lambda: plain(prompts, completions)}
    best = {}
    for key, fn in paths.items():
        fn()
        best[key] = min(_timed(fn, sync)[1] for _ in range(args.rounds))
    n = len(prompts)
    over_loop, over_plain = best["loop"] / best["shared"], best["plain"] / best["shared"]
    detail = (
        f"{n} samples: loop {best['loop']:.3f} s, padded {best['plain']:.3f} s, shared {best['shared']:.3f} s; "
        f"sharing {over_loop:.2f}x the loop, {over_plain:.2f}x padded batches (2.1x less arithmetic)"
    )
    if cuda:
        checks.check("GRPO prefix sharing at 0.6B parameters beats padded batches", over_plain > 1, detail)
    else:
        print(f"[info] GRPO at scale (CPU side, not judged): {detail}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="run everything on the CPU, small shapes")
    parser.add_argument("--prompts", type=int, default=None, help="GRPO prompts x G=8 (default 64; dry run 2)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 3; dry run 1)")
    args = parser.parse_args(argv)
    missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
    if missing:
        print(f"gpu_check: cannot run: missing Python packages {missing} (see bench/gpu_check.sh for wheels)")
        return 2
    import torch
    import transformers
    from _common import gsm8k_rows
    from p4_reward_model import build_causal_rm

    transformers.logging.set_verbosity_error()
    cuda = not args.dry_run
    if cuda and not torch.cuda.is_available():
        print("gpu_check: cannot run: no CUDA device visible to torch (use --dry-run on a CPU)")
        return 2
    args.prompts = args.prompts or (64 if cuda else 2)
    args.rounds = args.rounds or (3 if cuda else 1)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        where = f"{torch.cuda.get_device_name()} x{torch.cuda.device_count()}"
    else:
        where = "CPU (dry run)"
    print(f"gpu_check on {where}, torch {torch.__version__}, transformers {transformers.__version__}", flush=True)
    start = time.perf_counter()
    checks = Checks()
    rows = gsm8k_rows(1024)
    with tempfile.TemporaryDirectory() as tmp:
        path = build_causal_rm(Path(tmp) / "rm", rows)
        check_rank_device(checks, cuda)
        check_offload(checks, path, "cuda" if cuda else "cpu")
        check_transfer(checks, cuda)
        check_scores_and_speed(checks, path, rows, args)
        check_scale(checks, rows, Path(tmp), args)
    print(f"gpu_check: {time.perf_counter() - start:.0f} s", flush=True)
    return checks.summary()


if __name__ == "__main__":
    sys.exit(main())
