"""Cross-request batching on a real server: one-sample requests reach a batch reward as merged calls."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.server.conftest import REWARDS, Server, write_spec


async def _one_sample_requests(url: str, completions: list[str]) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=64)) as client:
        return list(await asyncio.gather(*(client.post(url, json={"response": c}) for c in completions)))


def _calls(log: Path) -> list[int]:
    return [int(x) for x in log.read_text().split()] if log.exists() else []


@pytest.mark.parametrize("wait_ms", ["5", "0"])
def test_concurrent_requests_are_merged_into_batches(tmp_path: Path, wait_ms: str) -> None:
    spec = write_spec(tmp_path / "spec.yaml", f"rewards:\n  - reward: {REWARDS}:slow_batch\n    name: rm\n")
    log = tmp_path / "calls.log"
    completions = ["x" * (i + 1) for i in range(32)]
    with Server(spec, "--batch-wait-ms", wait_ms, env={"SLOW_BATCH_LOG": str(log)}) as server:
        replies = asyncio.run(_one_sample_requests(server.url + "/rm", completions))
        metrics = httpx.get(server.url + "/metrics").text
    assert [r.json() for r in replies] == [float(len(c)) for c in completions]  # each got its own value
    calls = _calls(log)
    assert sum(calls) == 32
    if wait_ms == "0":
        assert calls == [1] * 32  # batching off: one model call per request
    else:
        assert len(calls) < 32 and max(calls) > 1  # merged: a 50 ms call lets the others pile up
        assert 'rewardflow_batch_samples_count{reward="rm"}' in metrics


def test_a_failing_request_does_not_fail_the_requests_merged_with_it(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "spec.yaml", f"rewards:\n  - reward: {REWARDS}:slow_batch\n    name: rm\n")
    completions = ["a", "bb", "boom", "ccc", "dddd", "eeeee"] * 3
    with Server(spec, "--failure-value", "-1") as server:
        replies = asyncio.run(_one_sample_requests(server.url + "/rm", completions))
    values = [r.json() for r in replies]
    assert values == [-1.0 if c == "boom" else float(len(c)) for c in completions]
