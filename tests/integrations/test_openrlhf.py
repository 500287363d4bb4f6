"""OpenRLHF adapter, loaded and called exactly as OpenRLHF loads and calls ``reward_func``.

``SingleTurnAgentExecutor`` (openrlhf/utils/agent.py) loads the ``--remote_rm_url`` file with
``importlib.util.spec_from_file_location("reward_func", path)`` and, per sample, awaits
``asyncio.to_thread(self.reward_func, [query], [prompt], [label])`` (positional lists; ``query`` = the prompt it
generated from, possibly truncated to its last tokens, + response decoded with special tokens), then reads
``rewards``, ``scores`` and ``extra_logs`` with ``.get``; an exception is caught and logged there at INFO.
Older versions sent chunks of ``micro_rollout_batch_size`` samples. The real executor is driven in
tests/frameworks/openrlhf.
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import rewardflow.integrations.openrlhf as openrlhf_adapter
from rewardflow.errors import ConfigError, RewardFailedError
from rewardflow.integrations.openrlhf import make_reward_func, split_response
from tests.integrations import _rewards_integrations as R


def load_like_openrlhf() -> Any:
    spec = importlib.util.spec_from_file_location("reward_func", openrlhf_adapter.__file__)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.reward_func


@pytest.fixture
def exact_spec(tmp_path: Path) -> Path:
    path = tmp_path / "exact.yaml"
    path.write_text(
        f"""
workers: 2
timeout: 1
rewards:
  - name: accuracy
    reward: {R.__name__}:exact
  - name: brevity
    reward: {R.__name__}:length_bonus
    weight: 0.1
"""
    )
    return path


def test_loaded_and_called_like_the_single_turn_executor(exact_spec: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REWARDFLOW_SPEC", str(exact_spec))
    reward_func = load_like_openrlhf()
    prompt = "<|im_start|>user\n6*7?<|im_end|>\n<|im_start|>assistant\n"

    async def execute(response: str, label: str) -> dict[str, Any]:
        query = prompt + response
        return await asyncio.to_thread(reward_func, [query], [prompt], [label])

    info = asyncio.run(execute("42<|im_end|>", "42"))
    assert set(info) == {"rewards", "scores", "extra_logs"}
    assert isinstance(info["rewards"], torch.Tensor) and info["rewards"].dtype == torch.float32
    assert info["rewards"].tolist() == pytest.approx([1.02])  # the end marker is not part of the answer
    assert info["scores"].tolist() == info["rewards"].tolist()
    assert info["extra_logs"]["rewardflow/accuracy"].tolist() == [1.0]
    assert info["extra_logs"]["rewardflow/brevity"].tolist() == pytest.approx([0.2])
    wrong = asyncio.run(execute("41<|im_end|>", "42"))
    assert wrong["rewards"].tolist() == pytest.approx([0.02])


def test_chunk_call_like_older_versions(exact_spec: Path) -> None:
    reward_func = make_reward_func(exact_spec)
    prompts = ["Q1: ", "Q2: ", "Q3: "]
    queries = [p + r for p, r in zip(prompts, ["1</s>", "2", "x"], strict=True)]
    info = reward_func(queries, prompts, ["1", "2", "3"])
    assert info["rewards"].tolist() == pytest.approx([1.01, 1.01, 0.01])
    assert info["rewards"].shape == (3,)


def test_label_column_name(tmp_path: Path) -> None:
    spec = tmp_path / "verl_style.yaml"
    spec.write_text(f"rewards:\n  - reward: {R.__name__}:verl_style\n")
    # a verl-style reward reads ground_truth; OpenRLHF has no data_source, so it comes from a keyword column
    reward_func = make_reward_func(spec, label_column="ground_truth")
    info = reward_func(["p: YES"], ["p: "], ["yes"], data_source=["lenient"])
    assert info["rewards"].tolist() == [1.0]


def test_failure_is_filtered_not_scored(exact_spec: Path, caplog: pytest.LogCaptureFixture) -> None:
    # OpenRLHF cannot take a None reward (the step crashes later); the failed sample gets a NaN score, which
    # --algo.dynamic_filtering_enable drops with its group, a flagged failure_reward, and a WARNING with the reason
    reward_func = make_reward_func(exact_spec)
    start = time.monotonic()
    with caplog.at_level("WARNING", logger="rewardflow.integrations.openrlhf"):
        info = reward_func(["p: 1", "p: hang"], ["p: ", "p: "], ["1", "1"])
    assert time.monotonic() - start < 6
    assert info["rewards"].tolist() == pytest.approx([1.01, 0.0])
    assert info["scores"][0].item() == pytest.approx(1.01) and torch.isnan(info["scores"][1])
    assert info["extra_logs"]["rewardflow/failed"].tolist() == [0.0, 1.0]
    assert info["extra_logs"]["rewardflow/accuracy"].tolist() == [1.0, 0.0]  # failure_reward, flagged by `failed`
    assert "1 of 2 samples failed: #1 timeout" in caplog.text


def test_failure_reward_and_raise_policy(exact_spec: Path) -> None:
    info = make_reward_func(exact_spec, failure_reward=-1.0)(["p: hang"], ["p: "], ["1"])
    assert info["rewards"].tolist() == [-1.0]
    with pytest.raises(RewardFailedError) as err:
        make_reward_func(exact_spec, on_failure="raise")(["p: hang"], ["p: "], ["1"])
    assert err.value.status == "timeout"
    with pytest.raises(ValueError, match="on_failure"):
        make_reward_func(exact_spec, on_failure="zero")


def test_an_unlocatable_response_is_a_failure_not_the_whole_query(exact_spec: Path) -> None:
    # the query shares no text with the prompt's end: scoring the whole query would score the prompt's answer
    info = make_reward_func(exact_spec)(["1"], ["Q: the answer is 1. A: "], ["1"])
    assert info["extra_logs"]["rewardflow/failed"].tolist() == [1.0]
    assert torch.isnan(info["scores"][0])


@pytest.mark.parametrize(
    "query, prompt, expected",
    [
        ("Q: 2+2? A: 4", "Q: 2+2? A: ", "4"),  # the usual case: the query starts with the prompt
        ("<s>Q: 2+2? A: 4</s>", "Q: 2+2? A: ", "4"),  # detokenisation added a BOS in front
        ("A: 4<|im_end|>\n", "Q: 2+2? A: ", "4"),  # OpenRLHF truncated the prompt to its last tokens
        ("answer is 4. A: no idea", "Q: answer is 4. A: ", "no idea"),  # truncated prompt holding the answer
        ("4", "Q: 2+2? A: ", None),  # the query holds no end of the prompt: no response to score
        ("Q: 4 Q: 4", "Q: ", "4 Q: 4"),  # the response repeats the prompt text: cut at the first occurrence only
        ("Q: 4<|eot_id|><|end_of_text|>", "Q: ", "4"),  # several markers
        ("Q: </s> is a tag", "Q: ", "</s> is a tag"),  # a marker inside the text is kept
    ],
)
def test_split_response(query: str, prompt: str, expected: str | None) -> None:
    assert split_response(query, prompt) == expected


def test_a_model_reward_is_refused(tmp_path: Path) -> None:
    # OpenRLHF calls reward_func once per sample: a reward model there would run one forward pass per completion
    spec = tmp_path / "rm.yaml"
    spec.write_text("rewards:\n  - name: sim\n    reward: similarity\n")
    with pytest.raises(ConfigError, match=r"reward\.model_name_or_path"):
        make_reward_func(spec)(["q 18"], ["q "], ["18"])
