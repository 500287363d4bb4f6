"""No worker process outlives its engine: normal exit, Ctrl-C, and the parent being SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from tests._procs import processes_with, wait_gone

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import sys, threading, time
    from rewardflow import Engine, Sample
    from tests import _rewards

    if __name__ == "__main__":
        mode = sys.argv[1]
        engine = Engine(_rewards.hang_or_score, workers=2, timeout=600)
        if mode == "exit":
            # a scoring call is still running (two hung rewards) when the main thread finishes
            threading.Thread(target=engine.score, args=([Sample("p", "hang")] * 2,), daemon=True).start()
            time.sleep(1.5)
            print("ready", flush=True)
            sys.exit(0)
        print("ready", flush=True)
        engine.score([Sample("p", "hang")] * 2)  # blocks until interrupted or killed
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("how", ["exit", "ctrl-c", "sigkill"])
def test_no_child_process_is_left_behind(how: str, tmp_path: Path) -> None:
    marker = f"RF_ORPHAN_TEST={uuid.uuid4().hex}"
    env = dict(os.environ, PYTHONPATH=str(ROOT), RF_ORPHAN_TEST=marker.split("=")[1])
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), "exit" if how == "exit" else "block"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C must reach the child even when pytest runs in a background job, whose shell hands SIGINT down
        # as ignored (an ignored signal stays ignored across exec)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        # the workers exist and are busy with the hung rewards
        deadline = time.monotonic() + 20
        while len(processes_with(marker)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(processes_with(marker)) >= 3  # parent + forkserver + workers
        time.sleep(0.5)
        if how == "ctrl-c":
            proc.send_signal(signal.SIGINT)
        elif how == "sigkill":
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    left = wait_gone(marker, 15)
    assert left == [], f"processes left behind after {how}: {left}"
    if how == "ctrl-c":
        assert proc.returncode != 0
