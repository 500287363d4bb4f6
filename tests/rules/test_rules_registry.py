"""Every built-in rule is registered, documented, resolvable by dataset name, and runs in worker processes."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from rewardflow import Engine, Status, load_spec
from rewardflow.registry import default_registry
from rewardflow.rules import BUILTINS

ROOT = Path(__file__).resolve().parents[2]
PARAMS = {"length": {"target": 20, "unit": "words"}, "overlong": {"max_length": 10, "cache": 4}}
EXPECTED = {
    "gsm8k",
    "math",
    "geometry3k",
    "clevr_count",
    "multiple_choice",
    "exact_match",
    "f1",
    "format",
    "length",
    "overlong",
    "repetition",
    "json",
    "gsm8k_reward_fn",
    "geometry3k_reward_fn",
    "clevr_count_70k_reward_fn",
}


def test_every_builtin_is_registered() -> None:
    assert {e.name for e in BUILTINS} == EXPECTED
    assert EXPECTED <= set(default_registry().names())


@pytest.mark.parametrize("entry", BUILTINS, ids=[e.name for e in BUILTINS])
def test_builtin_resolves_pickles_and_documents_itself(entry) -> None:  # type: ignore[no-untyped-def]
    fn = default_registry().resolve(entry.name, PARAMS.get(entry.name))
    clone = pickle.loads(pickle.dumps(fn))  # process-kind rewards travel to workers by pickle
    assert callable(clone)
    doc = (type(fn).__doc__ if entry.factory else fn.__doc__) or ""
    assert "1.0" in doc and "0.0" in doc, f"{entry.name}: the docstring must say what scores 1 and 0"


@pytest.mark.parametrize(
    ("dataset", "name"),
    [
        ("hiyouga/geometry3k", "geometry3k"),
        ("BUAADreamer/clevr_count_70k", "clevr_count"),
        ("openai/gsm8k", "gsm8k"),
        ("HuggingFaceH4/MATH-500", "math"),
        ("TIGER-Lab/MMLU-Pro", "multiple_choice"),
    ],
)
def test_dataset_aliases(dataset: str, name: str) -> None:
    entry = default_registry().lookup(dataset)
    assert entry is not None and entry.name == name


def test_factories_take_spec_params(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        """
workers: 2
timeout: 10
rewards:
  - reward: format
    gate: true
    params: {require_boxed: true}
  - name: accuracy
    reward: math
  - reward: overlong
    weight: 0.5
    params: {max_length: 8, cache: 4}
  - reward: json
    name: structured
    weight: 0.0
    params:
      schema: {type: object, required: [answer]}
"""
    )
    rows = [
        {"prompt": "q", "completion": "<think>2+2</think><answer>\\boxed{4}</answer>", "answer": "4",
         "completion_ids": [1] * 4},
        {"prompt": "q", "completion": "<think>2+2</think><answer>4</answer>", "answer": "4",
         "completion_ids": [1] * 4},
        {"prompt": "q", "completion": "<think>2+2</think><answer>\\boxed{4}</answer>", "answer": "4",
         "completion_ids": [1] * 10},
    ]  # fmt: skip
    with Engine(load_spec(spec)) as engine:
        results = engine.score(rows)
    assert [r.status for r in results] == [Status.OK] * 3
    assert results[0].value == pytest.approx(2.0)  # format 1 + accuracy 1 + overlong 0
    assert results[1].value == 0.0 and "gate" in results[1].reason  # no \boxed: the format gate zeroes it
    assert results[2].value == pytest.approx(1.5)  # 10 tokens > max 8: -1 * 0.5
    assert results[2].components["overlong"] == -1.0


def test_areal_style_reward_runs_in_workers() -> None:
    rows = [{"prompt": "p", "completion": "[3]", "answer": "3"}, {"prompt": "p", "completion": "[3]", "answer": "4"}]
    with Engine("clevr_count_70k_reward_fn", workers=2) as engine:
        assert [r.value for r in engine.score(rows)] == [1.0, 0.0]


def test_lazy_public_names() -> None:
    import subprocess
    import sys

    import rewardflow.rules as rules

    for name in rules.__all__:
        assert getattr(rules, name) is not None
    with pytest.raises(AttributeError):
        rules.nope  # noqa: B018
    # importing the package (as the registry does) must not import sympy or math-verify
    code = "import sys, rewardflow.rules; assert 'sympy' not in sys.modules and 'math_verify' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
