"""Reward workers do not re-run the caller's main script (issue 10: a TRL script's workers re-imported torch and
trl, 61-63 s for the first reward step instead of 3.9 s). The script below appends its pid to a file every time
its top level runs; the parent itself accounts for one line."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import os, sys
    with open(sys.argv[2], "a") as f:  # stands for `import torch, trl`: what a worker must not repeat
        f.write(f"{os.getpid()}\\n")

    from rewardflow import Engine
    from tests.integrations._rewards_integrations import exact


    def main_exact(completion, answer):
        return float(completion == answer)


    if __name__ == "__main__":
        reward = main_exact if sys.argv[1] == "main" else exact
        rows = [{"prompt": "q", "completion": str(i % 3), "answer": "1"} for i in range(40)]
        with Engine(reward, kind="process", workers=3, timeout=5) as engine:
            first = engine.score(rows)
            for pid in engine._pool.pids[:2]:  # two workers die; their replacements start from the forkserver
                os.kill(pid, 9)
            second = engine.score(rows)
        assert [r.value for r in first] == [r.value for r in second] == [float(i % 3 == 1) for i in range(40)]
        print("ok")
    """
)


@pytest.mark.parametrize(
    "where, runs",
    [
        ("module", 1),  # rewards imported by name: the script never runs outside the parent
        ("main", 2),  # a reward defined in the script: it runs once more, in the forkserver, not per worker
    ],
)
def test_workers_do_not_rerun_the_main_script(where: str, runs: int, tmp_path: Path) -> None:
    script, log = tmp_path / "train.py", tmp_path / "runs.txt"
    script.write_text(SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), where, str(log)],
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]
    assert len(log.read_text().split()) == runs
