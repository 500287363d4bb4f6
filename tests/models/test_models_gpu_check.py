"""``bench/gpu_check.sh`` runs on a lent GPU once in a while; its ``--dry-run`` runs the same Python on the CPU here.

So the script cannot rot between two GPU sessions: every check's code path runs (the CUDA-only halves report
``skip``), scores are compared with the per-sample loop for real, and the summary line and exit status are the
ones a GPU run prints.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu_check.sh"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=600, check=False
    )


def test_dry_run_passes_every_check_it_can_run_on_the_cpu() -> None:
    done = _run("--dry-run")
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    lines = out.strip().splitlines()
    assert lines[-1].startswith("gpu_check: PASS ("), lines[-1]
    assert "[ok] cpu fp32 scores == CPU per-sample loop: max |diff|" in out
    assert "prefix sharing: on" in out
    for name in ("offload after each call (cpu, CPU side)", "offload after each call (release, CPU side)"):
        assert f"[ok] {name}" in out
    for name in ("pinned host copies", "pinned transfer rate", "memory back to baseline (cpu)", "device per rank"):
        assert f"[skip] {name}: needs CUDA" in out
    assert "[ok] groups together == pass per group" in out  # the accelerator's grouping, run on the CPU
    assert "[info] GRPO at scale (CPU side, not judged)" in out  # the scale check ran, on small shapes
    assert "[FAIL]" not in out


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_the_real_run_refuses_with_exit_2() -> None:
    done = _run()
    assert done.returncode == 2, done.stdout + done.stderr
    assert "gpu_check: cannot run: no CUDA device visible to torch" in done.stdout
