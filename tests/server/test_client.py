"""RemoteEngine: retry policy (on a fake transport), failover and a restart mid-run (on real servers)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from rewardflow.client import RemoteEngine, ServiceError, remote_engine_for
from rewardflow.types import Status
from tests.server.conftest import REWARDS, Server, free_port, write_spec


def _ok(request: httpx.Request) -> httpx.Response:
    samples = json.loads(request.content)["samples"]
    results = [{"reward": 1.0, "status": "ok", "reason": None, "components": {}, "latency_ms": 0.1} for _ in samples]
    return httpx.Response(200, json={"results": results})


class Script:
    """A fake service answering each request with the next scripted status (then 200)."""

    def __init__(self, *statuses: int, retry_after: str | None = None) -> None:
        self.statuses = list(statuses)
        self.retry_after = retry_after
        self.calls: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(time.monotonic())
        if self.statuses:
            status = self.statuses.pop(0)
            headers = {"Retry-After": self.retry_after} if self.retry_after else {}
            return httpx.Response(status, json={"error": f"scripted {status}"}, headers=headers)
        return _ok(request)


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_retryable_statuses_are_retried_until_answered(status: int) -> None:
    script = Script(status, status)
    with RemoteEngine("http://svc", transport=httpx.MockTransport(script), backoff=0.001) as engine:
        results = engine.score([{"completion": "a"}, {"completion": "b"}])
    assert [r.value for r in results] == [1.0, 1.0]
    assert len(script.calls) == 3


def test_retry_after_is_honoured() -> None:
    script = Script(429, retry_after="1")
    with RemoteEngine("http://svc", transport=httpx.MockTransport(script), backoff=0.001) as engine:
        assert engine.score([{"completion": "a"}])[0].ok
    assert len(script.calls) == 2
    assert script.calls[1] - script.calls[0] >= 1.0


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422, 424])
def test_other_4xx_are_never_retried(status: int) -> None:
    script = Script(status)
    with (
        RemoteEngine("http://svc", transport=httpx.MockTransport(script)) as engine,
        pytest.raises(ServiceError, match=f"HTTP {status}: scripted") as info,
    ):
        engine.score([{"completion": "a"}])
    assert info.value.status_code == status
    assert len(script.calls) == 1


def test_typed_sample_errors_are_results_not_retries() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        bad = {"reward": None, "status": "timeout", "reason": "slow", "components": {"x": None}, "latency_ms": 5.0}
        return httpx.Response(200, json={"results": [bad]})

    with RemoteEngine("http://svc", transport=httpx.MockTransport(handler)) as engine:
        (r,) = engine.score([{"completion": "a"}])
    assert (r.status, r.value, r.reason, r.latency) == (Status.TIMEOUT, None, "slow", 0.005)
    assert len(calls) == 1


def test_bad_rows_fail_locally_and_chunks_keep_order() -> None:
    seen: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        samples = json.loads(request.content)["samples"]
        seen.append(len(samples))
        results = [
            {"reward": float(s["id"]), "status": "ok", "reason": None, "components": {}, "latency_ms": 0}
            for s in samples
        ]
        return httpx.Response(200, json={"results": results})

    rows: list[Any] = [{"completion": "c", "id": i} for i in range(10)]
    rows[4] = {"prompt": "no completion"}
    with RemoteEngine("http://svc", transport=httpx.MockTransport(handler), batch_size=3) as engine:
        results = engine.score(rows)
    assert results[4].status is Status.ERROR and "completion" in (results[4].reason or "")
    assert [r.value for i, r in enumerate(results) if i != 4] == [float(i) for i in range(10) if i != 4]
    assert sorted(seen) == [3, 3, 3]


def test_gives_up_with_error_results_after_the_deadline() -> None:
    script = Script(*([503] * 1000))
    transport = httpx.MockTransport(script)
    with RemoteEngine("http://svc", transport=transport, backoff=0.01, retry_deadline=0.3) as engine:
        results = engine.score([{"completion": "a"}, {"completion": "b"}])
    assert all(r.status is Status.ERROR and "HTTP 503" in (r.reason or "") for r in results)


def test_one_pooled_client_per_event_loop() -> None:
    engine = RemoteEngine("http://svc", transport=httpx.MockTransport(_ok))

    async def twice() -> Any:
        await engine.ascore([{"completion": "a"}])
        first = engine._client()
        await engine.ascore([{"completion": "b"}])
        assert engine._client() is first
        await engine.aclose()
        return first

    assert asyncio.run(twice()) is not None
    other = RemoteEngine("http://svc", transport=httpx.MockTransport(_ok))
    clients = [asyncio.run(_client_of(other)) for _ in range(2)]
    assert clients[0] is not clients[1]  # a new loop gets its own pool
    other.close()


async def _client_of(engine: RemoteEngine) -> Any:
    await engine.ascore([{"completion": "a"}])
    return engine._client()


def test_least_loaded_routing_and_failover_to_a_live_server(id_server: Server) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    rows = [{"completion": "x", "id": i} for i in range(400)]
    with RemoteEngine([dead, id_server.url], batch_size=20, cooldown=30) as engine:
        results = engine.score(rows)
        assert [r.value for r in results] == [float(i) for i in range(400)]
        # chunks already sent there fail over once each; after the first refusal the dead URL is skipped
        assert engine.attempts <= 2 * 20
    seen: dict[str, int] = {}

    def counting(request: httpx.Request) -> httpx.Response:
        seen[request.url.host] = seen.get(request.url.host, 0) + 1
        return _ok(request)

    with RemoteEngine(["http://a", "http://b"], transport=httpx.MockTransport(counting), batch_size=1) as engine:
        engine.score([{"completion": "c"}] * 40)
    assert seen == {"a": 20, "b": 20}


def test_a_server_restarted_mid_run_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path / "spec.yaml", f"workers: 2\nrewards:\n  - reward: {REWARDS}:row_id_slow\n    name: id\n"
    )
    n = 2000
    rows = [{"completion": "x", "id": i} for i in range(n)]
    server = Server(spec).start()
    out: list[Any] = []
    try:
        engine = RemoteEngine(server.url, batch_size=25, backoff=0.05)
        worker = threading.Thread(target=lambda: out.append(engine.score(rows)))
        worker.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # let a fair part of the run through first
            text = httpx.get(server.url + "/metrics").text
            done = [
                ln for ln in text.splitlines() if ln.startswith('rewardflow_samples_total{reward="total",status="ok"}')
            ]
            if done and float(done[0].split()[-1]) >= n * 0.2:
                break
            time.sleep(0.05)
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGKILL)  # a crash: replies in flight are lost
        server.proc.wait(10)
        time.sleep(0.5)
        server.start()  # the same port
        worker.join(300)
        engine.close()
        assert engine.attempts > n // 25  # some chunks were lost with the crash and sent again
    finally:
        server.stop()
    (results,) = out
    assert len(results) == n
    assert all(r.ok for r in results), [r.reason for r in results if not r.ok][:3]
    assert [r.value for r in results] == [float(i) for i in range(n)]  # every row, once, in its place


def test_adapters_score_on_the_service_via_url_or_env(
    id_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("torch")
    from rewardflow.integrations._shared import build_engine
    from rewardflow.integrations.openrlhf import OpenRLHFReward

    local = write_spec(tmp_path / "local.yaml", "rewards:\n  - reward: gsm8k\n")
    remote = write_spec(tmp_path / "remote.yaml", f"url: {id_server.url}\nrewards:\n  - reward: gsm8k\n")
    monkeypatch.delenv("REWARDFLOW_URL", raising=False)
    assert remote_engine_for(str(local)) is None
    engine = build_engine(str(remote))
    assert isinstance(engine, RemoteEngine)
    engine.close()
    reward_func = OpenRLHFReward(str(remote))
    out = reward_func(["p a", "p b"], ["p", "p"], ["1", "2"], id=[7, 8])  # `id` reaches the service's row_id
    assert out["rewards"].tolist() == [7.0, 8.0]
    monkeypatch.setenv("REWARDFLOW_URL", id_server.url)
    engine = build_engine(str(local))
    assert isinstance(engine, RemoteEngine)
    assert [r.value for r in engine.score([{"completion": "x", "id": 3}])] == [3.0]
    engine.close()


def test_remote_components_are_the_services_and_adapters_log_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = write_spec(
        tmp_path / "spec.yaml",
        f"workers: 1\nrewards:\n  - reward: {REWARDS}:row_id\n    name: id\n    weight: 0.5\n"
        f"  - reward: {REWARDS}:row_id_wait\n    name: again\n    gate: true\n",
    )
    expected = [("id", 0.5, False, "process"), ("again", 1.0, True, "process")]
    with Server(spec) as server:
        listed = httpx.get(server.url + "/v1/components").json()["components"]
        assert [(c["name"], c["weight"], c["gate"], c["kind"]) for c in listed] == expected
        # read before any scoring, outside an event loop: fetched from GET /v1/components
        with RemoteEngine(server.url) as engine:
            assert [(c.name, c.weight, c.gate, c.reward.kind.value) for c in engine.components] == expected

        # inside an event loop (verl's async compute_score): known from the first /v1/score reply
        async def in_loop() -> tuple[list[str], list[str]]:
            async with RemoteEngine(server.url) as remote:
                before = [c.name for c in remote.components]
                (result,) = await remote.ascore([{"completion": "c", "id": 4}])
                assert result.value == 4.0 * 0.5 + 4.0
                return before, [c.name for c in remote.components]

        assert asyncio.run(in_loop()) == ([], ["id", "again"])
        pytest.importorskip("torch")
        from rewardflow.integrations.openrlhf import OpenRLHFReward

        monkeypatch.setenv("REWARDFLOW_URL", server.url)
        out = OpenRLHFReward(str(spec))(["p a", "p b"], ["p", "p"], ["1", "2"], id=[7, 8])
    assert out["rewards"].tolist() == [10.5, 12.0]
    assert out["extra_logs"]["rewardflow/id"].tolist() == [7.0, 8.0]  # per-component keys, as with a local engine
    assert out["extra_logs"]["rewardflow/again"].tolist() == [7.0, 8.0]
