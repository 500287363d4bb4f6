"""Bounded judge output and typed overflow: schema limits, derived max_tokens, truncation and context errors.

Issue 16, measured on llama.cpp with SmolLM2-135M: a context overflow (a 400) had switched structured output off
for the whole endpoint, and an unbounded ``reason`` let the model loop until ``max_tokens``. The tests marked
"fails on main" reproduce those against the fake server.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from rewardflow import Engine, Status
from rewardflow import errors as rf_errors
from rewardflow.errors import JudgeStatusError
from rewardflow.judge import judge_group, judge_reference, judge_rubric, judge_score, parse
from rewardflow.judge.client import JudgeClient, JudgeRequest
from rewardflow.judge.config import ClientConfig
from rewardflow.judge.testing import FakeJudgeServer

FAST = {"backoff": 0.01, "backoff_max": 0.02, "timeout": 2.0, "max_retries": 2}
BACKENDS = ["aiohttp", "httpx"]


def req(text: str, **options: Any) -> JudgeRequest:
    return JudgeRequest(
        model="m", messages=({"role": "user", "content": text},), schema=parse.score_schema(0, 10), **options
    )


def free_text_fields(schema: Any, path: str = "") -> list[tuple[str, Any]]:
    """Every string field without an enum, with its path."""
    out: list[tuple[str, Any]] = []
    if isinstance(schema, dict):
        if schema.get("type") == "string" and "enum" not in schema:
            out.append((path, schema))
        for key, sub in schema.get("properties", {}).items():
            out += free_text_fields(sub, f"{path}.{key}")
        if "items" in schema:
            out += free_text_fields(schema["items"], f"{path}[]")
    return out


# ---------------------------------------------------------------------------------------------------- schemas


SCHEMAS = {
    "score": parse.score_schema(0, 10),
    "score_float": parse.score_schema(0, 1.5),
    "verdict": parse.verdict_schema(),
    "criteria": parse.criteria_schema([{"name": "a", "min": 0, "max": 5}, {"name": "b", "min": 1, "max": 10}]),
    "group_scores": parse.group_scores_schema(8, 0, 10),
    "ranking": parse.ranking_schema(8),
}


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_every_free_text_field_has_a_max_length(name: str) -> None:
    fields = free_text_fields(SCHEMAS[name])
    assert fields, "each judge schema has a free-text reason"
    for path, field in fields:
        assert field.get("maxLength") == parse.REASON_MAX_CHARS, path


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_the_derived_budget_covers_the_longest_reply_the_schema_allows(name: str) -> None:
    schema = SCHEMAS[name]
    budget = parse.schema_max_tokens(schema, margin=0)
    assert budget is not None
    longest = json.dumps(_longest(schema), separators=(",", ":"))
    assert len(longest) <= budget  # one token per character at worst
    assert budget < 1024  # and it is a real bound, below the old fixed default


def _longest(schema: dict[str, Any]) -> Any:
    kind = schema.get("type")
    if "enum" in schema:
        return max(schema["enum"], key=lambda v: len(json.dumps(v)))
    if kind == "object":
        return {k: _longest(v) for k, v in schema["properties"].items()}
    if kind == "array":
        return [_longest(schema["items"])] * schema["maxItems"]
    if kind == "string":
        return "x" * schema["maxLength"]
    if kind == "integer":
        return max(schema["minimum"], schema["maximum"], key=lambda v: len(str(v)))
    return -1.2345678901234567e-300  # a float written out in full


def test_unbounded_schemas_keep_the_default_budget() -> None:
    assert parse.schema_max_tokens({"type": "object", "properties": {"r": {"type": "string"}}}) is None
    request = JudgeRequest(model="m", messages=(), schema={"type": "string"})
    assert request.body(True)["max_tokens"] == 1024


def test_max_tokens_is_derived_unless_the_user_sets_it() -> None:
    derived = parse.schema_max_tokens(parse.score_schema(0, 10))
    assert req("x").body(True)["max_tokens"] == derived
    assert req("x").body(False)["max_tokens"] == 1024  # no schema sent: nothing bounds the reply
    assert req("x", max_tokens=77).body(True)["max_tokens"] == 77


def test_the_rewards_send_a_bounded_schema_and_budget() -> None:
    with FakeJudgeServer() as server:
        common = {"base_url": server.base_url, "model": "bounded", **FAST}
        rewards = [
            judge_score(**common),
            judge_reference(**common),
            judge_rubric(
                **common,
                criteria=[{"name": "clarity", "description": "clear"}, {"name": "accuracy", "description": "right"}],
            ),
            judge_group(**common),
        ]
        data = [{"prompt": "p", "completion": f"c{i}", "reference": "r"} for i in range(3)]
        with Engine(rewards) as engine:
            results = engine.score(data)
        assert all(r.ok for r in results)
        bodies = list(server.bodies)
    assert len(bodies) == 3 * 3 + 1
    for body in bodies:
        schema = body["response_format"]["json_schema"]["schema"]
        assert body["max_tokens"] == parse.schema_max_tokens(schema) < 1024
        assert all(f.get("maxLength") for _, f in free_text_fields(schema))


# ---------------------------------------------------------------------------------------------------- truncation


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_truncated_reply_is_its_own_typed_error(backend: str) -> None:
    with FakeJudgeServer() as server:
        client = JudgeClient(ClientConfig(base_url=server.base_url, http_backend=backend, **FAST))
        with pytest.raises(rf_errors.JudgeTruncatedError) as caught:
            asyncio.run(client.complete(req("x [[fault:length]]")))
        assert server.stats()["requests"] == 1  # not retried: it would be cut off again
    err = caught.value
    assert "finish_reason=length" in str(err) and err.raw
    assert err.info["judge"]["failed"] is True and err.info["judge"]["raw"] == err.raw


def test_a_truncated_reply_through_the_engine_keeps_the_raw_text() -> None:
    with FakeJudgeServer() as server:
        reward = judge_score(base_url=server.base_url, model="trunc", **FAST)
        with Engine(reward) as engine:
            (result,) = engine.score([{"prompt": "p", "completion": "c [[fault:length]]"}])
    assert result.status is Status.ERROR and result.reason.startswith("JudgeTruncatedError")
    assert result.info["judge"]["raw"]


# ---------------------------------------------------------------------------------------------------- context overflow


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_context_overflow_is_typed_and_leaves_structured_output_on(backend: str) -> None:
    """Fails on main: the overflow 400 was taken as "no structured output" for the model on this endpoint."""
    with FakeJudgeServer(context=50) as server:
        client = JudgeClient(ClientConfig(base_url=server.base_url, http_backend=backend, **FAST))
        with pytest.raises(JudgeStatusError) as caught:
            asyncio.run(client.complete(req("word " * 200 + "[[score=3]]")))
        reply = asyncio.run(client.complete(req("short [[score=4]]")))
        assert reply.structured and "response_format" in server.bodies[-1]  # main: schema no longer sent
        assert json.loads(reply.text)["score"] == 4
        assert server.stats()["requests"] == 2  # the overflow is not retried, with or without the schema
    err = caught.value
    assert isinstance(err, rf_errors.JudgeContextError)
    assert (err.prompt_tokens, err.context_limit, err.status_code) == (201, 50, 400)
    assert "201 (server's count) prompt tokens" in str(err) and "limit is 50" in str(err)


def test_a_context_overflow_without_numbers_names_the_estimate() -> None:
    message = {"error": {"message": "This prompt is too long for the model's context window", "code": 400}}
    client = JudgeClient(
        ClientConfig(base_url="http://127.0.0.1:9/v1", http_backend="httpx", **FAST),
        transport=httpx.MockTransport(lambda r: httpx.Response(400, json=message)),
    )
    with pytest.raises(rf_errors.JudgeContextError) as caught:
        asyncio.run(client.complete(req("x" * 4000)))
    assert caught.value.context_limit is None
    assert caught.value.prompt_tokens == 1000  # 4 characters per token
    assert "~1000 (estimate)" in str(caught.value) and "did not say its limit" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "prompt", "limit"),
    [
        # vLLM's wording
        (
            "This model's maximum context length is 2048 tokens. However, you requested 3000 tokens "
            "(2000 in the messages, 1000 in the completion).",
            2000,
            2048,
        ),
        # SGLang's wording
        ("The input (3000 tokens) is longer than the model's context length (2048 tokens).", 3000, 2048),
    ],
)
def test_context_limits_are_read_from_other_servers_wording(text: str, prompt: int, limit: int) -> None:
    client = JudgeClient(
        ClientConfig(base_url="http://127.0.0.1:9/v1", http_backend="httpx", **FAST),
        transport=httpx.MockTransport(lambda r: httpx.Response(400, json={"error": {"message": text}})),
    )
    with pytest.raises(rf_errors.JudgeContextError) as caught:
        asyncio.run(client.complete(req("x")))
    assert (caught.value.prompt_tokens, caught.value.context_limit) == (prompt, limit)


def test_a_400_for_another_reason_does_not_switch_structured_output_off() -> None:
    """Fails on main: any 400 marked the model as not supporting structured output."""
    with FakeJudgeServer() as server:
        client = JudgeClient(ClientConfig(base_url=server.base_url, **FAST))
        first = asyncio.run(client.complete(req("x [[fault:400*1]] [[score=2]]")))
        assert not first.structured  # retried once without the schema, which worked
        second = asyncio.run(client.complete(req("y [[score=5]]")))
        assert second.structured and "response_format" in server.bodies[-1]


def test_structured_output_is_marked_unsupported_only_after_the_retry_without_it_works() -> None:
    state = {"fail_all": True}
    seen: list[bool] = []

    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append("response_format" in body)
        if state["fail_all"]:  # the server says the feature is unsupported, and fails without it too
            return httpx.Response(400, json={"error": {"message": "response_format json_schema is not supported"}})
        content = '{"reason": "ok", "score": 7}'
        return httpx.Response(200, json={"choices": [{"message": {"content": content}, "finish_reason": "stop"}]})

    client = JudgeClient(
        ClientConfig(base_url="http://127.0.0.1:9/v1", http_backend="httpx", **FAST),
        transport=httpx.MockTransport(answer),
    )
    with pytest.raises(JudgeStatusError):
        asyncio.run(client.complete(req("a")))
    state["fail_all"] = False
    assert asyncio.run(client.complete(req("b"))).structured  # still sent: the retry had not worked
    assert seen == [True, False, True]
