"""The native dialect and the probes, against a real ``rewardflow serve`` subprocess on loopback."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.server.conftest import Server


def test_results_come_back_in_order_one_per_sample_typed(id_server: Server) -> None:
    samples = [{"completion": "x", "id": i} for i in range(50)]
    samples[7] = {"completion": "raise", "id": 7}  # the reward raises: an error result, not a 0
    samples[9] = {"completion": "x"}  # the column the reward needs is missing
    r = httpx.post(id_server.url + "/v1/score", json={"samples": samples}, timeout=60)
    assert r.status_code == 200
    results = r.json()["results"]
    assert len(results) == 50
    for i, res in enumerate(results):
        if i in (7, 9):
            assert res["status"] == "error" and res["reward"] is None and res["reason"]
        else:
            assert res == {**res, "reward": float(i), "status": "ok", "components": {"id": float(i)}}
            assert res["latency_ms"] >= 0
    assert "deterministic failure" in results[7]["reason"]
    assert "'id'" in results[9]["reason"]


def test_empty_batch_is_an_empty_answer(id_server: Server) -> None:
    r = httpx.post(id_server.url + "/v1/score", json={"samples": []}, timeout=30)
    assert (r.status_code, r.json()) == (200, {"results": []})


def test_malformed_json_is_422_naming_the_problem(id_server: Server) -> None:
    r = httpx.post(id_server.url + "/v1/score", content=b'{"samples": [', headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert "JSON" in r.json()["error"]


def test_missing_field_is_422_naming_the_field(id_server: Server) -> None:
    r = httpx.post(id_server.url + "/v1/score", json={"samples": [{"completion": "a"}, {"prompt": "p"}]})
    assert r.status_code == 422
    assert "samples.1.completion" in r.json()["error"]
    r = httpx.post(id_server.url + "/v1/score", json={"samples": [{"completion": 3}]})
    assert r.status_code == 422 and "samples.0.completion" in r.json()["error"]
    r = httpx.post(id_server.url + "/v1/score", json={"sample": []})
    assert r.status_code == 422 and "samples" in r.json()["error"]


def test_probes_and_metrics(id_server: Server) -> None:
    assert httpx.get(id_server.url + "/healthz").json() == {"status": "alive"}
    ready = httpx.get(id_server.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["rewards"] == ["id"]
    httpx.post(id_server.url + "/v1/score", json={"samples": [{"completion": "raise", "id": 0}]})
    text = httpx.get(id_server.url + "/metrics").text
    for needle in (
        'rewardflow_requests_total{code="200",route="/v1/score"}',
        'rewardflow_samples_total{reward="id",status="error"}',
        'rewardflow_samples_total{reward="total",status="ok"}',
        'rewardflow_reward_seconds_bucket{le="0.001",reward="id"}',
        "rewardflow_queue_depth 0.0",
        "rewardflow_in_flight_requests 1.0",  # the /metrics request itself
    ):
        assert needle in text, needle
    errors = [
        line for line in text.splitlines() if line.startswith('rewardflow_samples_total{reward="id",status="error"}')
    ]
    assert float(errors[0].split()[-1]) >= 1


def test_openapi_declares_every_route_and_error(id_server: Server) -> None:
    schema = httpx.get(id_server.url + "/openapi.json").json()
    paths = schema["paths"]
    assert {"/v1/score", "/get_reward", "/rm", "/healthz", "/readyz", "/metrics"} <= set(paths)
    for route in ("/v1/score", "/get_reward", "/rm"):
        codes = set(paths[route]["post"]["responses"])
        assert {"200", "401", "403", "413", "422", "429", "503"} <= codes, route
    assert "424" in paths["/get_reward"]["post"]["responses"]
    body = json.dumps(schema["components"]["schemas"]["ResultOut"])
    assert "timeout" in body and "latency_ms" in body


def test_a_response_without_a_body_is_still_sent_and_bodies_arrive_whole(id_server: Server) -> None:
    # The server holds a response head until its body follows, to send both in one write; a HEAD reply has no
    # body, so its head must still go out (at the end of the loop turn), on a connection that stays usable.
    with httpx.Client(timeout=10) as client:
        head = client.head(id_server.url + "/healthz")
        assert head.status_code in (200, 405) and head.content == b""
        big = {"samples": [{"completion": "c" * 1000, "id": i} for i in range(300)]}  # a reply of many writes
        reply = client.post(id_server.url + "/v1/score", json=big)
        assert [r["reward"] for r in reply.json()["results"]] == [float(i) for i in range(300)]
        assert client.get(id_server.url + "/healthz").json() == {"status": "alive"}


def test_replies_refuse_non_finite_numbers_and_keep_text_that_spells_them() -> None:
    from rewardflow.server.guard import encode

    assert json.loads(encode({"reason": "NaN and Infinity are words here", "reward": 1.5})) == {
        "reason": "NaN and Infinity are words here",
        "reward": 1.5,
    }
    assert encode({"reward": 0.1, "é": "ü"}) == '{"reward":0.1,"é":"ü"}'.encode()
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError):
            encode({"reward": bad})  # JSON has no NaN: never sent as NaN, nor silently as null
