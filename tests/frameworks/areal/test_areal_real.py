"""rewardflow inside the real AReaL 1.0.4: its workflows, its executor, its single-controller import path.

Driven for real: ``RLVRWorkflow``/``MultiTurnWorkflow`` (through rewardflow's subclasses in
``rewardflow.integrations.areal_workflows``), ``GroupedRolloutWorkflow`` and ``WorkflowExecutor``
(``areal/infra``), AReaL's RPC serialisation and ``RemoteInfEngine._resolve_workflow`` in a separate process
(what a rollout worker does in single-controller mode), and AReaL's Anthropic math agent, which calls its reward
positionally. Faked: the inference engine (canned token ids, EOS included, from a tokenizer built on the spot)
and the Anthropic HTTP endpoint (httpx ``MockTransport``).

The completions end in ``<|im_end|>`` because RLVR decodes without ``skip_special_tokens``; scoring them 1.0
needs the extractors to strip end-of-sequence markers (rules/, the math branch).
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

areal = pytest.importorskip("areal")

from areal.api import ModelResponse  # noqa: E402
from areal.api.cli_args import GenerationHyperparameters, InferenceEngineConfig  # noqa: E402
from areal.infra.remote_inf_engine import GroupedRolloutWorkflow  # noqa: E402
from areal.infra.workflow_executor import WorkflowExecutor  # noqa: E402

from rewardflow.errors import RewardFailedError  # noqa: E402
from rewardflow.integrations import areal_workflows  # noqa: E402
from rewardflow.integrations.areal import AsyncRewardWrapper  # noqa: E402
from tests.frameworks._tokenizer import build_tokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
HANG = "tests.frameworks.areal._rewards_areal.slow_on_hang"
QUESTION = "Natalia sold 48 clips in April and half as many in May. How many clips in April and May?"
# the model's answers, cycled per prompt; each decodes with its EOS marker, as RLVR sees it
ANSWERS = {
    "clips": ["The answer is 72.<|im_end|>", "#### 72<|im_end|>", "#### 71<|im_end|>", "I am not sure.<|im_end|>"],
    "hang": ["#### 72<|im_end|>", "hang<|im_end|>", "#### 72<|im_end|>", "#### 72<|im_end|>"],
}


class CannedEngine:
    """What ``WorkflowExecutor`` and the workflows need from an inference engine: ``agenerate``, ``get_version``."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.calls: dict[str, int] = {}

    def get_version(self) -> int:
        return 0

    async def agenerate(self, req: Any) -> ModelResponse:
        prompt = self.tokenizer.decode(req.input_ids)
        key = "hang" if "hang" in prompt else "clips"
        i = self.calls.get(key, 0)
        self.calls[key] = i + 1
        out = self.tokenizer.encode(ANSWERS[key][i % 4], add_special_tokens=False)
        return ModelResponse(
            input_tokens=list(req.input_ids),
            output_tokens=out,
            output_logprobs=[0.0] * len(out),
            output_versions=[0] * len(out),
            stop_reason="stop",
            tokenizer=self.tokenizer,
        )


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return build_tokenizer(tmp_path_factory.mktemp("tok"))


def row(question: str = QUESTION) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": question}], "answer": "#### 72"}


def rewards_of(traj: dict[str, Any]) -> list[float]:
    return [round(float(r), 3) for r in traj["rewards"].tolist()]


def test_rlvr_workflow_scores_completions_that_end_in_eos(tokenizer: Any) -> None:
    engine = CannedEngine(tokenizer)
    workflow = areal_workflows.RLVRWorkflow("gsm8k", GenerationHyperparameters(n_samples=1), tokenizer)
    assert isinstance(workflow.async_reward_fn, AsyncRewardWrapper)
    trajs = [asyncio.run(workflow.arun_episode(engine, row())) for _ in range(4)]
    # "The answer is 72.<|im_end|>" and "#### 72<|im_end|>" are right: a 0 there would be a false zero
    assert [rewards_of(t)[0] for t in trajs] == [1.0, 1.0, 0.0, 0.0]
    # the trajectory is AReaL's: prompt + completion tokens, loss only on the completion
    first = trajs[0]
    assert first["input_ids"].shape == first["loss_mask"].shape and int(first["loss_mask"].sum()) > 0


def test_grouped_workflow_in_the_executor_rejects_the_group_of_a_failed_sample(tokenizer: Any) -> None:
    """A hung reward is cut at its timeout; AReaL rejects that prompt's whole group, the other group is kept."""
    engine = CannedEngine(tokenizer)
    inner = areal_workflows.RLVRWorkflow(
        HANG, GenerationHyperparameters(n_samples=1), tokenizer, reward_timeout_seconds=2, reward_max_workers=2
    )
    grouped = GroupedRolloutWorkflow(inner, group_size=4, logger=logging.getLogger("test"))
    executor = WorkflowExecutor(
        InferenceEngineConfig(consumer_batch_size=2, max_concurrent_rollouts=4, max_head_offpolicyness=10),
        engine,
    )
    executor.initialize(logger=logging.getLogger("executor"))
    try:
        start = time.monotonic()
        for data in (row(), row("hang " + QUESTION)):
            executor.submit(data, grouped)
        results = executor.wait(count=2, timeout=120)
        wall = time.monotonic() - start
    finally:
        executor.destroy()
    accepted = [r for r in results if r is not None]
    assert len(results) == 2 and len(accepted) == 1  # the hung sample's group is rejected, as a whole
    # gsm8k-style reward here is `startswith("#### 72")`: only the second canned answer is right
    assert sorted(rewards_of(accepted[0])) == [0.0, 0.0, 0.0, 1.0]
    assert wall < 60  # one 2 s timeout, no retry loop (AReaL's wrapper: 15 s x 4 attempts, then a 0)


def test_a_failure_never_becomes_a_score(tokenizer: Any) -> None:
    engine = CannedEngine(tokenizer)
    workflow = areal_workflows.RLVRWorkflow(
        HANG, GenerationHyperparameters(n_samples=1), tokenizer, reward_timeout_seconds=1, reward_max_workers=1
    )
    engine.calls["hang"] = 1  # the next canned answer for this prompt hangs
    with pytest.raises(RewardFailedError) as info:
        asyncio.run(workflow.arun_episode(engine, row("hang " + QUESTION)))
    assert info.value.status == "timeout"


def test_components_and_failures_reach_areals_stats_tracker(tokenizer: Any, tmp_path: Path) -> None:
    from areal.utils import stats_tracker

    spec = tmp_path / "reward.yaml"
    spec.write_text(
        f"workers: 1\ntimeout: 2\nrewards:\n  - name: accuracy\n    reward: gsm8k\n"
        f"  - name: format\n    reward: {HANG.replace('.slow_on_hang', ':slow_on_hang')}\n    weight: 0\n"
    )
    engine = CannedEngine(tokenizer)
    workflow = areal_workflows.RLVRWorkflow(str(spec), GenerationHyperparameters(n_samples=1), tokenizer)
    stats_tracker.get("rollout").export()  # start from an empty scope
    asyncio.run(workflow.arun_episode(engine, row()))
    engine.calls["hang"] = 1  # the next canned answer for this prompt is "hang": the format check hangs
    with pytest.raises(RewardFailedError):
        asyncio.run(workflow.arun_episode(engine, row("hang " + QUESTION)))
    exported = stats_tracker.get("rollout").export()
    assert {"rollout/reward", "rollout/rewardflow/accuracy", "rollout/rewardflow/failed"} <= set(exported)
    assert exported["rollout/rewardflow/failed"] == 1.0


def test_multi_turn_workflow_uses_rewardflow(tokenizer: Any) -> None:
    engine = CannedEngine(tokenizer)
    workflow = areal_workflows.MultiTurnWorkflow(
        "gsm8k", GenerationHyperparameters(n_samples=1), tokenizer, max_turns=3, turn_discount=0.5
    )
    assert isinstance(workflow.async_reward_fn, AsyncRewardWrapper)
    traj = asyncio.run(workflow.arun_episode(engine, row()))
    assert rewards_of(traj) == [1.0]  # right on the first turn ("The answer is 72.<|im_end|>"), no discount


_CHILD = r"""
import asyncio, json, logging, sys, types
from areal.infra.remote_inf_engine import RemoteInfEngine
from areal.infra.rpc.serialization import deserialize_value
sys.path.insert(0, sys.argv[2])
from tests.frameworks.areal.test_areal_real import CannedEngine, row

payload = json.loads(open(sys.argv[1]).read())
kwargs = deserialize_value(payload["workflow_kwargs"])
worker = types.SimpleNamespace(logger=logging.getLogger("worker"), config=None)
workflow = RemoteInfEngine._resolve_workflow(worker, payload["workflow"], kwargs, group_size=4)
engine = CannedEngine(kwargs["tokenizer"])
traj = asyncio.run(workflow.arun_episode(engine, row()))
print(json.dumps({
    "grouped": type(workflow).__name__,
    "wrapper": type(workflow.workflow.async_reward_fn).__module__,
    "rewards": [round(float(r), 3) for r in traj["rewards"].tolist()],
}))
"""


@pytest.mark.parametrize("reward", ["gsm8k", "spec"])
def test_single_controller_imports_the_workflow_by_string_in_a_worker_process(
    tokenizer: Any, tmp_path: Path, reward: str
) -> None:
    """The controller sends a string path and serialised kwargs; a separate process imports and runs it."""
    import areal.workflow.rlvr
    from areal.infra.rpc.serialization import serialize_value

    if reward == "spec":
        spec = tmp_path / "reward.yaml"
        spec.write_text("workers: 2\ntimeout: 10\nrewards:\n  - reward: gsm8k\n")
        reward = str(spec)
    # a monkeypatch in the driver, as the old docs said: it never reaches the worker process
    areal.workflow.rlvr.AsyncRewardWrapper = AsyncRewardWrapper
    kwargs = {"reward_fn": reward, "gconfig": GenerationHyperparameters(n_samples=1), "tokenizer": tokenizer}
    payload = tmp_path / "submit.json"
    for name in ("rewardflow.integrations.areal_workflows.RLVRWorkflow", "areal.workflow.rlvr.RLVRWorkflow"):
        payload.write_text(json.dumps({"workflow": name, "workflow_kwargs": serialize_value(kwargs)}))
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, str(payload), str(ROOT)],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
        )
        if name.startswith("rewardflow"):
            assert proc.returncode == 0, proc.stderr[-3000:]
            out = json.loads(proc.stdout.strip().splitlines()[-1])
            assert out["grouped"] == "GroupedRolloutWorkflow"
            assert out["wrapper"] == "rewardflow.integrations.areal"
            assert sorted(out["rewards"]) == [0.0, 0.0, 1.0, 1.0]
        elif proc.returncode == 0:  # AReaL's own workflow in the worker: AReaL's wrapper, the patch is gone
            out = json.loads(proc.stdout.strip().splitlines()[-1])
            assert out["wrapper"] == "areal.api.reward_api"


def test_agent_workflow_positional_reward_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """AReaL's Anthropic math agent calls ``reward_fn(completion_text, answer)`` positionally."""
    import importlib.util

    try:  # the Anthropic SDK moved to the httpx2 fork; its http_client must come from the same package
        import httpx2 as httpx
    except ImportError:
        import httpx

    # loaded from its file: the package's __init__ also imports the Claude agent SDK, which this agent does not use
    path = Path(areal.__file__).parent / "workflow" / "anthropic" / "math_agent.py"
    spec = importlib.util.spec_from_file_location("areal_anthropic_math_agent", path)
    assert spec is not None and spec.loader is not None
    math_agent = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(math_agent)
    # the agent builds `AsyncRewardWrapper(math_reward_fn)` itself: use rewardflow's under that name, in-process,
    # and a reward of the same signature that worker processes can import (this module was loaded from its file)
    from tests.frameworks.areal import _rewards_areal

    monkeypatch.setattr(math_agent, "AsyncRewardWrapper", AsyncRewardWrapper)
    monkeypatch.setattr(math_agent, "math_reward_fn", _rewards_areal.math_reward_fn)

    def reply(request: Any) -> Any:
        text = "So the total is $\\boxed{72}$."
        return httpx.Response(
            200,
            json={
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": "default",
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": 1, "output_tokens": 1},
            },
        )

    async def run() -> float:
        async with httpx.AsyncClient(transport=httpx.MockTransport(reply)) as client:
            agent = math_agent.MathAgent(max_tokens=16)
            data = {"messages": [{"role": "user", "content": QUESTION}], "answer": "72"}
            return await agent.run(data, http_client=client, base_url="http://rm.invalid", api_key="x")

    assert asyncio.run(run()) == 1.0
