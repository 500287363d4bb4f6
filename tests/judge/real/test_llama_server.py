"""The judge rewards against a real OpenAI-compatible server: llama.cpp's llama-server running SmolLM2-135M-Instruct.

Run by ``make test-judge-real`` (not part of ``make test``: building llama-server takes 10-20 minutes on 2 cores).
Rows are real GSM8K model solutions (the packaged data). What is asserted is what rewardflow promises, not what a
135M model judges: every row gets exactly one result; an ok result is a parsed, schema-following verdict; a
failure is a typed error with its usage, never a 0; faults end ok after retries or as typed errors in bounded
time. The figures (rows ok per reward, throughput, fault outcomes) go to the session report (conftest.py).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
from typing import Any

import pytest

from rewardflow import Engine, Status
from rewardflow.data import gsm8k_examples
from rewardflow.errors import JudgeConnectionError, JudgeContextError, JudgeTimeoutError
from rewardflow.judge import judge_group, judge_reference, judge_rubric, judge_score, usage_summary
from rewardflow.judge.client import JudgeClient, JudgeRequest
from rewardflow.judge.config import ClientConfig
from rewardflow.judge.parse import score_schema
from tests.judge.real.llama_server import CONTEXT, OPENER, SLOTS, LlamaServer

MODEL = "smollm2-135m-instruct"
N = 8
# retries sized for a server that restarts in a few seconds; timeouts for a 135M model on 2 shared cores
COMMON = {"model": MODEL, "timeout": 120.0, "max_retries": 6, "backoff": 0.5, "backoff_max": 4.0, "cache": False}
CRITERIA = [
    {"name": "correctness", "description": "Is the final answer right?", "weight": 2},
    {"name": "clarity", "description": "Are the steps easy to follow?"},
]


def rows(n: int = N, start: int = 0) -> list[dict[str, Any]]:
    out = []
    for row in list(gsm8k_examples(limit=start + n))[start:]:
        answer = row["answer"].rsplit("####", 1)[-1].strip()
        out.append({"prompt": row["prompt"], "completion": row["completion"], "reference": answer})
    return out


def tally(results: list[Any]) -> dict[str, Any]:
    reasons = sorted({(r.reason or "").split(":")[0] for r in results if not r.ok})
    return {"rows": len(results), "ok": sum(r.ok for r in results), "failed_as": reasons}


def check_results(results: list[Any], n: int) -> None:
    assert len(results) == n  # one result per row, always
    for r in results:
        if r.ok:
            assert 0.0 <= r.value <= 1.0
            assert r.info["judge"]["structured"] is True  # the schema was sent and followed
        else:
            assert r.value is None and r.reason.startswith("Judge")  # a typed judge error, not a 0
            assert r.info["judge"]["failed"] is True


@pytest.mark.parametrize("name", ["judge_score", "judge_reference", "judge_rubric", "judge_group"])
def test_every_judge_reward_end_to_end(name: str, llama: LlamaServer, report: dict[str, Any]) -> None:
    params = {"base_url": llama.base_url, **COMMON, "concurrency": SLOTS}
    reward = {
        "judge_score": lambda: judge_score(**params),
        "judge_reference": lambda: judge_reference(**params),
        "judge_rubric": lambda: judge_rubric(**params, criteria=CRITERIA),
        "judge_group": lambda: judge_group(**params),  # 8 rows = 2 questions x 4 solutions: 2 calls
    }[name]()
    data = rows()
    start = time.monotonic()
    with Engine(reward) as engine:
        results = engine.score(data)
    wall = time.monotonic() - start
    check_results(results, len(data))
    usage = usage_summary(results)
    sent = reward.usage()["requests"]
    assert usage["requests"] == sent  # accounting matches what was sent, groups included
    figures = {**tally(results), "requests": sent, "wall_s": round(wall, 1)}
    figures["completion_tokens"] = usage["completion_tokens"]
    report.setdefault("rewards", {})[name] = figures
    assert figures["ok"] >= len(data) * 3 // 4, figures  # bounded output: a small model no longer loops


def test_the_cache_serves_a_second_pass_without_requests(llama: LlamaServer, report: dict[str, Any]) -> None:
    reward = judge_score(base_url=llama.base_url, **{**COMMON, "cache": True})
    data = rows(4, start=20)
    with Engine(reward) as engine:
        first = engine.score(data)
        sent = reward.usage()["requests"]
        second = engine.score(data)
    assert reward.usage()["requests"] == sent
    assert [r.value for r in second] == [r.value for r in first]
    assert all(r.info["judge"]["cached"] for r in second if r.ok)
    report["cache_second_pass_requests"] = reward.usage()["requests"] - sent


def test_capacity_against_a_sync_client(llama: LlamaServer, report: dict[str, Any]) -> None:
    """Throughput figures only (timing targets live in bench/): a one-at-a-time client vs rewardflow.

    The same 8 judgments each way, with llama-server's prompt cache off (``cache_prompt: false``) so that no
    variant reuses another's prefill; the order is sync, rewardflow at concurrency 1, then at concurrency 4.
    """
    data = rows(8, start=40)
    no_cache = {**COMMON, "extra_body": {"cache_prompt": False}}
    probe = judge_score(base_url=llama.base_url, **no_cache)
    start = time.monotonic()
    prompt_tokens = 0
    for body in _bodies(probe, data):  # the seed's way: one request at a time
        request = urllib.request.Request(
            llama.base_url + "/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with OPENER.open(request, timeout=300) as response:
            prompt_tokens += json.loads(response.read())["usage"]["prompt_tokens"]
    sync_wall = time.monotonic() - start
    figures: dict[str, Any] = {"judgments": len(data), "prompt_tokens": prompt_tokens, "sync_s": round(sync_wall, 1)}
    for concurrency in (1, SLOTS):
        reward = judge_score(base_url=llama.base_url, **no_cache, concurrency=concurrency)
        start = time.monotonic()
        with Engine(reward) as engine:
            results = engine.score(data)
        wall = time.monotonic() - start
        check_results(results, len(data))
        figures[f"rewardflow_c{concurrency}_s"] = round(wall, 1)
        figures[f"rewardflow_c{concurrency}_vs_sync"] = round(sync_wall / wall, 2)
    figures["prefill_tokens_per_s_sync"] = round(prompt_tokens / sync_wall, 1)  # upper bound: includes decoding
    report["capacity"] = figures


def _bodies(reward: Any, data: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The exact request bodies the reward sends (same template, schema and max_tokens)."""
    out = []
    for row in data:
        variables = {**row, "reference": row["reference"], "instructions": reward.params.instructions}
        variables.update(min_score=0, max_score=10)
        request = reward._request(reward.template.render(**variables), reward.schema, reward.__name__)
        out.append(request.body(True))
    return out


# ---------------------------------------------------------------------------------------------------- faults


def test_a_context_overflow_is_typed_and_structured_output_stays_on(llama: LlamaServer, report: dict[str, Any]) -> None:
    client = JudgeClient(ClientConfig(base_url=llama.base_url, timeout=120, max_retries=2, cache=False))
    long = " ".join(r["completion"] for r in rows(40, start=100))  # far more than 1,024 tokens per slot
    request = JudgeRequest(
        model=MODEL,
        messages=({"role": "user", "content": "Rate this from 0 to 10:\n" + long},),
        schema=score_schema(0, 10),
    )
    with pytest.raises(JudgeContextError) as caught:
        asyncio.run(client.complete(request))
    err = caught.value
    assert err.context_limit == CONTEXT // SLOTS and err.prompt_tokens > err.context_limit
    assert err.info["judge"]["requests"] == 1  # not retried, with or without the schema
    short = JudgeRequest(
        model=MODEL,
        messages=({"role": "user", "content": "Rate the answer '4' to 2+2 from 0 to 10."},),
        schema=score_schema(0, 10),
    )
    reply = asyncio.run(client.complete(short))
    assert reply.structured  # the overflow did not switch structured output off
    assert 0 <= json.loads(reply.text)["score"] <= 10
    report["context_overflow"] = {"error": str(err)[:300], "next_request_structured": reply.structured}


def test_kill_and_restart_loses_no_sample(spare: LlamaServer, report: dict[str, Any]) -> None:
    spare.start()
    reward = judge_score(base_url=spare.base_url, **COMMON, concurrency=16)
    data = rows(16, start=200)

    def bounce() -> None:
        time.sleep(1.0)
        spare.kill()  # with requests in flight
        time.sleep(1.0)
        spare.start(wait=False)  # answers 503 "Loading model" for a moment, then serves

    thread = threading.Thread(target=bounce)
    start = time.monotonic()
    with Engine(reward) as engine:
        thread.start()
        results = engine.score(data)
    thread.join()
    check_results(results, len(data))
    usage = reward.usage()
    figures = {**tally(results), "requests": usage["requests"], "retries": usage["retries"]}
    figures.update(errors=usage["errors"], wall_s=round(time.monotonic() - start, 1))
    report["kill_and_restart"] = figures
    assert usage["retries"] > 0  # the kill was felt
    assert figures["ok"] == len(data), figures  # and every sample was retried to an answer


def test_a_server_left_down_gives_typed_errors_then_recovers(spare: LlamaServer, report: dict[str, Any]) -> None:
    spare.start()
    spare.stop()
    params = {**COMMON, "max_retries": 3, "backoff": 0.2, "backoff_max": 1.0}
    reward = judge_score(base_url=spare.base_url, **params)
    data = rows(8, start=300)
    with Engine(reward) as engine:
        start = time.monotonic()
        down = engine.score(data)
        down_wall = time.monotonic() - start
        assert all(r.status is Status.ERROR and r.reason.startswith("JudgeConnectionError") for r in down)
        assert all(r.info["judge"]["requests"] == 4 for r in down)  # 1 + 3 retries each, then give up
        spare.start()
        up = engine.score(data)  # the same engine, once the server is back
    check_results(up, len(data))
    report["left_down"] = {
        "rows": len(down),
        "typed_connection_errors": sum(r.reason.startswith("JudgeConnectionError") for r in down),
        "wall_s": round(down_wall, 1),
        "after_restart_ok": sum(r.ok for r in up),
    }
    assert sum(r.ok for r in up) >= len(data) * 3 // 4


def test_a_per_attempt_timeout_is_typed_and_not_retried_on_llama_cpp(
    llama: LlamaServer, report: dict[str, Any]
) -> None:
    # 0.05 s is less than any reply takes; server="llama.cpp": it does not abort abandoned requests, so no retry
    client = JudgeClient(
        ClientConfig(base_url=llama.base_url, timeout=0.05, max_retries=3, server="llama.cpp", cache=False)
    )
    request = JudgeRequest(
        model=MODEL,
        messages=({"role": "user", "content": rows(1, start=400)[0]["prompt"]},),
        schema=score_schema(0, 10),
    )
    start = time.monotonic()
    with pytest.raises(JudgeTimeoutError) as caught:
        asyncio.run(client.complete(request))
    wall = time.monotonic() - start
    assert caught.value.info["judge"]["requests"] == 1 and wall < 5
    busy = _busy_after_abandon(llama, limit=30.0)
    report["timeout"] = {
        "error": str(caught.value)[:200],
        "requests": 1,
        "wall_s": round(wall, 2),
        "server_busy_after_abandon_s": busy,  # how long llama-server went on with the abandoned request
    }


def _busy_after_abandon(llama: LlamaServer, limit: float) -> float | str:
    """Seconds until no llama-server slot is processing (``GET /slots``); a string when still busy at ``limit``."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        with OPENER.open(llama.base_url.removesuffix("/v1") + "/slots", timeout=10) as response:
            slots = json.loads(response.read())
        if not any(slot.get("is_processing") for slot in slots):
            return round(time.monotonic() - start, 1)
        time.sleep(0.5)
    return f"still processing after {limit:g} s"


def test_a_wrong_port_is_a_typed_connection_error(spare: LlamaServer, report: dict[str, Any]) -> None:
    client = JudgeClient(ClientConfig(base_url=spare.base_url, max_retries=2, backoff=0.05, backoff_max=0.1))
    request = JudgeRequest(model=MODEL, messages=({"role": "user", "content": "hi"},))
    start = time.monotonic()
    with pytest.raises(JudgeConnectionError) as caught:  # nothing listens on the spare's port until started
        asyncio.run(client.complete(request))
    wall = time.monotonic() - start
    assert caught.value.info["judge"]["requests"] == 3 and wall < 10
    report["wrong_port"] = {"error": str(caught.value)[:200], "wall_s": round(wall, 2)}
