"""Request merging on a real server: concurrent one-sample requests for a rule reward share engine calls.

Each request must still get exactly its own results, in order, with its own typed errors and its own deadline
(:mod:`rewardflow.server.merging`); ``--batch-wait-ms 0`` turns merging off.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.conftest import REWARDS, Server, write_spec


def _merged(metrics: str) -> tuple[float, float]:
    """(engine calls, samples) of ``rewardflow_merged_samples`` in a /metrics body."""
    count = re.search(r"^rewardflow_merged_samples_count (\S+)$", metrics, re.M)
    total = re.search(r"^rewardflow_merged_samples_sum (\S+)$", metrics, re.M)
    assert count and total, metrics[:2000]
    return float(count.group(1)), float(total.group(1))


async def _each(url: str, bodies: list[dict[str, Any]], headers: list[dict[str, str]] | None = None) -> list[Any]:
    limits = httpx.Limits(max_connections=len(bodies))
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        sends = [client.post(url, json=b, headers=(headers or [{}] * len(bodies))[i]) for i, b in enumerate(bodies)]
        return list(await asyncio.gather(*sends))


@pytest.fixture(scope="module")
def wait_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    spec = write_spec(
        tmp_path_factory.mktemp("merging") / "spec.yaml",
        f"workers: 2\nretries: 0\nrewards:\n  - reward: {REWARDS}:row_id_wait\n    name: id\n",
    )
    with Server(spec) as server:
        yield server


def test_one_sample_requests_share_engine_calls_and_each_gets_its_own_row(wait_server: Server) -> None:
    before = _merged(httpx.get(wait_server.url + "/metrics").text)
    n = 200
    # OpenRLHF's body, one sample per request; `id` is an extra column that reaches the reward
    bodies = [{"query": [f"p{i} c"], "prompts": [f"p{i}"], "labels": ["x"], "id": [i]} for i in range(n)]
    replies = asyncio.run(_each(wait_server.url + "/get_reward", bodies))
    assert [r.status_code for r in replies] == [200] * n
    assert [r.json()["rewards"] for r in replies] == [[float(i)] for i in range(n)]  # its own row, nobody else's
    calls, samples = (a - b for a, b in zip(_merged(httpx.get(wait_server.url + "/metrics").text), before, strict=True))
    assert samples == n
    assert calls < n  # merged: fewer engine calls than requests


def test_merged_requests_keep_order_and_typed_errors_stay_in_their_request(wait_server: Server) -> None:
    def body(k: int) -> dict[str, Any]:
        # requests of 1 to 4 samples; every third sample raises in the reward
        ids = [10 * k + j for j in range(1 + k % 4)]
        return {"samples": [{"completion": "raise" if i % 3 == 0 else "ok", "id": i} for i in ids]}

    bodies = [body(k) for k in range(60)]
    replies = asyncio.run(_each(wait_server.url + "/v1/score", bodies))
    for b, reply in zip(bodies, replies, strict=True):
        results = reply.json()["results"]
        assert len(results) == len(b["samples"])  # one result per sample
        for sample, result in zip(b["samples"], results, strict=True):
            if sample["completion"] == "raise":
                assert result["status"] == "error" and "deterministic failure" in result["reason"]
            else:
                assert (result["status"], result["reward"]) == ("ok", float(sample["id"]))


def test_a_request_deadline_passes_while_the_requests_merged_with_it_are_answered(wait_server: Server) -> None:
    slow = {"samples": [{"completion": "sleep 3", "id": 0}], "timeout": 0.5}
    fast = [{"samples": [{"completion": "ok", "id": i}]} for i in range(1, 20)]
    start = time.monotonic()
    replies = asyncio.run(_each(wait_server.url + "/v1/score", [slow, *fast]))
    first = replies[0].json()["results"][0]
    assert first["status"] == "timeout" and "deadline" in first["reason"]
    assert [r.json()["results"][0]["reward"] for r in replies[1:]] == [float(i) for i in range(1, 20)]
    assert time.monotonic() - start < 60  # hang guard only


def test_batch_wait_0_turns_merging_off(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "spec.yaml", f"workers: 1\nrewards:\n  - reward: {REWARDS}:row_id\n    name: id\n")
    with Server(spec, "--batch-wait-ms", "0") as server:
        replies = asyncio.run(_each(server.url + "/rm", [{"response": "c", "id": i} for i in range(50)]))
        metrics = httpx.get(server.url + "/metrics").text
    assert [r.json() for r in replies] == [float(i) for i in range(50)]
    assert _merged(metrics) == (0.0, 0.0)


def test_the_server_keeps_answering_after_a_call_nobody_waits_for(wait_server: Server) -> None:
    """Found by schemathesis (a schema-valid tiny ``timeout``): a lone request's deadline passed while its sample was
    running, the engine call was cancelled, and the late result crashed the process pool's dispatcher; every later
    request then hung. Each request here is alone, so its whole engine call is cancelled at its deadline."""
    for i in range(3):
        body = {"samples": [{"completion": "sleep 1", "id": i}], "timeout": 0.2}
        reply = httpx.post(wait_server.url + "/v1/score", json=body, timeout=60)
        assert reply.json()["results"][0]["status"] == "timeout"
        time.sleep(1.5)  # the abandoned call finishes in its worker and its result comes back
        after = httpx.post(wait_server.url + "/v1/score", json={"samples": [{"completion": "x", "id": 7}]}, timeout=60)
        assert after.status_code == 200 and after.json()["results"][0]["reward"] == 7.0
