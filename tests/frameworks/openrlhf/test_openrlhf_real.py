"""rewardflow inside the real OpenRLHF 0.11.2: its reward-file loader, its executor, its sample filter, its CLI.

Driven for real: ``SingleTurnAgentExecutor`` (``openrlhf/utils/agent.py``: loads ``reward_func`` from the
``--reward.remote_url`` file, tokenizes and truncates the prompt, decodes the query with special tokens, calls the
function in a thread), ``SamplesGenerator._generate_vllm`` and ``_process_response_into_experience``
(``openrlhf/trainer/ppo_utils/samples_generator.py``: turns each response into an ``Experience`` and applies
``--algo.dynamic_filtering_enable``), and the argument parser and checks of ``openrlhf.cli.train_ppo_ray``.
Faked: the vLLM engine (canned token ids, EOS included, from a tokenizer built on the spot), and, as OpenRLHF's own
tests do, the ``ray``/``vllm`` modules those files import (nothing here launches Ray or vLLM).

Over HTTP: the same executor given ``--reward.remote_url http://.../get_reward`` posts with OpenRLHF's own
``_fetch_rewards_via_http`` (aiohttp, 5 tries) to a real ``rewardflow serve`` subprocess on a loopback port.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import math
import re
import runpy
import shlex
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest.mock import MagicMock

import pytest

openrlhf = pytest.importorskip("openrlhf")

import torch  # noqa: E402

from tests.frameworks._tokenizer import build_tokenizer  # noqa: E402

PKG = Path(openrlhf.__file__).parent
ROOT = Path(__file__).resolve().parents[3]
QUESTION = "Natalia sold 48 clips in April and half as many in May. How many clips did she sell?"


def load(relpath: str, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, PKG / relpath)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return build_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture
def reward_file(tmp_path: Path) -> Path:
    """The user's ``--reward.remote_url`` file, as the docs tell them to write it."""
    spec = tmp_path / "reward_spec.yaml"
    spec.write_text(
        "workers: 2\ntimeout: 10\nrewards:\n"
        "  - name: accuracy\n    reward: gsm8k\n"
        "  - name: verifier\n    reward: tests.frameworks.openrlhf._rewards_openrlhf:fails_on_boom\n    weight: 0\n"
    )
    path = tmp_path / "my_reward_func.py"
    code = "from rewardflow.integrations.openrlhf import make_reward_func\n\n"
    path.write_text(code + f"reward_func = make_reward_func({str(spec)!r})\n")
    return path


class CannedVLLM:
    """``llm_engine.generate(prompt_token_ids, sampling_params, multi_modal_data=...)`` with a canned answer."""

    def __init__(self, tokenizer: Any, answers: list[str]) -> None:
        self.tokenizer, self.answers, self.prompts = tokenizer, list(answers), []

    async def generate(self, prompt_token_ids: list[int], params: Any, multi_modal_data: Any = None) -> Any:
        self.prompts.append(list(prompt_token_ids))
        text = self.answers.pop(0)
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        out = SimpleNamespace(token_ids=ids, text=text, finish_reason="stop", logprobs=None)
        return SimpleNamespace(outputs=[out])


def chat(question: str) -> str:
    return f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


def execute(executor: Any, tokenizer: Any, prompt: str, label: str, answer: str, max_length: int = 512) -> dict:
    engine = CannedVLLM(tokenizer, [answer])
    params = SimpleNamespace(max_tokens=16, logprobs=None)
    return asyncio.run(executor.execute(prompt, label, params, max_length, tokenizer, engine))


@pytest.fixture
def agent() -> Any:
    return load("utils/agent.py", "openrlhf_agent_under_test")


def test_reward_file_loaded_and_scored_by_the_single_turn_executor(agent: Any, reward_file: Path, tokenizer: Any):
    executor = agent.SingleTurnAgentExecutor(str(reward_file))  # --reward.remote_url /abs/my_reward_func.py
    out = execute(executor, tokenizer, chat(QUESTION), "#### 72", "48 + 24 = 72. #### 72<|im_end|>")
    assert float(out["reward"]) == 1.0 and float(out["scores"]) == 1.0
    assert float(out["extra_logs"]["rewardflow/accuracy"]) == 1.0
    assert float(out["extra_logs"]["rewardflow/failed"]) == 0.0
    wrong = execute(executor, tokenizer, chat(QUESTION), "#### 72", "#### 71<|im_end|>")
    assert float(wrong["reward"]) == 0.0


def test_module_level_reward_func_from_the_spec_env(agent: Any, reward_file: Path, tokenizer: Any, monkeypatch):
    import rewardflow.integrations.openrlhf as adapter

    monkeypatch.setenv("REWARDFLOW_SPEC", str(reward_file.with_name("reward_spec.yaml")))
    executor = agent.SingleTurnAgentExecutor(adapter.__file__)
    out = execute(executor, tokenizer, chat(QUESTION), "#### 72", "#### 72<|im_end|>")
    assert float(out["reward"]) == 1.0


def test_truncated_prompt_holding_the_answer_does_not_score_the_response(agent: Any, reward_file: Path, tokenizer):
    """OpenRLHF keeps the prompt's last tokens; an answer in the prompt must not be credited to the response."""
    executor = agent.SingleTurnAgentExecutor(str(reward_file))
    prompt = chat(QUESTION + " A classmate wrote \\boxed{72} as the answer.")
    n_prompt = len(tokenizer(text=prompt, add_special_tokens=False)["input_ids"])
    max_length = n_prompt - 10 + 16  # room for 16 new tokens: OpenRLHF drops the prompt's first 10 tokens
    out = execute(executor, tokenizer, prompt, "#### 72", "I am not sure.<|im_end|>", max_length=max_length)
    assert len(out["observation_tokens"]) < n_prompt + 16  # it was truncated
    assert float(out["reward"]) == 0.0
    right = execute(executor, tokenizer, prompt, "#### 72", "#### 72<|im_end|>", max_length=max_length)
    assert float(right["reward"]) == 1.0


def test_a_failed_sample_warns_and_never_becomes_a_none_reward(agent, reward_file, tokenizer, caplog):
    executor = agent.SingleTurnAgentExecutor(str(reward_file))
    with caplog.at_level(logging.WARNING, logger="rewardflow.integrations.openrlhf"):
        out = execute(executor, tokenizer, chat(QUESTION), "#### 72", "boom #### 72<|im_end|>")
    assert out["reward"] is not None  # OpenRLHF 0.11.2 crashes the step on a None reward
    assert float(out["extra_logs"]["rewardflow/failed"]) == 1.0
    assert math.isnan(float(out["scores"]))  # dropped with its group by --algo.dynamic_filtering_enable
    assert "verifier crashed on this completion" in caplog.text


@pytest.fixture
def samples_generator(monkeypatch: pytest.MonkeyPatch) -> Any:
    """OpenRLHF's samples_generator.py, with ``ray``/``vllm`` stood in for, as OpenRLHF's own tests do."""
    experience = load("trainer/ppo_utils/experience.py", "openrlhf.trainer.ppo_utils.experience")
    monkeypatch.setitem(sys.modules, "openrlhf.trainer.ppo_utils.experience", experience)
    monkeypatch.setitem(sys.modules, "openrlhf.trainer.ray.vllm_engine", MagicMock())
    fake_ray = MagicMock()
    fake_ray.wait = lambda refs, num_returns=1, timeout=None: (refs[:1], refs[1:])
    fake_ray.get = lambda ref: ref  # a "ref" here is the list of responses of one prompt
    monkeypatch.setitem(sys.modules, "ray", fake_ray)
    monkeypatch.setitem(sys.modules, "vllm", MagicMock())
    return load("trainer/ppo_utils/samples_generator.py", "openrlhf_samples_generator_under_test")


def test_dynamic_filtering_drops_the_group_of_a_failed_sample(agent, reward_file, tokenizer, samples_generator):
    """A group with a failed sample is filtered and a replacement prompt is drawn; the step gets finite rewards."""
    executor = agent.SingleTurnAgentExecutor(str(reward_file))
    answers = {
        "p0": ["#### 72<|im_end|>", "boom<|im_end|>", "#### 7<|im_end|>", "#### 72<|im_end|>"],
        "p1": ["#### 72<|im_end|>", "#### 70<|im_end|>", "#### 72<|im_end|>", "no<|im_end|>"],
        "p2": ["#### 72<|im_end|>", "#### 72<|im_end|>", "#### 1<|im_end|>", "#### 2<|im_end|>"],
    }

    def dispatch(prompts: list[str], labels: list[str], images: Any = None, **_: Any) -> list[list[dict]]:
        return [
            [execute(executor, tokenizer, prompt, label, a) for a in answers[prompt.split("|")[0]]]
            for prompt, label in zip(prompts, labels, strict=True)
        ]

    def batches():
        for key in ("p0", "p1", "p2"):
            yield None, [f"{key}|{chat(QUESTION)}"], ["#### 72"], [None]

    gen = samples_generator.SamplesGenerator.__new__(samples_generator.SamplesGenerator)
    gen.args = SimpleNamespace(algo=SimpleNamespace(dynamic_filtering_range=[-1000000.0, 1000000.0]))
    gen._dispatch_prompts_to_vllm = dispatch
    experiences, consumed, _ = gen._generate_vllm(batches(), num_prompts=2, dynamic_filtering=True, max_len=512)
    kept = sorted({e.prompts[0].split("|")[0] for e in experiences})
    assert kept == ["p1", "p2"] and consumed == 3  # p0's group was dropped and p2 drawn in its place
    rewards = torch.cat([e.rewards for e in experiences])
    assert torch.isfinite(rewards).all() and rewards.tolist().count(1.0) == 4


def test_without_dynamic_filtering_the_failed_sample_is_a_flagged_finite_reward(
    agent, reward_file, tokenizer, samples_generator
):
    executor = agent.SingleTurnAgentExecutor(str(reward_file))
    out = execute(executor, tokenizer, chat(QUESTION), "#### 72", "boom<|im_end|>")
    gen = samples_generator.SamplesGenerator.__new__(samples_generator.SamplesGenerator)
    experience = gen._process_response_into_experience(out, max_len=512)
    assert experience.rewards is not None and torch.isfinite(experience.rewards).all()
    assert experience.info["rewardflow/failed"].item() == 1.0


def documented_command(lang: str, program: str, which: int = 0) -> list[str]:
    """The ``which``-th bash command of the docs page (en or zh) that runs ``program``, as argv."""
    page = (ROOT / "docs" / lang / "integrations-openrlhf.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```bash\n(.*?)^```", page, flags=re.DOTALL | re.MULTILINE)
    command = [b for b in blocks if program in b][which]
    return shlex.split(command.replace("\\\n", " "))


def documented_flags(lang: str, which: int = 0) -> list[str]:
    """The flags of a training command in the docs page (en or zh): what users copy and paste. 0: the reward
    file; 1: ``rewardflow serve``."""
    argv = documented_command(lang, "openrlhf.cli.train_ppo_ray", which)
    assert argv[:3] == ["python3", "-m", "openrlhf.cli.train_ppo_ray"], argv[:3]
    return argv[3:]


def parse_like_train_ppo_ray(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """Run ``openrlhf.cli.train_ppo_ray`` as ``__main__`` up to the start of ``train(args)``: the real parser and
    checks, with the Ray/DeepSpeed modules it imports stood in for; returns the parsed, checked ``args``."""

    class Parsed(Exception):
        pass

    def stop_at_train() -> bool:
        raise Parsed(sys._getframe(1).f_locals["args"])

    fake_ray = MagicMock()
    fake_ray.is_initialized = stop_at_train
    for name in (
        "ray",
        "ray.util",
        "ray.util.placement_group",
        "openrlhf.trainer",
        "openrlhf.trainer.ray",
        "openrlhf.trainer.ray.launcher",
        "openrlhf.trainer.ray.ppo_actor",
        "openrlhf.trainer.ray.ppo_critic",
    ):
        monkeypatch.setitem(sys.modules, name, fake_ray if name == "ray" else MagicMock())
    monkeypatch.setattr(sys, "argv", ["train_ppo_ray", *argv])
    with pytest.raises(Parsed) as parsed:
        runpy.run_path(str(PKG / "cli" / "train_ppo_ray.py"), run_name="__main__")
    return parsed.value.args[0]


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_the_documented_flags_parse_and_pass_openrlhfs_checks(lang: str, monkeypatch: pytest.MonkeyPatch) -> None:
    args = parse_like_train_ppo_ray(documented_flags(lang), monkeypatch)
    assert args.reward.remote_url == ["/abs/path/my_reward_func.py"]
    assert args.data.label_key == "answer"
    assert args.algo.dynamic_filtering_enable and list(args.algo.dynamic_filtering_range) == [-1e6, 1e6]


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_the_documented_http_setup_parses_and_matches_the_tested_server(lang: str, monkeypatch) -> None:
    """The docs' ``rewardflow serve`` line is the one the failure-value test starts; its URL is what OpenRLHF gets."""
    serve = documented_command(lang, "rewardflow serve")
    assert serve[:2] == ["rewardflow", "serve"] and serve[3:5] == ["--port", "5000"]
    assert serve[5:] == list(FAILURE_VALUE_ARGS)
    args = parse_like_train_ppo_ray(documented_flags(lang, which=1), monkeypatch)
    assert args.reward.remote_url == ["http://127.0.0.1:5000/get_reward"]
    assert args.algo.dynamic_filtering_enable and list(args.algo.dynamic_filtering_range) == [-1e6, 1e6]


@pytest.mark.parametrize("old", [["--remote_rm_url", "x.py"], ["--label_key", "answer"], ["--reward_pretrain", "m"]])
def test_the_flags_of_the_old_docs_are_rejected(old: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SystemExit) as info:
        parse_like_train_ppo_ray([*documented_flags("en"), *old], monkeypatch)
    assert info.value.code == 2


# --- OpenRLHF's own HTTP remote-RM client (``--reward.remote_url http://...``) against a real ``rewardflow serve``


FAILURE_VALUE_ARGS = ("--failure-value", "-1e9")


@pytest.fixture(scope="module")
def serve_spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = tmp_path_factory.mktemp("serve") / "spec.yaml"
    spec.write_text("workers: 2\ntimeout: 10\nretries: 0\nrewards:\n  - name: accuracy\n    reward: gsm8k\n")
    return spec


@pytest.fixture(scope="module")
def server(serve_spec: Path) -> Any:
    """``rewardflow serve SPEC`` as a subprocess on a free loopback port, without ``--failure-value``."""
    from tests.server.conftest import Server

    with Server(serve_spec) as running:
        yield running


@pytest.fixture(scope="module")
def server_with_failure_value(serve_spec: Path) -> Any:
    """The same spec served with ``--failure-value -1e9``, the sentinel the docs pair with dynamic filtering."""
    from tests.server.conftest import Server

    with Server(serve_spec, *FAILURE_VALUE_ARGS) as running:
        yield running


def http_executor(agent: Any, *servers: Any) -> Any:
    """OpenRLHF's executor as ``--reward.remote_url URL [URL ...]`` builds it: no file, so rewards go over HTTP."""
    executor = agent.SingleTurnAgentExecutor([s.url + "/get_reward" for s in servers])
    assert executor.reward_func is None
    return executor


def answered(server: Any, code: int, token: str | None = None) -> float:
    """How many ``/get_reward`` requests the server answered with ``code``, from its Prometheus ``/metrics``."""
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    text = httpx.get(server.url + "/metrics", headers=headers, timeout=10).text
    for line in text.splitlines():
        if line.startswith("rewardflow_requests_total{") and 'route="/get_reward"' in line and f'code="{code}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_openrlhf_http_client_gets_rewards_from_rewardflow_serve(agent: Any, server: Any, tokenizer: Any) -> None:
    """The whole executor path: canned generation, decoded query, OpenRLHF's aiohttp POST, its reading of the reply."""
    executor = http_executor(agent, server)
    before = answered(server, 200)
    right = execute(executor, tokenizer, chat(QUESTION), "#### 72", "48 + 24 = 72. #### 72<|im_end|>")
    wrong = execute(executor, tokenizer, chat(QUESTION), "#### 72", "#### 71<|im_end|>")
    # OpenRLHF keeps its shard's reply as is: one-item lists, as from its own serve_rm.py
    assert right["reward"] == [1.0] and right["scores"] == [1.0]
    assert wrong["reward"] == [0.0] and wrong["scores"] == [0.0]
    assert right["extra_logs"] == {"rewardflow/accuracy": [1.0], "rewardflow/failed": [0.0]}
    assert answered(server, 200) == before + 2  # both went over HTTP


def test_openrlhf_http_client_truncated_prompt_scores_only_the_response(agent, server, tokenizer) -> None:
    executor = http_executor(agent, server)
    prompt = chat(QUESTION + " A classmate wrote \\boxed{72} as the answer.")
    n_prompt = len(tokenizer(text=prompt, add_special_tokens=False)["input_ids"])
    max_length = n_prompt - 10 + 16
    out = execute(executor, tokenizer, prompt, "#### 72", "I am not sure.<|im_end|>", max_length=max_length)
    assert len(out["observation_tokens"]) < n_prompt + 16 and out["reward"] == [0.0]
    right = execute(executor, tokenizer, prompt, "#### 72", "#### 72<|im_end|>", max_length=max_length)
    assert right["reward"] == [1.0]


def test_openrlhf_http_client_shards_across_several_urls(agent: Any, server: Any, tokenizer: Any) -> None:
    """``_fetch_rewards_via_http`` splits a batch across the URLs; each shard's reply is read in order."""
    executor = http_executor(agent, server, server)
    prompt = chat(QUESTION)
    queries = [prompt + a for a in ("#### 72<|im_end|>", "#### 7<|im_end|>", "so 72. #### 72<|im_end|>")]
    replies = asyncio.run(executor._fetch_rewards_via_http(queries, [prompt] * 3, ["#### 72"] * 3))
    assert [r["rewards"] for r in replies] == [[1.0, 0.0], [1.0]]
    assert [r["extra_logs"]["rewardflow/failed"] for r in replies] == [[0.0, 0.0], [0.0]]
    # OpenRLHF 0.11.2 sends no empty shard: one query and two URLs is one request.
    one = asyncio.run(executor._fetch_rewards_via_http([queries[0]], [prompt], ["#### 72"]))
    assert [r["rewards"] for r in one] == [[1.0]]


def test_the_empty_shard_of_older_openrlhf_clients_gets_empty_lists(server: Any) -> None:
    """Older OpenRLHF clients (``remote_rm_fn``) posted empty lists to the servers left without a sample."""
    import aiohttp

    async def post() -> tuple[int, Any]:
        async with aiohttp.ClientSession() as session:
            empty = {"query": [], "prompts": [], "labels": []}
            async with session.post(server.url + "/get_reward", json=empty) as response:
                return response.status, await response.json()

    status, body = asyncio.run(post())
    assert status == 200
    assert body == {"rewards": [], "scores": [], "extra_logs": {"rewardflow/accuracy": [], "rewardflow/failed": []}}


def test_failed_sample_without_failure_value_is_424_and_openrlhf_leaves_a_none_reward(agent, server, tokenizer):
    """No label: gsm8k cannot score it. The 424 makes OpenRLHF's client retry 5 times, give up and log at INFO;
    the sample's reward stays ``None``, which OpenRLHF's step cannot train on: the failure is loud, never a 0."""
    executor = http_executor(agent, server)
    before = answered(server, 424)
    out = execute(executor, tokenizer, chat(QUESTION), None, "#### 72<|im_end|>")
    assert out["reward"] is None and out["scores"] is None and out["extra_logs"] == {}
    assert answered(server, 424) == before + 5  # OpenRLHF's try_max_times


def test_failed_sample_with_failure_value_is_flagged_and_its_group_filtered(
    agent, server_with_failure_value, tokenizer, samples_generator
):
    """``--failure-value -1e9``: the failed sample comes back flagged; OpenRLHF's dynamic filtering with the
    documented range ``-1000000 1000000`` drops its whole group and draws a replacement prompt."""
    executor = http_executor(agent, server_with_failure_value)
    failed = execute(executor, tokenizer, chat(QUESTION), None, "#### 72<|im_end|>")
    assert failed["reward"] == [-1e9] and failed["scores"] == [-1e9]
    assert failed["extra_logs"] == {"rewardflow/accuracy": [-1e9], "rewardflow/failed": [1.0]}

    labels = {"p0": [None, "#### 72", "#### 72", "#### 72"], "p1": ["#### 72"] * 4, "p2": ["#### 72"] * 4}
    answers = ["#### 72<|im_end|>", "#### 70<|im_end|>", "#### 72<|im_end|>", "no<|im_end|>"]

    def dispatch(prompts: list[str], labels_: list[str], images: Any = None, **_: Any) -> list[list[dict]]:
        return [
            [execute(executor, tokenizer, p, lab, a) for lab, a in zip(labels[p.split("|")[0]], answers, strict=True)]
            for p in prompts
        ]

    def batches():
        for key in ("p0", "p1", "p2"):
            yield None, [f"{key}|{chat(QUESTION)}"], ["unused"], [None]

    gen = samples_generator.SamplesGenerator.__new__(samples_generator.SamplesGenerator)
    gen.args = SimpleNamespace(algo=SimpleNamespace(dynamic_filtering_range=[-1000000.0, 1000000.0]))
    gen._dispatch_prompts_to_vllm = dispatch
    experiences, consumed, _ = gen._generate_vllm(batches(), num_prompts=2, dynamic_filtering=True, max_len=512)
    kept = sorted({e.prompts[0].split("|")[0] for e in experiences})
    assert kept == ["p1", "p2"] and consumed == 3
    rewards = torch.cat([e.rewards for e in experiences]).flatten()
    assert rewards.tolist() == [1.0, 0.0, 1.0, 0.0] * 2
    assert all(e.info["rewardflow/failed"].item() == 0.0 for e in experiences)


def test_openrlhf_http_client_sends_no_bearer_token(agent: Any, serve_spec: Path, tokenizer: Any) -> None:
    """OpenRLHF 0.11.2 posts without headers, so a server with ``$REWARDFLOW_TOKEN`` (required off loopback)
    answers 401 to all 5 tries and the reward stays ``None``: the docs say to serve it on loopback."""
    from tests.server.conftest import Server

    with Server(serve_spec, env={"REWARDFLOW_TOKEN": "s3cret"}) as server:
        out = execute(http_executor(agent, server), tokenizer, chat(QUESTION), "#### 72", "#### 72<|im_end|>")
        assert out["reward"] is None
        assert answered(server, 401, token="s3cret") == 5
