"""The CLI end to end: one output line per input line, in order, whatever the input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rewardflow.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()

LINES = [
    json.dumps({"prompt": "q1", "completion": "so #### 18", "answer": "#### 18", "id": 1}),
    "{not json",  # malformed JSON
    json.dumps({"prompt": "q3", "answer": "#### 3", "id": 3}),  # no completion
    json.dumps([1, 2, 3]),  # not an object
    json.dumps({"prompt": "q5", "completion": "The answer is 7.", "answer": "#### 8", "id": 5, "reward": 9}),
    json.dumps({"prompt": "q6", "completion": "x" * 200_000 + " #### 1,000", "answer": "#### 1000", "id": 6}),
    "",  # empty line
]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "rewardflow.cli", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_score_end_to_end_keeps_every_line(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(LINES) + "\n")
    out = tmp_path / "out.jsonl"
    proc = run_cli("score", str(src), "--reward", "gsm8k", "-o", str(out), "--workers", "2", "--timeout", "5")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == len(LINES)
    assert [r["status"] for r in rows] == ["ok", "error", "error", "error", "ok", "ok", "error"]
    assert rows[0]["reward"] == 1.0 and rows[0]["id"] == 1 and rows[0]["components"] == {"gsm8k": 1.0}
    assert rows[1]["line"] == 2 and rows[1]["reason"].startswith("line 2: malformed JSON")
    assert rows[2]["id"] == 3 and rows[2]["reason"] == "line 3: missing field 'completion'"
    assert rows[3]["reason"] == "line 4: expected a JSON object, got array"  # JSON's type names
    assert rows[4]["reward"] == 0.0 and rows[4]["input_reward"] == 9  # the input's own column is kept
    assert rows[5]["reward"] == 1.0  # a 200 kB completion, thousands separator in the answer
    assert rows[6]["reason"].startswith("line 7: malformed JSON")
    assert all(set(r) >= {"reward", "status", "reason", "components", "latency_ms"} for r in rows)
    # the summary goes to stderr
    assert "status error" in proc.stderr and "rows/s" in proc.stderr


def test_score_to_stdout_with_a_spec(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(LINES[0] + "\n" + LINES[4] + "\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text("rewards:\n  - reward: gsm8k\n    name: acc\n  - reward: math\n    weight: 0.5\n")
    result = runner.invoke(app, ["score", str(src), "--reward", str(spec)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r["reward"] for r in rows] == [1.5, 0.0]
    assert rows[0]["components"] == {"acc": 1.0, "math": 1.0}


def test_score_with_a_model_reward_in_the_spec(tmp_path: Path) -> None:
    # a reward model composes with a rule in the CLI too; malformed lines still get their own row
    pytest.importorskip("torch")
    src = tmp_path / "in.jsonl"
    rows_in = [
        {"prompt": "Janet's eggs?", "completion": "She earns 18 dollars a day. #### 18", "answer": "#### 18"},
        {"prompt": "Janet's eggs?", "completion": "Paris is the capital of France. #### 18", "answer": "#### 18"},
    ]
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "rewards:\n  - reward: gsm8k\n    name: acc\n"
        "  - reward: similarity\n    name: sim\n    params: {reference: gold}\n"
    )
    for row in rows_in:
        row["gold"] = "She makes 18 dollars every day."
    src.write_text("\n".join([json.dumps(rows_in[0]), "{bad", json.dumps(rows_in[1])]) + "\n")
    result = runner.invoke(app, ["score", str(src), "--reward", str(spec)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r["status"] for r in rows] == ["ok", "error", "ok"]
    assert rows[0]["components"]["acc"] == rows[2]["components"]["acc"] == 1.0
    assert rows[0]["components"]["sim"] > rows[2]["components"]["sim"]  # the paraphrase is closer to the gold


def test_strict_mode_and_errors(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("{bad\n")
    assert runner.invoke(app, ["score", str(src), "--reward", "gsm8k", "--strict"]).exit_code == 1
    assert runner.invoke(app, ["score", str(tmp_path / "missing.jsonl"), "--reward", "gsm8k"]).exit_code == 2
    unknown = runner.invoke(app, ["score", str(src), "--reward", "gsm8"])
    assert unknown.exit_code == 2 and "did you mean 'gsm8k'" in unknown.output


def test_list_shows_builtins() -> None:
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0
    assert "gsm8k" in result.stdout and "math" in result.stdout


def test_demo_agrees_with_all_5276_labels() -> None:
    proc = run_cli("demo", "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    assert "agreement with labels: 5276 / 5276" in proc.stdout
