"""Real-framework benchmark for AReaL 1.0.4 and OpenRLHF 0.11.2, each run inside its own pinned virtualenv.

AReaL (F1, F2). Rollout groups go through AReaL's real ``WorkflowExecutor`` and ``GroupedRolloutWorkflow``
around its real ``RLVRWorkflow``, with a canned inference engine. F1, the hang test: 10 prompts x 4 samples,
2 of the 40 completions make the reward hang, 1 s timeout and 2 workers on both sides. Side A is AReaL's own
``AsyncRewardWrapper`` (set on the workflow with that timeout, as a user tuning it would). Side B is
``rewardflow.integrations.areal_workflows.RLVRWorkflow``. Counted: wall time until every group is resolved,
groups accepted, *wrong zeros* (a correct completion that got 0) and failures returned as 0. F2: the first group
of a fresh process (worker start-up included), AReaL's wrapper and rewardflow's against the reward called inline.

OpenRLHF (F3, F4). Samples go through OpenRLHF's real ``SingleTurnAgentExecutor`` (loads the reward file, calls
``reward_func`` in a thread) with a canned vLLM engine. F3, the hang test: 8 prompts x 4 samples, 2 hang. Side A
is a plain ``reward_func`` file (OpenRLHF has no timeout of its own), side B rewardflow's ``make_reward_func`` with
a 1 s timeout. F4: the first group of a fresh process, against the plain function.

Run (each framework in its venv, from the repository root; run.sh builds the venv):
``PYTHONPATH=. .venv-areal/bin/python bench/frameworks_bench.py areal`` and
``PYTHONPATH=. .venv-openrlhf/bin/python bench/frameworks_bench.py openrlhf``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.frameworks._tokenizer import build_tokenizer  # noqa: E402

HANG = "tests.frameworks.areal._rewards_areal.slow_on_hang"
RIGHT, WRONG, HANGS = "#### 72<|im_end|>", "#### 71<|im_end|>", "hang<|im_end|>"


def answers_for(prompt_index: int, hang_prompts: set[int]) -> list[str]:
    second = HANGS if prompt_index in hang_prompts else WRONG
    return [RIGHT, second, RIGHT, WRONG]


def question(i: int) -> str:
    return f"Q{i}: Natalia sold 48 clips in April and half as many in May. How many clips?"


# ---------------------------------------------------------------- AReaL


class CannedArealEngine:
    def __init__(self, tokenizer: Any, hang_prompts: set[int]) -> None:
        self.tokenizer, self.hang_prompts, self.calls = tokenizer, hang_prompts, {}

    def get_version(self) -> int:
        return 0

    async def agenerate(self, req: Any) -> Any:
        from areal.api import ModelResponse

        text = self.tokenizer.decode(req.input_ids)
        i = int(text.split("Q", 1)[1].split(":", 1)[0])
        j = self.calls.get(i, 0)
        self.calls[i] = j + 1
        out = self.tokenizer.encode(answers_for(i, self.hang_prompts)[j % 4], add_special_tokens=False)
        return ModelResponse(
            input_tokens=list(req.input_ids),
            output_tokens=out,
            output_logprobs=[0.0] * len(out),
            output_versions=[0] * len(out),
            tokenizer=self.tokenizer,
        )


def areal_workflow(side: str, tokenizer: Any, timeout: float, workers: int) -> Any:
    from areal.api import AsyncRewardWrapper as ArealWrapper
    from areal.api.cli_args import GenerationHyperparameters
    from areal.workflow.rlvr import RLVRWorkflow

    from rewardflow.integrations import areal_workflows
    from rewardflow.registry import import_target

    gconfig = GenerationHyperparameters(n_samples=1)
    if side == "rewardflow":
        return areal_workflows.RLVRWorkflow(
            HANG, gconfig, tokenizer, reward_timeout_seconds=timeout, reward_max_workers=workers
        )
    fn = import_target(HANG)
    workflow = RLVRWorkflow(fn, gconfig, tokenizer)
    if side == "areal":
        workflow.async_reward_fn = ArealWrapper(fn, timeout_seconds=timeout, max_workers=workers, max_retries=3)
    else:  # inline: the reward called in the event loop, no pool

        async def inline(*args: Any, **kwargs: Any) -> float:
            return fn(*args, **kwargs)

        workflow.async_reward_fn = inline
    return workflow


def run_areal_groups(side: str, n_prompts: int, hang_prompts: set[int], tokenizer: Any) -> dict[str, Any]:
    from areal.api.cli_args import InferenceEngineConfig
    from areal.infra.remote_inf_engine import GroupedRolloutWorkflow
    from areal.infra.workflow_executor import WorkflowExecutor

    start = time.perf_counter()
    engine = CannedArealEngine(tokenizer, hang_prompts)
    grouped = GroupedRolloutWorkflow(areal_workflow(side, tokenizer, 1.0, 2), 4, logging.getLogger("bench"))
    config = InferenceEngineConfig(consumer_batch_size=n_prompts, max_concurrent_rollouts=n_prompts)
    executor = WorkflowExecutor(config, engine)
    executor.initialize(logger=logging.getLogger("bench"))
    for i in range(n_prompts):
        executor.submit({"messages": [{"role": "user", "content": question(i)}], "answer": "#### 72"}, grouped)
    results = executor.wait(count=n_prompts, timeout=600)
    wall = time.perf_counter() - start
    executor.destroy()
    accepted = [r for r in results if r is not None]
    wrong_zeros = failures_as_zero = correct = 0
    for traj in accepted:
        for ids, mask, reward in zip(traj["input_ids"], traj["loss_mask"], traj["rewards"].tolist(), strict=True):
            completion = tokenizer.decode([t for t, m in zip(ids.tolist(), mask.tolist(), strict=True) if m])
            if "hang" in completion:
                failures_as_zero += 1
            elif float(reward) != float(completion.startswith("#### 72")):
                wrong_zeros += 1
            else:
                correct += 1
    return {
        "wall": wall,
        "groups": f"{len(accepted)}/{n_prompts}",
        "correct": correct,
        "wrong_zeros": wrong_zeros,
        "failures_as_zero": failures_as_zero,
    }


def areal_main(tmp: Path) -> None:
    tokenizer = build_tokenizer(tmp / "tok")
    print("## F1: AReaL 1.0.4, WorkflowExecutor + GroupedRolloutWorkflow + RLVRWorkflow, 10 prompts x 4, 2 hang")
    print("(timeout 1 s, 2 workers, both sides)\n")
    print("| reward wrapper | wall time | groups accepted | correct scores | wrong zeros | hangs returned as 0 |")
    print("|---|---|---|---|---|---|")
    for side, label in (
        ("rewardflow", "rewardflow areal_workflows.RLVRWorkflow"),
        ("areal", "AReaL AsyncRewardWrapper"),
    ):
        r = run_areal_groups(side, 10, {3, 7}, tokenizer)
        cells = f"{r['wall']:.1f} s | {r['groups']} | {r['correct']} | {r['wrong_zeros']} | {r['failures_as_zero']}"
        print(f"| {label} | {cells} |", flush=True)
    print("\n## F2: AReaL, first group of 4 in a fresh process (worker start-up included)\n")
    first_step_table("areal", tmp)


def areal_first_step(side: str, tmp: Path) -> float:
    import areal.infra.workflow_executor
    import areal.workflow.rlvr  # noqa: F401

    import rewardflow.integrations.areal_workflows  # noqa: F401

    tokenizer = build_tokenizer(tmp / "tok")
    return run_areal_groups(side, 1, set(), tokenizer)["wall"]


# ---------------------------------------------------------------- OpenRLHF


def openrlhf_executor(side: str, tmp: Path, timeout: float) -> Any:
    import importlib.util

    import openrlhf

    path = Path(openrlhf.__file__).parent / "utils" / "agent.py"
    spec = importlib.util.spec_from_file_location("openrlhf_agent_bench", path)
    agent = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(agent)
    reward_file = tmp / f"reward_{side}.py"
    if side == "rewardflow":
        spec_file = tmp / "spec.yaml"
        spec_file.write_text(
            f"workers: 2\ntimeout: {timeout}\nrewards:\n  - reward: {HANG.replace('.slow', ':slow')}\n"
        )
        reward_file.write_text(
            "from rewardflow.integrations.openrlhf import make_reward_func\n"
            f"reward_func = make_reward_func({str(spec_file)!r})\n"
        )
    else:  # what an OpenRLHF user writes: the check, called directly, no timeout
        reward_file.write_text(
            "import torch\n"
            "from rewardflow.integrations.openrlhf import split_response\n"
            f"from {HANG.rsplit('.', 1)[0]} import slow_on_hang\n"
            "def reward_func(queries, prompts, labels):\n"
            "    rows = zip(queries, prompts, labels)\n"
            "    r = [slow_on_hang(p, split_response(q, p), [], [], answer=a) for q, p, a in rows]\n"
            "    return {'rewards': torch.tensor(r), 'scores': torch.tensor(r), 'extra_logs': {}}\n"
        )
    return agent.SingleTurnAgentExecutor(str(reward_file))


class CannedVLLM:
    def __init__(self, tokenizer: Any, text: str) -> None:
        self.tokenizer, self.text = tokenizer, text

    async def generate(self, prompt_token_ids: list[int], params: Any, multi_modal_data: Any = None) -> Any:
        from types import SimpleNamespace

        ids = self.tokenizer.encode(self.text, add_special_tokens=False)
        return SimpleNamespace(
            outputs=[SimpleNamespace(token_ids=ids, text=self.text, finish_reason="stop", logprobs=None)]
        )


def run_openrlhf_groups(side: str, n_prompts: int, hang_prompts: set[int], tmp: Path, cap: float) -> dict[str, Any]:
    from types import SimpleNamespace

    tokenizer = build_tokenizer(tmp / "tok")
    executor = openrlhf_executor(side, tmp, 1.0)  # loads the reward file; rewardflow starts workers on first use
    start = time.perf_counter()
    params = SimpleNamespace(max_tokens=16, logprobs=None)

    async def one(i: int, text: str) -> dict:
        prompt = f"<|im_start|>user\n{question(i)}<|im_end|>\n<|im_start|>assistant\n"
        return await executor.execute(prompt, "#### 72", params, 512, tokenizer, CannedVLLM(tokenizer, text))

    jobs = [(i, text) for i in range(n_prompts) for text in answers_for(i, hang_prompts)]

    async def step() -> list[dict]:
        return await asyncio.wait_for(asyncio.gather(*(one(i, t) for i, t in jobs)), cap)

    loop = asyncio.new_event_loop()  # not asyncio.run: it would wait for hung reward threads at shutdown
    try:
        outs = loop.run_until_complete(step())
    except TimeoutError:
        return {"wall": None, "done": "0 (step blocked)", "correct": 0, "wrong_zeros": 0, "failures_as_zero": 0}
    wall = time.perf_counter() - start
    wrong = as_zero = correct = failed = 0
    for (_, text), out in zip(jobs, outs, strict=True):
        reward = None if out["reward"] is None else float(out["reward"])
        flagged = float(out["extra_logs"].get("rewardflow/failed", 0.0)) == 1.0
        if text == HANGS:
            failed += flagged
            as_zero += reward == 0.0 and not flagged
        elif reward != float(text.startswith("#### 72")):
            wrong += 1
        else:
            correct += 1
    return {"wall": wall, "done": f"{len(outs)}", "correct": correct, "wrong_zeros": wrong, "failures_as_zero": as_zero}


def openrlhf_main(tmp: Path) -> None:
    print("## F3: OpenRLHF 0.11.2, SingleTurnAgentExecutor, 8 prompts x 4 samples, 2 hang\n")
    print("| reward_func | wall time | samples returned | correct scores | wrong zeros | hangs returned as 0 |")
    print("|---|---|---|---|---|---|")
    for side, label in (("rewardflow", "rewardflow make_reward_func, timeout 1 s"), ("plain", "plain reward_func")):
        r = run_openrlhf_groups(side, 8, {3, 6}, tmp, cap=60.0)
        wall = "> 60 s (never returns)" if r["wall"] is None else f"{r['wall']:.1f} s"
        cells = f"{wall} | {r['done']} | {r['correct']} | {r['wrong_zeros']} | {r['failures_as_zero']}"
        print(f"| {label} | {cells} |", flush=True)
    print("\n## F4: OpenRLHF, first group of 4 in a fresh process (worker start-up included)\n")
    first_step_table("openrlhf", tmp)


def openrlhf_first_step(side: str, tmp: Path) -> float:
    return run_openrlhf_groups(side, 1, set(), tmp, cap=300.0)["wall"]


# ---------------------------------------------------------------- shared


def first_step_table(framework: str, tmp: Path) -> None:
    sides = ("inline", "rewardflow", "areal") if framework == "areal" else ("plain", "rewardflow")
    times = {}
    for side in sides:
        out = subprocess.run(
            [sys.executable, __file__, f"{framework}-first", "--side", side],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        ).stdout
        times[side] = json.loads(out.strip().splitlines()[-1])["wall"]
    base = times[sides[0]]
    print(f"| reward | first group | vs {sides[0]} |")
    print("|---|---|---|")
    for side in sides:
        print(f"| {side} | {times[side]:.2f} s | {times[side] / base:.1f}x |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["areal", "openrlhf", "areal-first", "openrlhf-first"])
    parser.add_argument("--side")
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    with tempfile.TemporaryDirectory() as tmp:
        if args.what == "areal":
            areal_main(Path(tmp))
        elif args.what == "openrlhf":
            openrlhf_main(Path(tmp))
        elif args.what == "areal-first":
            print(json.dumps({"wall": areal_first_step(args.side, Path(tmp))}))
        else:
            print(json.dumps({"wall": openrlhf_first_step(args.side, Path(tmp))}))
        sys.stdout.flush()
        # AReaL's pool and the plain OpenRLHF threads still hold hung calls; waiting for them at exit never ends
        for child in multiprocessing.active_children():
            child.kill()
        os._exit(0)


if __name__ == "__main__":
    main()
