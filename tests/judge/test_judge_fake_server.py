"""The fake judge server itself: deterministic answers, schema-following replies, concurrency, loopback only."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from rewardflow.judge import parse
from rewardflow.judge.testing import FakeJudgeServer, generate, markers, spawn_fake_server

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback never goes through a proxy


def post(server: FakeJudgeServer, text: str, schema: dict | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": text}]}
    if schema is not None:
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    request = urllib.request.Request(
        server.base_url + "/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with OPENER.open(request, timeout=10) as response:
        return json.loads(response.read())


def content(reply: dict[str, Any]) -> str:
    return reply["choices"][0]["message"]["content"]


def test_same_request_same_answer_and_hash_defaults_stay_in_range(server: FakeJudgeServer) -> None:
    schema = parse.score_schema(1, 5)
    values = set()
    for i in range(30):
        first = json.loads(content(post(server, f"completion {i}", schema)))
        assert first == json.loads(content(post(server, f"completion {i}", schema)))
        assert 1 <= first["score"] <= 5 and isinstance(first["reason"], str)
        values.add(first["score"])
    assert len(values) > 1  # derived from the request, not a constant


def test_markers_and_reply_override(server: FakeJudgeServer) -> None:
    assert json.loads(content(post(server, "x [[score=7]]", parse.score_schema(0, 10))))["score"] == 7
    assert content(post(server, "x [[reply:Incorrect.]]", parse.verdict_schema())) == "Incorrect."
    assert json.loads(content(post(server, "a [[k=1]] b [[k=2]] [[flag=true]]"))) == {"k": [1, 2], "flag": True}
    assert markers("[[scores=3]] [[scores=4.5]] [[name=abc]]") == {"scores": [3, 4.5], "name": "abc"}


def test_schema_driven_replies_parse_with_the_matching_parser(server: FakeJudgeServer) -> None:
    ranking = json.loads(content(post(server, "three responses", parse.ranking_schema(3))))
    assert sorted(ranking["ranking"]) == [1, 2, 3]  # uniqueItems over 1..n: a permutation
    group = json.loads(content(post(server, "[[scores=4]] [[scores=1]]", parse.group_scores_schema(2, 0, 10))))
    assert group["scores"] == [4, 1]
    assert generate({"type": "boolean"}, {}, "seed") in (True, False)


def test_usage_counts_words(server: FakeJudgeServer) -> None:
    reply = post(server, "one two three four")
    assert reply["usage"]["prompt_tokens"] == 4
    assert reply["usage"]["completion_tokens"] == len(content(reply).split())


def test_fault_schedule_applies_to_the_first_requests_in_order() -> None:
    with FakeJudgeServer(faults=["503", "429"]) as server:
        codes = []
        for _ in range(3):
            try:
                post(server, "x")
                codes.append(200)
            except urllib.error.HTTPError as exc:
                codes.append(exc.code)
                if exc.code == 429:
                    assert exc.headers["Retry-After"] == "0.05" and exc.headers["retry-after-ms"] == "50"
        assert codes == [503, 429, 200]
        assert server.stats()["faults"] == {"503": 1, "429": 1}


def test_serves_many_requests_concurrently() -> None:
    """64 requests of 0.2 s each are all in flight at once: the fake is never the bottleneck of a benchmark."""

    async def one(port: int, i: int) -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": f"r{i}"}]}).encode()
        head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
        writer.write(head.encode() + body)
        status = (await reader.readline()).split()[1]
        writer.close()
        return int(status)

    async def many(port: int) -> list[int]:
        return await asyncio.gather(*(one(port, i) for i in range(64)))

    with FakeJudgeServer(latency=0.2) as server:
        start = time.monotonic()
        assert asyncio.run(many(server.port)) == [200] * 64
        assert time.monotonic() - start < 10
        assert server.stats()["peak_inflight"] == 64


def test_routes_and_loopback_only(server: FakeJudgeServer) -> None:
    with OPENER.open(server.base_url + "/models", timeout=10) as response:
        assert json.loads(response.read())["data"][0]["id"] == "fake-judge"
    with OPENER.open(server.base_url.removesuffix("/v1") + "/stats", timeout=10) as response:
        assert "peak_inflight" in json.loads(response.read())
    with pytest.raises(urllib.error.HTTPError) as caught:
        OPENER.open(server.base_url + "/completions", data=b"{}", timeout=10)
    assert caught.value.code == 404
    with pytest.raises(ValueError, match="loopback"):
        FakeJudgeServer(host="0.0.0.0")


def test_spawned_server_runs_in_its_own_process() -> None:
    with spawn_fake_server(latency=0.0) as base_url:
        with OPENER.open(base_url + "/models", timeout=10) as response:
            assert response.status == 200
