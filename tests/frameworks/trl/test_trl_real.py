"""rewardflow's TRL adapter inside a real, pinned TRL: GRPOTrainer, 2 steps on a tiny random Llama, on CPU.

Each test runs tests/frameworks/trl/grpo_script.py as its own process, as a user runs a training script: the
script imports torch and trl at the top, which is what made every reward worker re-import them on rewardflow 0.1
(61-63 s for the first reward step instead of 3.9 s). One dataset row hangs its reward forever.

What each test checks fails on rewardflow 0.1: the ``trl_in_worker`` component is 1.0 there (workers re-ran the
script), and no component reached TRL's ``log_metric`` (only TRL's own ``rewards/rf/mean``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("grpo_script.py")
TRL_VERSION = "1.16.0"


def run_script(mode: str, workdir: Path) -> dict:
    out = workdir / f"{mode}.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--mode", mode, "--workdir", str(workdir), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(out.read_text())
    result["stderr"] = proc.stderr
    return result


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("trl")


def step_logs(result: dict) -> list[dict]:
    return [entry for entry in result["log_history"] if "loss" in entry]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_grpo_trainer_with_rewardflow(mode: str, workdir: Path) -> None:
    result = run_script(mode, workdir)
    assert result["trl"] == TRL_VERSION
    steps = step_logs(result)
    assert len(steps) == 2, result["log_history"]
    for entry in steps:
        # components reach TRL's log_metric, next to TRL's own metrics
        for key in ("rf/length", "rf/digits", "rf/trl_in_worker", "rf/failed"):
            assert key in entry, (key, sorted(entry))
        assert "rewards/rf/mean" in entry
        # reward workers did not re-run the training script (they never imported trl)
        assert entry["rf/trl_in_worker"] == 0.0
    # the hung row's 2 generations were cut at the 2 s timeout and reported as failures (None for TRL), once
    assert sorted(entry["rf/failed"] for entry in steps) == [0.0, 0.5]
    assert "timed out after 2s" in result["stderr"]
    assert len(result["reward_calls"]) == 2
