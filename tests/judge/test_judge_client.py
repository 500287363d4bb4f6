"""JudgeClient against the fake server on loopback: every fault ends ok after bounded retries or as a typed error.

Each test of a hang or a timeout is bounded by short per-attempt timeouts and asserts an upper bound on its own
duration; no test asserts a speed.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import httpx
import pytest

from rewardflow.errors import (
    EngineClosedError,
    JudgeConnectionError,
    JudgeError,
    JudgeResponseError,
    JudgeStatusError,
    JudgeTimeoutError,
)
from rewardflow.judge import parse
from rewardflow.judge.client import JudgeClient, JudgeRequest, shared_client
from rewardflow.judge.config import ClientConfig
from rewardflow.judge.testing import FakeJudgeServer

BACKENDS = ["aiohttp", "httpx"]


def make_client(fake: FakeJudgeServer, /, **options: Any) -> JudgeClient:
    settings = {"backoff": 0.01, "backoff_max": 0.02, "timeout": 2.0, "max_retries": 2, **options}
    return JudgeClient(ClientConfig(base_url=fake.base_url, **settings))


def req(text: str, *, schema: bool = True, structured: Any = "auto", model: str = "m") -> JudgeRequest:
    return JudgeRequest(
        model=model,
        messages=({"role": "user", "content": text},),
        schema=parse.score_schema(0, 10) if schema else None,
        structured=structured,
    )


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def gather_outcomes(client: JudgeClient, texts: list[str]) -> list[Any]:
    return await asyncio.gather(*(client.complete(req(t)) for t in texts), return_exceptions=True)


# ---------------------------------------------------------------------------------------------------- faults


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fault", ["500", "503", "429", "drop", "hang"])
def test_transient_fault_recovers_after_retries(fault: str, backend: str) -> None:
    with FakeJudgeServer(retry_after=0.01, hang=5) as server:
        # a server that aborts abandoned requests (vLLM): a timed-out attempt is retried like the others
        client = make_client(server, timeout=0.3, http_backend=backend, server="vllm")
        start = time.monotonic()
        reply = run(client.complete(req(f"grade this [[fault:{fault}*2]] [[score=6]]")))
        assert time.monotonic() - start < 5
        assert json.loads(reply.text)["score"] == 6
        assert (reply.requests, reply.retries, len(reply.errors)) == (3, 2, 2)
        assert server.stats()["requests"] == 3
        assert server.stats()["faults"] == {fault: 2}
        assert client.usage()["retries"] == 2 and client.usage()["failures"] == 0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("fault", "error", "status"),
    [
        ("500", JudgeStatusError, 500),
        ("502", JudgeStatusError, 502),
        ("429", JudgeStatusError, 429),
        ("drop", JudgeConnectionError, None),
        ("hang", JudgeTimeoutError, None),
    ],
)
def test_persistent_fault_fails_after_a_bounded_number_of_requests(
    fault: str, error: type[JudgeError], status: int | None, backend: str
) -> None:
    with FakeJudgeServer(retry_after=0.01, hang=5) as server:
        client = make_client(server, timeout=0.3, http_backend=backend, retry_timeouts=True)
        start = time.monotonic()
        with pytest.raises(error) as caught:
            run(client.complete(req(f"grade this [[fault:{fault}]]")))
        assert time.monotonic() - start < 5
        assert server.stats()["requests"] == 3  # 1 + max_retries, never more
        judge = caught.value.info["judge"]
        assert judge["failed"] is True and judge["requests"] == 3 and judge["retries"] == 2
        assert len(judge["errors"]) == 3
        if status is not None:
            assert caught.value.status_code == status  # type: ignore[attr-defined]
        assert "after 3 requests" in str(caught.value)
        assert client.usage()["failures"] == 1


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("fault", "error", "text"),
    [
        ("garbage", JudgeResponseError, "not a chat completion"),  # 200 with an HTML body
        ("nochoices", JudgeResponseError, "not a chat completion"),  # 200 JSON without choices
        ("400", JudgeStatusError, "HTTP 400"),  # a client error is never retried
        ("404", JudgeStatusError, "HTTP 404"),
    ],
)
def test_final_faults_are_not_retried(fault: str, error: type[JudgeError], text: str, backend: str) -> None:
    with FakeJudgeServer() as server:
        client = make_client(server, http_backend=backend)
        with pytest.raises(error, match=text):
            run(client.complete(req(f"grade this [[fault:{fault}]]", structured=False)))
        assert server.stats()["requests"] == 1


def test_wrong_base_url_hints_at_the_api_root() -> None:
    with FakeJudgeServer() as server:
        client = JudgeClient(base_url=server.base_url.removesuffix("/v1") + "/nope", max_retries=0)
        with pytest.raises(JudgeStatusError, match="base_url should be the API root"):
            run(client.complete(req("x")))


def test_retry_after_is_honoured() -> None:
    with FakeJudgeServer(retry_after=0.4) as server:
        client = make_client(server, backoff=0.001, backoff_max=0.001)  # only Retry-After can explain a wait
        start = time.monotonic()
        reply = run(client.complete(req("x [[fault:429*1]]")))
        assert time.monotonic() - start >= 0.4
        assert reply.retries == 1


def test_retry_after_is_capped() -> None:
    with FakeJudgeServer(retry_after=60) as server:
        client = make_client(server, max_retry_after=0.05)
        start = time.monotonic()
        with pytest.raises(JudgeStatusError):
            run(client.complete(req("x [[fault:429]]")))
        assert time.monotonic() - start < 5  # not 2 x 60 s
        assert server.stats()["requests"] == 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_connection_refused_is_retried_then_reported(backend: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed when the block ends: nothing listens there
    client = JudgeClient(
        base_url=f"http://127.0.0.1:{port}/v1", backoff=0.01, backoff_max=0.01, max_retries=2, http_backend=backend
    )
    with pytest.raises(JudgeConnectionError) as caught:
        run(client.complete(req("x")))
    assert caught.value.info["judge"]["requests"] == 3


def test_timeout_bounds_each_attempt() -> None:
    with FakeJudgeServer(hang=30) as server:
        client = make_client(server, timeout=0.2, max_retries=1, retry_timeouts=True)
        start = time.monotonic()
        with pytest.raises(JudgeTimeoutError, match=r"no reply within 0\.2s"):
            run(client.complete(req("x [[fault:hang]]")))
        elapsed = time.monotonic() - start
        assert 0.4 <= elapsed < 3  # two attempts of 0.2 s each, then give up


@pytest.mark.parametrize(("server_kind", "requests"), [("unknown", 1), ("llama.cpp", 1), ("vllm", 3), ("sglang", 3)])
def test_a_timeout_is_retried_only_where_the_server_aborts_abandoned_requests(server_kind: str, requests: int) -> None:
    # llama-server kept generating an abandoned request for 72-85 s: a retry there adds load to a slow server
    with FakeJudgeServer(hang=5) as server:
        client = make_client(server, timeout=0.2, server=server_kind)
        with pytest.raises(JudgeTimeoutError) as caught:
            run(client.complete(req("x [[fault:hang]]")))
        assert caught.value.info["judge"]["requests"] == requests
        assert server.stats()["requests"] == requests


# ---------------------------------------------------------------------------------------------------- structured output


def test_structured_output_falls_back_once_when_the_server_rejects_it() -> None:
    with FakeJudgeServer(structured_output=False) as server:
        client = make_client(server)
        first = run(client.complete(req("x [[score=4]]")))
        second = run(client.complete(req("y [[score=5]]")))
        bodies = list(server.bodies)
        assert ["response_format" in b for b in bodies] == [True, False, False]  # remembered after one 400
        assert (first.structured, second.structured) == (False, False)
        assert json.loads(first.text) == {"score": 4}


def test_structured_output_forced_does_not_fall_back() -> None:
    with FakeJudgeServer(structured_output=False) as server:
        client = make_client(server)
        with pytest.raises(JudgeStatusError, match="HTTP 400"):
            run(client.complete(req("x", structured=True)))
        assert server.stats()["requests"] == 1


def test_schema_is_sent_as_response_format() -> None:
    with FakeJudgeServer() as server:
        reply = run(make_client(server).complete(req("x [[score=9]]")))
        sent = server.bodies[0]["response_format"]
        assert sent["type"] == "json_schema" and sent["json_schema"]["schema"] == parse.score_schema(0, 10)
        assert json.loads(reply.text)["score"] == 9 and reply.structured


# ---------------------------------------------------------------------------------------------------- cache


def test_identical_concurrent_requests_are_sent_once() -> None:
    with FakeJudgeServer(latency=0.05) as server:
        client = make_client(server)
        replies = run(gather_outcomes(client, ["same completion [[score=3]]"] * 8))
        assert server.stats()["requests"] == 1
        assert [r.text for r in replies] == [replies[0].text] * 8
        assert sum(not r.cached for r in replies) == 1  # one leader, seven served from the in-flight call
        assert sum(r.requests for r in replies) == 1
        assert client.usage()["cache_hits"] == 7
        again = run(client.complete(req("same completion [[score=3]]")))
        assert again.cached and server.stats()["requests"] == 1


def test_cache_off_sends_every_request() -> None:
    with FakeJudgeServer(latency=0.02) as server:
        client = make_client(server, cache=False)
        run(gather_outcomes(client, ["same"] * 5))
        assert server.stats()["requests"] == 5


def test_followers_of_a_failed_request_fail_too_without_extra_requests() -> None:
    with FakeJudgeServer() as server:
        client = make_client(server)
        outcomes = run(gather_outcomes(client, ["same [[fault:500]]"] * 4))
        assert all(isinstance(o, JudgeStatusError) for o in outcomes)
        assert server.stats()["requests"] == 3  # one chain of 1 + 2 retries, shared by all four callers
        assert sorted(o.info["judge"]["requests"] for o in outcomes) == [0, 0, 0, 3]
        assert client.usage()["failures"] == 1
        # a failure is never cached: the next identical call asks again
        with pytest.raises(JudgeStatusError):
            run(client.complete(req("same [[fault:500]]")))
        assert server.stats()["requests"] == 6


def test_disk_cache_survives_a_new_client(tmp_path: Any) -> None:
    path = str(tmp_path / "judge.sqlite")
    with FakeJudgeServer() as server:
        run(make_client(server, cache_path=path).complete(req("x [[score=2]]")))
        reply = run(make_client(server, cache_path=path).complete(req("x [[score=2]]")))
        assert reply.cached and json.loads(reply.text)["score"] == 2
        assert server.stats()["requests"] == 1


# ---------------------------------------------------------------------------------------------------- limits


@pytest.mark.parametrize("backend", BACKENDS)
def test_concurrency_limit_is_the_peak_in_flight(backend: str) -> None:
    with FakeJudgeServer(latency=0.05) as server:
        client = make_client(server, concurrency=3, http_backend=backend)
        run(gather_outcomes(client, [f"text {i}" for i in range(12)]))
        assert server.stats()["peak_inflight"] == 3
        assert client.usage()["peak_concurrency"] == 3


def test_requests_per_minute_paces_requests() -> None:
    with FakeJudgeServer() as server:
        client = make_client(server, rpm=1200)  # 20 per second, burst of 20
        start = time.monotonic()
        run(gather_outcomes(client, [f"text {i}" for i in range(30)]))
        assert time.monotonic() - start >= 0.45  # 10 requests beyond the burst at 20 per second
        assert client.usage()["limit_wait"] > 0
        assert server.stats()["requests"] == 30


# ---------------------------------------------------------------------------------------------------- accounting, auth


def test_usage_totals_match_the_server() -> None:
    with FakeJudgeServer() as server:
        client = make_client(server)
        replies = run(gather_outcomes(client, ["one two three [[score=1]]", "four [[score=2]] [[fault:500*1]]"]))
        usage = client.usage()
        assert usage["calls"] == 2 and usage["requests"] == 3 and usage["retries"] == 1
        assert usage["prompt_tokens"] == sum(r.prompt_tokens for r in replies) == 4 + 3  # whitespace words
        assert usage["completion_tokens"] == sum(r.completion_tokens for r in replies)
        assert usage["errors"] == {"500": 1}


def test_cost_is_computed_from_prices() -> None:
    with FakeJudgeServer() as server:
        request = JudgeRequest(model="m", messages=({"role": "user", "content": "a b c d"},), prices=(2.0, 10.0))
        reply = run(make_client(server).complete(request))
        expected = (reply.prompt_tokens * 2.0 + reply.completion_tokens * 10.0) / 1e6
        assert reply.cost == pytest.approx(expected) and reply.info()["cost_usd"] == pytest.approx(expected)


def test_api_key_is_sent_and_a_bad_one_is_not_retried() -> None:
    with FakeJudgeServer(api_key="sk-test") as server:
        assert run(make_client(server, api_key="sk-test").complete(req("x"))).requests == 1
        with pytest.raises(JudgeStatusError, match="HTTP 401") as caught:
            run(make_client(server, api_key="wrong").complete(req("x")))
        assert caught.value.info["judge"]["requests"] == 1
        assert "sk-test" not in repr(ClientConfig(base_url=server.base_url, api_key="sk-test"))


def test_mock_transport_seam() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append({"auth": request.headers.get("authorization"), "body": json.loads(request.content)})
        reply = {"choices": [{"message": {"content": '{"score": 3}'}}], "usage": {"prompt_tokens": 11}}
        return httpx.Response(200, json=reply)

    config = ClientConfig(base_url="http://judge.invalid/v1", api_key="k")
    client = JudgeClient(config, transport=httpx.MockTransport(handler))
    reply = run(client.complete(req("hello")))
    assert (reply.text, reply.prompt_tokens, reply.completion_tokens) == ('{"score": 3}', 11, 0)
    assert seen[0]["auth"] == "Bearer k" and seen[0]["body"]["messages"][0]["content"] == "hello"


# ---------------------------------------------------------------------------------------------------- lifecycle


def test_one_http_client_per_event_loop() -> None:
    with FakeJudgeServer() as server:
        client = make_client(server)

        async def many() -> None:
            await asyncio.gather(*(client.complete(req(f"t{i}")) for i in range(20)))
            await client.complete(req("later"))

        run(many())
        assert client.clients_created == 1
        run(many())  # a new event loop needs its own connections
        assert client.clients_created == 2
        assert server.stats()["connections"] <= 2 * 20  # connections are reused within a loop


@pytest.mark.parametrize("backend", BACKENDS)
def test_loop_shutdown_closes_the_http_client(backend: str) -> None:
    """asyncio.run (like Engine.close) shuts its loop's async generators down: the connections go with the loop."""
    with FakeJudgeServer() as server:
        client = make_client(server, http_backend=backend)

        async def once() -> Any:
            await client.complete(req("x"))
            state = client._states[asyncio.get_running_loop()]
            assert not state.backend._closed  # type: ignore[attr-defined]
            return state.backend

        used = run(once())
        assert used._closed and not client._states
        if backend == "aiohttp":
            assert used._session is None
        run(once())  # a later loop gets a fresh one
        assert client.clients_created == 2


def test_closed_client_refuses_work_and_shared_client_replaces_it() -> None:
    with FakeJudgeServer() as server:
        config = ClientConfig(base_url=server.base_url)
        client = shared_client(config)
        assert shared_client(config) is client
        run(client.complete(req("x")))
        client.close()
        with pytest.raises(EngineClosedError):
            run(client.complete(req("y")))
        assert shared_client(config) is not client


def test_bad_config_is_a_config_error() -> None:
    from rewardflow.errors import ConfigError

    for bad in (
        {"base_url": "ftp://x"},
        {"base_url": "http://x", "concurrency": 0},
        {"base_url": "http://x", "timeout": 0},
    ):
        with pytest.raises(ConfigError):
            ClientConfig(**bad)
