"""``rewardflow eval``: agreement, confusion matrix, error rows counted apart, disagreements file, PNG."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rewardflow import Engine, InputError
from rewardflow.cli import app
from rewardflow.evaluate import EvalReport, demo_input, evaluate, parse_label, plot_report

runner = CliRunner()


def _write(path: Path, rows: list[object]) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


ROWS: list[object] = [
    {"completion": "#### 5", "answer": "#### 5", "label": True},  # true positive
    {"completion": "#### 4", "answer": "#### 5", "label": "false"},  # true negative
    {"completion": "#### 5", "answer": "#### 5", "label": 0},  # false positive
    {"completion": "#### 6", "answer": "#### 5", "label": "TRUE"},  # false negative (reward says 0)
    {"completion": "#### 5", "answer": "#### 5", "label": "maybe"},  # bad label
    {"completion": "#### 5", "answer": "#### 5"},  # missing label
    {"completion": "#### 5", "label": True},  # no gold: error, not a negative
    "{broken json",  # error
    {"answer": "#### 5", "label": True},  # no completion: error
]


def test_evaluate_counts_every_kind(tmp_path: Path) -> None:
    src = _write(tmp_path / "in.jsonl", ROWS)
    out = tmp_path / "dis" / "disagreements.jsonl"
    with Engine("gsm8k", kind="inline") as engine:
        report = evaluate(src, "gsm8k", label="label", disagreements=out, engine=engine)
    assert (report.rows, report.compared) == (9, 4)
    assert (report.true_positives, report.true_negatives) == (1, 1)
    assert (report.false_positives, report.false_negatives) == (1, 1)
    assert (report.errors, report.timeouts, report.bad_labels) == (3, 0, 2)
    assert report.agreement == 0.5 and report.precision == 0.5 and report.recall == 0.5
    written = [json.loads(line) for line in out.read_text().splitlines()]
    kinds = [(w["line"], w["kind"]) for w in written]
    assert kinds == [
        (3, "false_positive"),
        (4, "false_negative"),
        (5, "bad_label"),
        (6, "bad_label"),
        (7, "error"),
        (8, "error"),
        (9, "error"),
    ]
    assert written[0]["row"]["completion"] == "#### 5" and written[0]["reward"] == 1.0
    assert "missing gold" in written[4]["reason"] and "malformed JSON" in written[5]["reason"]


def test_rates_are_none_without_a_denominator() -> None:
    report = EvalReport(reward="r", label="l", threshold=0.5)
    assert report.agreement is None and report.precision is None and report.recall is None
    assert report.to_dict()["compared"] == 0


@pytest.mark.parametrize(
    ("value", "expected"), [(True, True), (0, False), (1.0, True), ("Yes", True), (" false ", False), ("0", False)]
)
def test_parse_label(value: object, expected: bool) -> None:
    assert parse_label(value) is expected


@pytest.mark.parametrize("value", [2, "maybe", None, [1], float("nan")])
def test_parse_label_rejects(value: object) -> None:
    with pytest.raises(InputError):
        parse_label(value)


def test_gsm8k_agrees_with_all_5276_labels_via_eval(tmp_path: Path) -> None:
    """The acceptance figure: `gsm8k` vs the example-solution labels, 5,276 / 5,276, through `evaluate`."""
    with Engine("gsm8k", kind="inline") as engine:
        report = evaluate(demo_input(), "gsm8k", disagreements=tmp_path / "d.jsonl", engine=engine)
    assert report.rows == 5276
    assert report.agreed == 5276 and report.compared == 5276
    assert (report.errors, report.timeouts, report.bad_labels) == (0, 0, 0)
    assert report.true_positives == sum(1 for _ in _labels(True)) and report.false_positives == 0
    assert (tmp_path / "d.jsonl").read_text() == ""


def _labels(value: bool):  # type: ignore[no-untyped-def]
    from rewardflow.data import gsm8k_examples

    return (r for r in gsm8k_examples() if r["is_correct"] is value)


def test_plot_writes_a_png(tmp_path: Path) -> None:
    report = EvalReport(reward="r", label="l", threshold=0.5, true_positives=3, false_negatives=1, true_negatives=5)
    report.values_positive = [1.0, 1.0, 1.0, 0.0]
    report.values_negative = [0.0] * 5
    path = plot_report(report, tmp_path / "fig" / "eval.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    assert report.figure_path == str(path)


def test_cli_eval_demo_subset_and_exit_codes(tmp_path: Path) -> None:
    src = _write(tmp_path / "in.jsonl", ROWS)
    fig = tmp_path / "eval.png"
    dis = tmp_path / "dis.jsonl"
    args = ["eval", str(src), "-r", "gsm8k", "-l", "label", "--figure", str(fig), "--disagreements", str(dis)]
    result = runner.invoke(app, [*args, "--json", "--workers", "1"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["agreed"] == 2 and report["compared"] == 4 and report["errors"] == 3
    assert fig.exists() and len(dis.read_text().splitlines()) == 7
    result = runner.invoke(app, [*args, "--no-figure", "--min-agreement", "0.9", "--workers", "1"])
    assert result.exit_code == 1  # agreement 0.5 < 0.9
    result = runner.invoke(app, ["eval", str(src)])
    assert result.exit_code == 2  # no --reward and no --demo


def test_cli_eval_demo_out_of_the_box(tmp_path: Path) -> None:
    """`rewardflow eval --demo`: the embedded GSM8K solutions, worker processes, 5,276 / 5,276."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(root))
    proc = subprocess.run(
        [sys.executable, "-m", "rewardflow.cli", "eval", "--demo", "--json", "--min-agreement", "1.0"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (report["agreed"], report["compared"], report["rows"]) == (5276, 5276, 5276)
    assert (tmp_path / "rewardflow-eval.png").stat().st_size > 10_000
    assert (tmp_path / "rewardflow-eval-disagreements.jsonl").read_text() == ""
