"""verl adapter, loaded and called exactly as verl loads and calls a custom reward function.

``get_custom_reward_fn`` (verl/trainer/ppo/reward.py) loads ``custom_reward_function.path`` with
``importlib.util.spec_from_file_location("custom_module", path)``, registers it in ``sys.modules``, takes the
attribute named by ``custom_reward_function.name`` and merges ``reward_kwargs`` into every call. The per-sample
managers (verl/workers/reward_manager/naive.py, the reward loop) call
``compute_score(data_source=..., solution_str=..., ground_truth=..., extra_info=...)`` (the reward loop awaits it
when it is a coroutine function and may add ``reward_router_address``/``reward_model_tokenizer``); the batch
manager (verl/workers/reward_manager/batch.py) calls
``compute_score(data_sources=..., solution_strs=..., ground_truths=..., extra_infos=...)`` with numpy arrays.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import inspect
import math
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import rewardflow.integrations.verl as verl_adapter
from rewardflow.errors import ConfigError, RewardFailedError
from rewardflow.integrations.verl import make_compute_score
from tests.integrations import _rewards_integrations as R


def load_like_verl(function_name: str, reward_kwargs: dict[str, Any] | None = None) -> Any:
    spec = importlib.util.spec_from_file_location("custom_module", verl_adapter.__file__)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["custom_module"] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["custom_module"]
    raw_fn = getattr(module, function_name)
    extra = dict(reward_kwargs or {})

    def call_with_kwargs(*args: Any, **kwargs: Any) -> Any:  # verl merges reward_kwargs, which take precedence
        return raw_fn(*args, **{**kwargs, **extra})

    if inspect.iscoroutinefunction(raw_fn):

        async def acall_with_kwargs(*args: Any, **kwargs: Any) -> Any:
            return await raw_fn(*args, **{**kwargs, **extra})

        return acall_with_kwargs
    return call_with_kwargs


def test_module_function_loaded_and_called_like_the_naive_manager(spec_env: Path) -> None:
    compute_score = load_like_verl("compute_score", reward_kwargs={"unused_option": 3})
    # accuracy (1.0) + 0.1 * min(len, 10) / 10
    assert compute_score(data_source="strict", solution_str="42", ground_truth="42", extra_info={"index": 0}) == (
        pytest.approx(1.02)
    )
    assert compute_score(
        data_source="strict", solution_str="Yes", ground_truth="yes", extra_info=None
    ) == pytest.approx(0.03)
    # a numpy string, as verl's non-tensor batch holds them
    assert compute_score(
        data_source=np.str_("lenient"), solution_str="Yes", ground_truth=np.str_("yes"), extra_info={}
    ) == pytest.approx(1.03)


def test_batch_form_like_the_batch_manager_scores_in_parallel(tmp_path: Path) -> None:
    spec = tmp_path / "spans.yaml"
    spec.write_text(f"workers: 3\ntimeout: 10\nrewards:\n  - reward: {R.__name__}:span\n")
    compute_score = make_compute_score(spec, form="batch")
    spans = tmp_path / "spans"
    spans.mkdir()
    n = 3
    scores = compute_score(
        data_sources=np.array(["gsm8k"] * n, dtype=object),
        solution_strs=["sleep 0.6"] * n,
        ground_truths=["1"] * n,
        extra_infos=np.array([{"index": i} for i in range(n)], dtype=object),
        span_dir=str(spans),  # reward_kwargs from verl's configuration reach the reward as a column
    )
    assert scores == [1.0, 1.0, 1.0]
    assert R.max_overlap(R.read_spans(spans)) >= 2


def test_batch_module_function_with_missing_extra_infos(spec_env: Path) -> None:
    compute_score = load_like_verl("compute_score_batch")
    # verl passes [None] * n when the dataset has no extra_info column
    out = compute_score(
        data_sources=np.array(["strict", "lenient"], dtype=object),
        solution_strs=["A", "a"],
        ground_truths=["a", "A"],
        extra_infos=[None, None],
    )
    assert out == pytest.approx([0.01, 1.01])


def test_failure_raises_by_default(spec_file: Path) -> None:
    compute_score = make_compute_score(spec_file)
    start = time.monotonic()
    with pytest.raises(RewardFailedError) as info:
        compute_score(data_source="strict", solution_str="hang", ground_truth="1", extra_info=None)
    assert time.monotonic() - start < 7  # spec timeout 1.5 s; the hung worker is killed
    assert info.value.status == "timeout"
    assert "component 'accuracy': timed out after 1.5s" in str(info.value)
    assert "data_source='strict'" in str(info.value)


def test_failure_score_is_opt_in_and_flagged(spec_file: Path) -> None:
    compute_score = make_compute_score(spec_file, form="batch", failure_score=-1.0)
    out = compute_score(
        data_sources=["strict", "strict"], solution_strs=["1", "hang"], ground_truths=["1", "1"], extra_infos=None
    )
    ok, failed = out
    assert ok == {"score": pytest.approx(1.01), "rewardflow_failed": 0.0, "accuracy": 1.0, "brevity": 0.1}
    assert failed["score"] == -1.0 and failed["rewardflow_failed"] == 1.0
    assert math.isnan(failed["accuracy"]) and failed["brevity"] == pytest.approx(0.4)
    assert set(ok) == set(failed)  # verl collects reward_extra_info per key: the same keys for every sample


def test_details_dict_for_reward_extra_info(spec_file: Path) -> None:
    compute_score = make_compute_score(spec_file, details=True)
    out = compute_score(data_source="strict", solution_str="42", ground_truth="42", extra_info=None)
    assert out == {"score": pytest.approx(1.02), "rewardflow_failed": 0.0, "accuracy": 1.0, "brevity": 0.2}


def test_async_form_in_the_reward_loop(spec_env: Path) -> None:
    compute_score = load_like_verl("compute_score_async")
    assert inspect.iscoroutinefunction(compute_score)
    # the reward loop wraps the function in functools.partial and still detects a coroutine function
    assert inspect.iscoroutinefunction(functools.partial(verl_adapter.compute_score_async))

    class Tokenizer:  # the reward loop's tokenizer is not picklable; it must never reach a worker
        def __reduce__(self) -> Any:
            raise TypeError("tokenizers do not travel")

    async def run() -> list[Any]:
        calls = [
            compute_score(
                data_source="strict",
                solution_str=s,
                ground_truth="7",
                extra_info={"num_turns": 1},
                reward_router_address="127.0.0.1:1",
                reward_model_tokenizer=Tokenizer(),
            )
            for s in ("7", "8")
        ]
        return list(await asyncio.gather(*calls))

    assert asyncio.run(run()) == pytest.approx([1.01, 0.01])


def test_missing_spec_configuration_says_how_to_set_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REWARDFLOW_SPEC", raising=False)
    with pytest.raises(ConfigError, match="REWARDFLOW_SPEC"):
        verl_adapter.compute_score(data_source="x", solution_str="1", ground_truth="1")


def test_engines_are_shared_per_spec(spec_file: Path) -> None:
    a = verl_adapter.VerlReward(spec_file)
    b = verl_adapter.VerlReward(str(spec_file.parent / "." / spec_file.name))  # another spelling of the path
    assert a.engine is b.engine


def test_module_reloaded_by_verl_is_a_plain_module(spec_env: Path) -> None:
    # nothing at import time: loading the file starts no engine and reads no spec
    spec = importlib.util.spec_from_file_location("custom_module_probe", verl_adapter.__file__)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert isinstance(module, ModuleType)
    from rewardflow.integrations._shared import shared_engines

    assert len(shared_engines) == 0


def test_a_model_reward_is_refused_per_sample_and_points_to_the_manager(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    spec = tmp_path / "rm.yaml"
    spec.write_text("rewards:\n  - name: sim\n    reward: similarity\n    params: {reference: ground_truth}\n")
    with pytest.raises(ConfigError, match="RewardflowRewardManager"):
        make_compute_score(spec)("gsm8k", "The answer is 18.", "18")
    with pytest.raises(ConfigError, match="RewardflowRewardManager"):
        asyncio.run(make_compute_score(spec, form="async")("gsm8k", "The answer is 18.", "18"))
    golds = ["She makes 18 dollars a day."] * 2
    scores = make_compute_score(spec, form="batch")(["gsm8k"] * 2, ["She earns 18 dollars daily.", "Paris"], golds)
    assert len(scores) == 2 and scores[0] > scores[1]  # the batch form scores it, whole
