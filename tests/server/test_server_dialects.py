"""OpenRLHF's and slime's own client code against a real ``rewardflow serve``, on GSM8K example solutions.

The request/retry loops below are copied from the frameworks (few lines, Apache-2.0), so the byte format is
theirs, not ours:

* OpenRLHF, ``openrlhf/utils/agent.py`` at commit 3c3be6234e0cb353e76bb8019947db9dfe99fca7,
  ``SingleTurnAgentExecutor._fetch_rewards_via_http`` (shards the queries over the URLs: with one query and two
  URLs the second server gets empty lists) and how ``execute`` reads the first reply.
* slime, ``slime/rollout/rm_hub/__init__.py`` at commit 624b824a898ab0ec1fcb4d373004c7f3852bf515,
  ``remote_rm`` (one sample per request; the JSON reply *is* the reward, a dict read with ``--reward-key``).

The rows are the GSM8K example model solutions embedded in rewardflow (MIT, (c) 2021 OpenAI), with their
labels; the expected rewards come from the in-process engine on the same rows.
"""

from __future__ import annotations

import asyncio
import logging
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from rewardflow import Engine
from rewardflow.data import gsm8k_examples
from tests.server.conftest import Server, write_spec

aiohttp = pytest.importorskip("aiohttp")
logger = logging.getLogger(__name__)

ROWS = list(gsm8k_examples(24))


# ---- copied from OpenRLHF (openrlhf/utils/agent.py, 3c3be62), the enclosing object replaced by an argument ----
async def openrlhf_fetch_rewards_via_http(reward_endpoints, queries_list, prompts_list, labels_list):  # type: ignore[no-untyped-def]
    """HTTP fallback: shard requests across servers."""
    num_servers = len(reward_endpoints)
    batch_size = (len(queries_list) + num_servers - 1) // num_servers
    timeout = aiohttp.ClientTimeout(total=180)

    tasks = []
    for i, rm in enumerate(reward_endpoints):
        start_idx = i * batch_size
        end_idx = min((i + 1) * batch_size, len(queries_list))
        payload = {
            "query": queries_list[start_idx:end_idx],
            "prompts": prompts_list[start_idx:end_idx],
            "labels": labels_list[start_idx:end_idx],
        }

        async def _post_request(url, data, try_max_times=5):  # type: ignore[no-untyped-def]
            for _ in range(try_max_times):
                try:
                    async with aiohttp.ClientSession(timeout=timeout) as session:
                        async with session.post(url, json=data) as response:
                            response.raise_for_status()
                            return await response.json()
                except aiohttp.ClientError as e:
                    logger.info(f"Request error, please check: {e}")
                except Exception as e:  # pragma: no cover - defensive
                    logger.info(f"Unexpected error, please check: {e}")
                await asyncio.sleep(1)

            raise RuntimeError(f"Request error for {try_max_times} times, returning None. Please check the API server.")

        tasks.append(asyncio.create_task(_post_request(rm, payload)))
    return await asyncio.gather(*tasks)


# ---- copied from slime (slime/rollout/rm_hub/__init__.py, 624b824), the shared session made per call ----
async def slime_remote_rm(args, sample, max_retries: int = 10):  # type: ignore[no-untyped-def]
    payload = {
        "prompt": sample.prompt,
        "response": sample.response,
        "label": sample.label,
    }
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        for attempt in range(max_retries):
            try:
                async with session.post(args.rm_url, json=payload) as resp:
                    resp.raise_for_status()
                    return await resp.json()
            except Exception as e:
                if attempt + 1 >= max_retries:
                    logger.warning(f"remote_rm failed after {attempt + 1} attempts: {e}")
                    raise
                backoff = min(2**attempt, 30) + random.random()
                logger.info(f"remote_rm: {type(e).__name__}, retrying in {backoff:.1f}s ({attempt + 1}/{max_retries})")
                await asyncio.sleep(backoff)


@pytest.fixture(scope="module")
def gsm8k_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    spec = write_spec(
        tmp_path_factory.mktemp("gsm8k") / "spec.yaml",
        "workers: 2\nrewards:\n  - reward: format\n    weight: 0.1\n  - reward: gsm8k\n",
    )
    with Server(spec) as server:
        yield server, spec


@pytest.fixture(scope="module")
def expected(gsm8k_server: Any) -> list[float]:
    # The server's spec, scored in this process (inline: the same reward functions, no worker start-up).
    with Engine({"format": ("format", 0.1), "gsm8k": "gsm8k"}, kind="inline") as engine:
        results = engine.score(ROWS)
    assert all(r.ok for r in results)
    return [r.value for r in results]  # type: ignore[misc]


def test_openrlhf_client_one_sample_two_servers_gets_the_empty_shard(gsm8k_server: Any, expected: list) -> None:
    server, _ = gsm8k_server
    url = server.url + "/get_reward"
    row = ROWS[0]
    query = row["prompt"] + row["completion"] + "<|im_end|>"  # decoded with special tokens, as OpenRLHF does
    replies = asyncio.run(openrlhf_fetch_rewards_via_http([url, url], [query], [row["prompt"]], [row["answer"]]))
    assert len(replies) == 2
    assert replies[1] == {
        "rewards": [],
        "scores": [],
        "extra_logs": {"rewardflow/format": [], "rewardflow/gsm8k": [], "rewardflow/failed": []},
    }
    rewards_info = replies[0]  # what SingleTurnAgentExecutor.execute reads: rewards_info_list[0]
    assert rewards_info["rewards"] == pytest.approx([expected[0]])
    assert rewards_info["scores"] == rewards_info["rewards"]
    assert set(rewards_info["extra_logs"]) == {"rewardflow/format", "rewardflow/gsm8k", "rewardflow/failed"}
    assert rewards_info["extra_logs"]["rewardflow/failed"] == [0.0]


def test_openrlhf_client_batch_sharded_over_servers_in_order(gsm8k_server: Any, expected: list) -> None:
    server, _ = gsm8k_server
    urls = [server.url + "/get_reward"] * 3
    queries = [r["prompt"] + r["completion"] for r in ROWS]
    replies = asyncio.run(
        openrlhf_fetch_rewards_via_http(urls, queries, [r["prompt"] for r in ROWS], [r["answer"] for r in ROWS])
    )
    rewards = [x for reply in replies for x in reply["rewards"]]
    assert rewards == pytest.approx(expected)
    assert [len(reply["rewards"]) for reply in replies] == [8, 8, 8]
    components = [x for reply in replies for x in reply["extra_logs"]["rewardflow/gsm8k"]]
    assert sum(components) == sum(bool(r["is_correct"]) for r in ROWS)  # the labels' own verdicts


def test_openrlhf_client_failed_sample_is_an_error_not_a_zero(tmp_path: Path) -> None:
    """A failed sample: OpenRLHF's loop gets an HTTP error on every try and raises (never a silent 0);
    with --failure-value the stand-in is flagged in extra_logs."""
    spec = write_spec(tmp_path / "spec.yaml", "workers: 1\nrewards:\n  - reward: tests._rewards:crashes\n")
    with Server(spec) as server:
        url = server.url + "/get_reward"
        with pytest.raises(RuntimeError, match="Request error for 5 times"):
            asyncio.run(openrlhf_fetch_rewards_via_http([url], ["ok", "raise"], ["", ""], [None, None]))
    with Server(spec, "--failure-value", "-1") as server:
        url = server.url + "/get_reward"
        (reply,) = asyncio.run(openrlhf_fetch_rewards_via_http([url], ["ok", "raise"], ["", ""], [None, None]))
    assert reply["rewards"] == [1.0, -1.0]
    assert reply["extra_logs"]["rewardflow/failed"] == [0.0, 1.0]


def test_slime_client_bare_number_and_dict(gsm8k_server: Any, expected: list) -> None:
    server, _ = gsm8k_server

    async def run_all(url: str) -> list[Any]:
        args = SimpleNamespace(rm_url=url)
        samples = [SimpleNamespace(prompt=r["prompt"], response=r["completion"], label=r["answer"]) for r in ROWS]
        return list(await asyncio.gather(*(slime_remote_rm(args, s) for s in samples)))

    numbers = asyncio.run(run_all(server.url + "/rm"))
    assert all(isinstance(x, float) for x in numbers)
    assert numbers == pytest.approx(expected)
    dicts = asyncio.run(run_all(server.url + "/rm?format=dict"))
    assert [d["reward"] for d in dicts] == pytest.approx(expected)  # --reward-key reward
    assert all(d["status"] == "ok" and d["failed"] is False for d in dicts)
    assert [d["components"]["gsm8k"] for d in dicts] == [float(bool(r["is_correct"])) for r in ROWS]
