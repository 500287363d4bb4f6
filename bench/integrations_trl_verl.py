"""TRL and verl, driven for real: first reward step against inline, and a hung reward against the framework's own.

Needs the framework venvs (``bash tests/frameworks/trl/run.sh`` and ``bash tests/frameworks/verl/run.sh`` build
them). Every row is one fresh process, run side by side in this one invocation::

    python bench/integrations_trl_verl.py [--before DIR]

``--before DIR`` also runs the TRL script against another rewardflow checkout (e.g. ``git worktree add DIR
66d3068``, the code before the forkserver fix): the script is copied there and imports that checkout.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRL_PY = ROOT / ".venv-trl" / "bin" / "python"
VERL_PY = ROOT / ".venv-verl" / "bin" / "python"
STALL_S = 30  # how long the framework's own path is given before it counts as stalled


def trl_run(root: Path, mode: str, workdir: Path, *flags: str) -> dict:
    out = workdir / f"{mode}-{'-'.join(flags) or 'default'}.json"
    cmd = [str(TRL_PY), str(root / "tests/frameworks/trl/grpo_script.py"), "--mode", mode, "--workdir", str(workdir)]
    start = time.monotonic()
    try:
        proc = subprocess.run([*cmd, "--out", str(out), *flags], capture_output=True, text=True, timeout=STALL_S * 4)
    except subprocess.TimeoutExpired:
        return {"stalled": True, "wall_s": time.monotonic() - start}
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(out.read_text())
    result["wall_s"] = time.monotonic() - start
    return result


def trl_plain_hang(workdir: Path) -> dict:
    """TRL's own path with a hung row: a plain sync reward function, given STALL_S after the trainer starts."""
    cmd = [str(TRL_PY), str(ROOT / "tests/frameworks/trl/grpo_script.py"), "--mode", "plain", "--workdir", str(workdir)]
    start = time.monotonic()
    proc = subprocess.Popen([*cmd, "--out", str(workdir / "plain.json")], stderr=subprocess.PIPE, text=True)
    # the hung row comes in one of the 2 steps; wait for the trainer's progress bar, then STALL_S more
    try:
        proc.wait(timeout=STALL_S + 60)
        return {"stalled": False, "wall_s": time.monotonic() - start}
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return {"stalled": True, "wall_s": time.monotonic() - start}


def verl_run(what: str, workdir: Path, timeout: float = STALL_S * 4) -> dict:
    cmd = [str(VERL_PY), str(ROOT / "bench/_verl_driver.py"), what, str(workdir)]
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"stalled": True, "wall_s": time.monotonic() - start}
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", type=Path, help="another rewardflow checkout to run the TRL script against")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rf-bench-"))

    print("## TRL (real GRPOTrainer, tiny random Llama, 2 steps, batch of 4 completions)\n")
    inline = trl_run(ROOT, "inline", work, "--gsm8k")
    rows = [("rewardflow inline (kind=inline)", inline)]
    if args.before:
        shutil.copytree(ROOT / "tests/frameworks/trl", args.before / "tests/frameworks/trl", dirs_exist_ok=True)
        rows.append(
            ("before: process workers (re-run the script)", trl_run(args.before, "sync", work, "--gsm8k", "--no-hang"))
        )
    rows.append(("after: process workers", trl_run(ROOT, "sync", work, "--gsm8k", "--no-hang")))
    base = inline["log_history"][0]["step_time"]
    print(
        "| reward path | trl | first reward call | second reward call | first training step (TRL step_time) "
        "| ratio to inline |"
    )
    print("|---|---|---|---|---|---|")
    for label, r in rows:
        first, second = r["reward_calls"][0], r["reward_calls"][1]
        step = r["log_history"][0]["step_time"]
        print(f"| {label} | {r['trl']} | {first:.3f} s | {second:.3f} s | {step:.2f} s | {step / base:.2f}x |")

    print("\n### TRL hang: one dataset row's reward never returns (2 of the 8 completions), timeout 2 s\n")
    ours = trl_run(ROOT, "sync", work)
    hang_step = max(ours["reward_calls"])
    failed = [e.get("rf/failed") for e in ours["log_history"] if "loss" in e]
    own = trl_plain_hang(work)
    print("| reward path | training run | hung step's reward call | failures reported | wrong zeros |")
    print("|---|---|---|---|---|")
    print(
        f"| rewardflow trl_reward (process, 2 workers) | finished, {ours['wall_s']:.0f} s | {hang_step:.2f} s "
        f"| rf/failed per step {failed} (None to TRL) | 0 |"
    )
    state = f"stalled: killed after {own['wall_s']:.0f} s" if own["stalled"] else f"finished in {own['wall_s']:.0f} s"
    print(f"| TRL's own (plain sync function) | {state} | never returns | 0 | 0 (no result at all) |")

    print("\n## verl 0.9.1 (real RewardLoopWorker, fake DataProto of 16 samples, no Ray)\n")
    first = {k: verl_run(f"first-{k}", work) for k in ("inline", "process")}
    print("| reward path | compute_score_batch (first call, 16 samples) | ratio to inline |")
    print("|---|---|---|")
    for k, r in first.items():
        print(
            f"| naive manager + rewardflow compute_score, gsm8k {k} | {r['wall_s']:.2f} s "
            f"| {r['wall_s'] / first['inline']['wall_s']:.1f}x |"
        )

    print("\n### verl hang: 4 of 16 samples' rewards never return, timeout 2 s\n")
    manager = verl_run("manager-hang", work)
    own = verl_run("own-hang", work, timeout=STALL_S)
    print("| reward path | wall time | failures reported | wrong zeros |")
    print("|---|---|---|---|")
    wrong = sum(1 for s, f in zip(manager["scores"], manager["failed"], strict=True) if s == 0.0 and f == 1.0)
    print(
        f"| RewardflowRewardManager, failure_score=-1 | {manager['wall_s']:.2f} s "
        f"| {int(sum(manager['failed']))} (rewardflow_failed=1) | {wrong} |"
    )
    state = f"stalled: killed after {own['wall_s']:.0f} s" if own.get("stalled") else f"{own['wall_s']:.2f} s"
    print(f"| verl's own (naive manager, plain compute_score) | {state} | 0 | 0 (no result at all) |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
