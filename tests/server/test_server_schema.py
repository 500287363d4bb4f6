"""Property test: schemathesis drives the live server from its own OpenAPI schema (schema-valid and invalid
bodies, hypothesis underneath). No request may get a 5xx, and every reply must conform to the schema (status
code, content type, body): "the OpenAPI schema matches what the server does", checked.

The operations are run through schemathesis's Python API (``as_strategy`` + ``call_and_validate``) rather than
its pytest plugin, because the server is a per-module fixture started as a subprocess.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from tests.server.conftest import Server

schemathesis = pytest.importorskip("schemathesis")

ROUTES = ("/v1/score", "/get_reward", "/rm", "/healthz", "/readyz", "/metrics", "/run_code")


@pytest.fixture(scope="module")
def api_schema(id_server: Server) -> Any:
    # A schema-valid body may still be refused with 424: the rows lack the column the reward needs (`id`);
    # that is the documented answer of the number-only dialects for a failed sample, never a 5xx.
    config = schemathesis.Config.from_dict(
        {"checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "401", "403", "424", "429"]}}}
    )
    schema = schemathesis.openapi.from_url(id_server.url + "/openapi.json", config=config)
    schema.config.update(base_url=id_server.url)
    return schema


def _operation(schema: Any, path: str) -> Any:
    for result in schema.get_all_operations():
        op = result.ok()
        if op.path == path:
            return op
    raise AssertionError(f"{path} is not in the OpenAPI schema")


CASES = [(p, "positive") for p in ROUTES] + [(p, "negative") for p in (*ROUTES[:3], "/run_code")]  # GET: no input


@pytest.mark.parametrize(("path", "mode"), CASES)
def test_no_server_errors_and_replies_match_the_schema(api_schema: Any, path: str, mode: str) -> None:
    op = _operation(api_schema, path)
    strategy = op.as_strategy(generation_mode=schemathesis.GenerationMode(mode))

    lengths_rule = path == "/get_reward" and mode == "positive"
    excluded = [schemathesis.checks.positive_data_acceptance] if lengths_rule else []

    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=strategy)
    def run(case: Any) -> None:
        response = case.call_and_validate(excluded_checks=excluded)
        if lengths_rule:
            # JSON Schema cannot say "`prompts` and `labels` as long as `query`"; the server checks it (422
            # naming the field). Any other schema-valid body must be accepted.
            body = case.body
            uneven = any(
                isinstance(body.get(k), list) and len(body[k]) != len(body["query"]) for k in ("prompts", "labels")
            )
            assert response.status_code in ((422,) if uneven else (200, 424)), response.text[:300]
            if uneven:
                assert "items for" in response.json()["error"]

    run()


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/run_code", {"code": "print(1)", "language": "python", "memory_limit_MB": True}),
        ("/run_code", {"code": "print(1)", "language": "python", "run_timeout": True}),
        ("/v1/score", {"samples": [], "timeout": True}),
        ("/v1/score", {"samples": [{"completion": "x", "prompt_ids": [True]}]}),
    ],
)
def test_a_json_boolean_is_not_a_number(id_server: Server, path: str, body: dict[str, Any]) -> None:
    """Found by the schemathesis run above (seed 246558853857007656631880499294991156429): lax pydantic read
    `true` as 1 (a 1 MiB memory limit, a 1 s deadline, token id 1); the schema says integer/number, so 422."""
    import httpx

    reply = httpx.post(id_server.url + path, json=body, timeout=60)
    assert reply.status_code == 422, reply.text
