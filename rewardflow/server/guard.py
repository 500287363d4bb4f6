"""The ASGI layer in front of the app: protection, request metrics, and the fast path for the scoring routes.

Protection, in the order a request meets it, before any body is parsed: bearer token (401 missing, 403 wrong;
``/healthz`` and ``/readyz`` stay open for probes), body size (413 from ``Content-Length``, or while reading a
body sent without one). Every request is counted in ``rewardflow_requests_total{route, code}``.

Fast path: the three scoring routes (``POST /v1/score``, ``/get_reward``, ``/rm``) are answered here: the body is
validated by the same pydantic models FastAPI would use (``model_validate_json``, in pydantic's Rust core) and
handed to the same :class:`~rewardflow.server.service.Service` dialect methods as the FastAPI routes, with the
same error bodies (422 ``detail`` list as FastAPI writes it, plus a one-line ``error``). What it skips is
FastAPI's per-request routing, dependency and response machinery, to keep one-sample requests (OpenRLHF's and
slime's pattern) cheap. Everything else (OpenAPI, probes, metrics, 404s) goes to FastAPI. The
schemathesis test checks the live behaviour against the OpenAPI schema, so the two cannot drift apart silently.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

from pydantic import BaseModel, ValidationError
from pydantic_core import to_json

from rewardflow.server.schemas import OpenRLHFRequest, ScoreRequest, SlimeRequest
from rewardflow.server.service import Rejected, Service

__all__ = ["COMPONENTS_HEADER", "OPEN_PATHS", "TIMEOUT_HEADER", "Guard", "encode", "validation_body"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
ROUTES = frozenset(
    {
        "/v1/score",
        "/v1/components",
        "/get_reward",
        "/rm",
        "/run_code",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/docs",
    }
)
#: Optional request header: the request's deadline in seconds (at most the server's ``request_timeout``).
TIMEOUT_HEADER = b"x-rewardflow-timeout"
#: Optional request header of ``/v1/score``: when present, the reply also lists the service's components.
COMPONENTS_HEADER = b"x-rewardflow-components"
_FAST: dict[str, type[BaseModel]] = {"/v1/score": ScoreRequest, "/get_reward": OpenRLHFRequest, "/rm": SlimeRequest}
_JSON = [(b"content-type", b"application/json")]


class _TooLarge(Exception):
    pass


def validation_body(errors: list[dict[str, Any]], prefix: tuple[str, ...] = ()) -> dict[str, Any]:
    """FastAPI's 422 ``detail`` list (``loc`` from ``body``/``query``) plus a one-line ``error`` naming fields."""
    detail = []
    for e in errors:
        item = {k: v for k, v in e.items() if k != "url"}
        item["loc"] = [*prefix, *e.get("loc", ())]
        detail.append(item)
    lines = [f"{'.'.join(str(p) for p in d['loc']) or 'body'}: {d.get('msg')}" for d in detail[:5]]
    return {"detail": json.loads(json.dumps(detail, default=str)), "error": "; ".join(lines)}


class Guard:
    """ASGI middleware around the FastAPI app; see the module docstring."""

    def __init__(self, app: Any, service: Service) -> None:
        self.app = app
        self.service = service
        token = service.config.token
        self._expected = f"Bearer {token}".encode() if token else None
        self._limit = service.config.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        metrics = self.service.metrics
        start = time.perf_counter()
        code = 500
        metrics.in_flight.inc()

        async def counted_send(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = message["status"]
            await send(message)

        try:
            headers = dict(scope["headers"])
            problem = self._check(headers, path)
            if problem is not None:
                await _reply(counted_send, problem[0], {"error": problem[1]}, problem[2])
            elif scope["method"] == "POST" and path in _FAST:
                await self._fast(scope, headers, receive, counted_send)
            else:
                await self._limited(scope, receive, counted_send)
        finally:
            metrics.in_flight.dec()
            metrics.answered(path if path in ROUTES else "other", code, time.perf_counter() - start)

    def _check(self, headers: dict[bytes, bytes], path: str) -> tuple[int, str, dict[str, str]] | None:
        if self._expected is not None and path not in OPEN_PATHS:
            given = headers.get(b"authorization")
            if not given:
                return 401, "missing `Authorization: Bearer <token>` header", {"WWW-Authenticate": "Bearer"}
            if not hmac.compare_digest(given, self._expected):
                return 403, "wrong bearer token", {}
        length = headers.get(b"content-length")
        if length is not None:
            try:
                size = int(length)
            except ValueError:
                return 400, "bad Content-Length header", {}
            if size > self._limit:
                return 413, f"request body of {size} bytes; the limit is {self._limit}", {}
        return None

    async def _fast(self, scope: Scope, headers: dict[bytes, bytes], receive: Receive, send: Send) -> None:
        try:
            raw = await self._read(receive)
        except _TooLarge:
            await _reply(send, 413, {"error": f"request body larger than {self._limit} bytes"})
            return
        path = scope["path"]
        as_dict = False
        if path == "/rm":
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
            values = query.get("format", ["number"])
            if values[-1] not in ("number", "dict"):
                err = {"type": "string_pattern_mismatch", "loc": ("format",), "msg": "String should match pattern "
                       "'^(number|dict)$'", "input": values[-1]}  # fmt: skip
                await _reply(send, 422, validation_body([err], ("query",)))
                return
            as_dict = values[-1] == "dict"
        try:
            body = _FAST[path].model_validate_json(raw)
        except ValidationError as exc:
            await _reply(send, 422, validation_body(exc.errors(include_url=False), ("body",)))
            return
        timeout = _timeout(headers.get(TIMEOUT_HEADER))
        service = self.service
        try:
            if path == "/v1/score":
                describe = COMPONENTS_HEADER in headers
                payload: Any = await service.native(body, timeout, describe)  # type: ignore[arg-type]
            elif path == "/get_reward":
                payload = await service.openrlhf(body, timeout)  # type: ignore[arg-type]
            else:
                payload = await service.slime(body, as_dict, timeout)  # type: ignore[arg-type]
        except Rejected as exc:
            await _reply(send, exc.status, exc.body(), exc.headers)
            return
        await _reply(send, 200, payload)

    async def _read(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self._limit:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def _limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the FastAPI app, answering 413 as soon as a body passes the limit while it is read."""
        limit = self._limit
        seen = 0
        refused = False

        async def guarded_receive() -> Message:
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request" and not refused:
                seen += len(message.get("body", b""))
                if seen > limit:
                    refused = True
                    await _reply(send, 413, {"error": f"request body larger than {limit} bytes"})
                    return {"type": "http.disconnect"}  # the app stops reading; its own reply is dropped
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        await self.app(scope, guarded_receive, guarded_send)


def _timeout(raw: bytes | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if value > 0 else None


def encode(payload: Any) -> bytes:
    """Compact UTF-8 JSON, in pydantic's Rust serializer (a third of ``json.dumps``' time for a batch reply).

    JSON has no NaN or Infinity: a reply holding one (there should be none; reward values are checked finite)
    is re-encoded by ``json.dumps(allow_nan=False)``, which raises rather than send invalid JSON or a null.
    """
    body = to_json(payload, inf_nan_mode="constants")
    if b"NaN" in body or b"Infinity" in body:  # also true of a string containing them: then the slow path is right
        return json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
    return body


async def _reply(send: Send, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
    body = encode(payload)
    raw_headers = [*_JSON, (b"content-length", str(len(body)).encode())]
    if headers:
        raw_headers += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})
