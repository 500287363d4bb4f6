"""The FastAPI app: one engine per server process, three dialects, probes, metrics and protection.

:class:`Service` owns the engine (hence the one global concurrency limit of the process: the worker pool, the
judges' limits and the model coalescers) and the admission state. :func:`create_app` wires it to routes:

* ``POST /v1/score`` (native), ``POST /get_reward`` (OpenRLHF), ``POST /rm`` (slime): see
  :mod:`rewardflow.server.schemas` for the bodies;
* ``GET /healthz`` (the process answers), ``GET /readyz`` (spec loaded, reward workers up, not shutting down),
  ``GET /metrics`` (Prometheus, :mod:`rewardflow.server.metrics`).

Protection, in the order a request meets it (:class:`Guard`, a plain ASGI middleware, so it runs before any
body is read): bearer token (401 missing, 403 wrong; the probes are open), body size (413, from
``Content-Length`` or while streaming), then in the handler: batch length (413), validation (422 naming the
field), queue depth (429 + ``Retry-After``), not ready or shutting down (503 + ``Retry-After``), and the request
deadline (samples not done by then come back ``timeout``; the engine cancels their work).

A sample that fails is a typed result in the native dialect. The OpenRLHF and slime dialects can only carry
numbers, so a failed sample fails the request with 424 (listing the failed samples), unless the server was
given ``failure_value``: then that value stands in and ``extra_logs["rewardflow/failed"]`` (OpenRLHF) or
``failed`` (slime dict) flags it.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from contextlib import asynccontextmanager
from enum import Enum
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from rewardflow.engine import Engine
from rewardflow.reward import Kind
from rewardflow.server.config import ServerConfig
from rewardflow.server.metrics import Metrics
from rewardflow.server.schemas import (
    ErrorResponse,
    OpenRLHFRequest,
    OpenRLHFResponse,
    ScoreRequest,
    ScoreResponse,
    SlimeDictResponse,
    SlimeRequest,
)
from rewardflow.spec import Spec
from rewardflow.types import RewardResult, Sample, Status

__all__ = ["Service", "ServiceState", "create_app"]

logger = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
ROUTES = ("/v1/score", "/get_reward", "/rm", "/healthz", "/readyz", "/metrics", "/openapi.json", "/docs")
TIMEOUT_HEADER = "x-rewardflow-timeout"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class ServiceState(str, Enum):
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"
    STOPPED = "stopped"


class Rejected(Exception):
    """A request refused before scoring (busy, not ready, failed samples): status, one line, headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None, failed: Any = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}
        self.failed = failed


class Service:
    """The engine and admission state behind the routes; one per server process."""

    def __init__(self, spec: Spec, config: ServerConfig) -> None:
        self.spec = spec
        self.config = config
        self.state = ServiceState.STARTING
        self.engine: Engine | None = None
        self.coalescers: dict[str, Any] = {}
        self.components = [r.component_name for r in spec.rewards]
        self.metrics = Metrics(self.components)
        self.queued = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Resolve the rewards, build the engine, start the reward workers and wait until they are up."""
        from rewardflow.server.batching import coalesce_components

        components = await asyncio.to_thread(self.spec.components)
        if self.config.batch_wait_ms > 0:
            components, self.coalescers = coalesce_components(
                components,
                max_wait=self.config.batch_wait_ms / 1000.0,
                max_samples=self.config.batch_max_samples,
                on_batch=lambda name, n: self.metrics.batch_samples.labels(name).observe(n),
            )
        spec = self.spec
        self.engine = Engine(
            components,
            workers=self.config.workers or spec.workers,
            timeout=spec.timeout,
            concurrency=spec.concurrency,
            retries=spec.retries,
            worker_threads=spec.worker_threads,
        )
        await asyncio.to_thread(self._start_workers)
        self.state = ServiceState.READY
        logger.info("rewardflow serve ready: %s", ", ".join(self.components))

    def _start_workers(self, wait: float = 120.0) -> None:
        engine = self.engine
        assert engine is not None
        process = [c.name for c in engine.components if c.reward.kind is Kind.PROCESS]
        if not process:
            return
        pool = engine._get_pool()  # the engine creates its pool lazily; the server wants it up before ready
        pool.submit(process[0], [], None)  # starts the pool's workers without scoring anything
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            up = sum(1 for w in list(getattr(pool, "_workers", [])) if getattr(w, "ready", True))
            if up >= pool.workers:
                return
            time.sleep(0.02)
        logger.warning("reward workers not all up after %.0fs; serving anyway", wait)

    def begin_shutdown(self) -> None:
        """SIGTERM: stop reporting ready (load balancers drain), keep answering what is in flight."""
        if self.state is not ServiceState.STOPPED:
            self.state = ServiceState.STOPPING

    async def stop(self) -> None:
        self.state = ServiceState.STOPPED
        if self.engine is not None:
            await self.engine.aclose()

    # ------------------------------------------------------------------ scoring

    async def score(self, samples: Sequence[Sample], timeout: float | None) -> list[RewardResult]:
        """Admit, score under the request deadline, account. Raises :class:`Rejected` for 429/503."""
        cfg = self.config
        if self.state is not ServiceState.READY or self.engine is None:
            raise Rejected(503, f"service is {self.state.value}", {"Retry-After": _seconds(cfg.retry_after)})
        n = len(samples)
        if n > cfg.max_batch:
            raise Rejected(413, f"{n} samples in one request; the limit is {cfg.max_batch}")
        if self.queued and self.queued + n > cfg.max_queue:
            raise Rejected(
                429,
                f"queue full ({self.queued} samples waiting, limit {cfg.max_queue}); retry later",
                {"Retry-After": _seconds(cfg.retry_after)},
            )
        if n == 0:
            return []
        deadline = min(timeout, cfg.request_timeout) if timeout else cfg.request_timeout
        self.queued += n
        self.metrics.queue_depth.set(self.queued)
        try:
            try:
                results = await asyncio.wait_for(self.engine.ascore(samples), deadline)
            except asyncio.TimeoutError:
                reason = f"request deadline of {deadline:g}s passed before this sample was scored"
                results = [RewardResult(None, Status.TIMEOUT, reason, latency=deadline) for _ in samples]
        finally:
            self.queued -= n
            self.metrics.queue_depth.set(self.queued)
        self.metrics.observe_results(results)
        return results


def _seconds(value: float) -> str:
    return str(max(1, round(value)))


def _timeout_header(request: Any) -> float | None:
    raw = request.headers.get(TIMEOUT_HEADER)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if value > 0 else None


def _failed(results: Sequence[RewardResult]) -> list[dict[str, Any]]:
    return [{"index": i, "status": r.status.value, "reason": r.reason} for i, r in enumerate(results) if not r.ok]


class Guard:
    """ASGI middleware: auth, body size, request counting. Runs before the body is read."""

    def __init__(self, app: Any, service: Service) -> None:
        self.app = app
        self.service = service
        token = service.config.token
        self._expected = f"Bearer {token}".encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        route = path if path in ROUTES else "other"
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
            problem = self._check(scope, path)
            if problem is not None:
                await _reply(counted_send, *problem)
                return
            await self._limited(scope, receive, counted_send)
        finally:
            metrics.in_flight.dec()
            metrics.requests.labels(route, str(code)).inc()
            metrics.request_seconds.labels(route).observe(time.perf_counter() - start)

    def _check(self, scope: Scope, path: str) -> tuple[int, str, dict[str, str]] | None:
        headers = dict(scope["headers"])
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
            if size > self.service.config.max_body_bytes:
                return 413, f"request body of {size} bytes; the limit is {self.service.config.max_body_bytes}", {}
        return None

    async def _limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app, answering 413 as soon as a body without (or beyond) Content-Length passes the limit."""
        limit = self.service.config.max_body_bytes
        seen = 0
        refused = False

        async def guarded_receive() -> Message:
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request" and not refused:
                seen += len(message.get("body", b""))
                if seen > limit:
                    refused = True
                    await _reply(send, 413, f"request body larger than {limit} bytes")
                    return {"type": "http.disconnect"}  # the app stops reading; its own reply is dropped
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        await self.app(scope, guarded_receive, guarded_send)


async def _reply(send: Send, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing bearer token (when the server has one)."},
    403: {"model": ErrorResponse, "description": "Wrong bearer token."},
    413: {"model": ErrorResponse, "description": "Body larger than max_body_bytes, or more samples than max_batch."},
    429: {"model": ErrorResponse, "description": "Queue full; retry after `Retry-After` seconds."},
    503: {"model": ErrorResponse, "description": "Starting or shutting down; retry after `Retry-After` seconds."},
}
_FAILED = {424: {"model": ErrorResponse, "description": "A sample failed and no `failure_value` is configured."}}


def create_app(spec: Spec, config: ServerConfig) -> Any:
    """The FastAPI app serving ``spec`` with ``config``; ``app.state.service`` is its :class:`Service`."""
    service = Service(spec, config)

    @asynccontextmanager
    async def lifespan(_: Any) -> Any:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="rewardflow",
        summary="Reward service: native typed results, OpenRLHF and slime dialects.",
        version="1",
        lifespan=lifespan,
    )
    app.state.service = service

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        lines = []
        for e in errors[:5]:
            where = ".".join(str(p) for p in e.get("loc", ()))
            lines.append(f"{where}: {e.get('msg')}")
        detail = json.loads(json.dumps(errors, default=str))  # ctx may hold exceptions
        return JSONResponse({"detail": detail, "error": "; ".join(lines)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI answers a body it cannot decode (not UTF-8) with 400; it is malformed JSON like any other: 422.
        status = 422 if exc.status_code == 400 else exc.status_code
        detail = [{"type": "json_invalid", "loc": ["body"], "msg": str(exc.detail), "input": None}]
        body: dict[str, Any] = {"detail": detail if status == 422 else exc.detail, "error": f"body: {exc.detail}"}
        return JSONResponse(body, status_code=status, headers=getattr(exc, "headers", None))

    @app.exception_handler(Rejected)
    async def _rejected(_: Request, exc: Rejected) -> JSONResponse:
        body: dict[str, Any] = {"error": str(exc)}
        if exc.failed is not None:
            body["failed"] = exc.failed
        return JSONResponse(body, status_code=exc.status, headers=exc.headers)

    @app.post("/v1/score", response_model=ScoreResponse, responses=_ERRORS, tags=["native"])
    async def score(body: ScoreRequest, request: Request) -> Any:
        """Score a batch: one typed result per sample, in order (reward, status, reason, components, latency_ms)."""
        samples = [
            Sample(s.prompt, s.completion, s.prompt_ids, s.completion_ids, s.group, s.model_extra or {})
            for s in body.samples
        ]
        timeout = body.timeout or _timeout_header(request)
        results = await service.score(samples, timeout)
        return JSONResponse({"results": [r.to_dict() for r in results]})

    @app.post("/get_reward", response_model=OpenRLHFResponse, responses={**_ERRORS, **_FAILED}, tags=["OpenRLHF"])
    async def get_reward(body: OpenRLHFRequest, request: Request) -> Any:
        """OpenRLHF ``--remote_rm_url``: lists in, ``rewards``/``scores``/``extra_logs`` out; empty lists allowed."""
        from rewardflow.integrations.openrlhf import split_response

        n = len(body.query)
        prompts = body.prompts if body.prompts is not None else [""] * n
        extra = {
            k: v for k, v in (body.model_extra or {}).items() if isinstance(v, list) and len(v) == n and k != "query"
        }
        samples = []
        for i in range(n):
            row = {k: v[i] for k, v in extra.items()}
            if body.labels is not None:
                row[config.label_column] = body.labels[i]
            samples.append(Sample(prompts[i], split_response(body.query[i], prompts[i]), row=row))
        results = await service.score(samples, _timeout_header(request))
        values, failed = _numbers(results, config.failure_value)
        fill = config.failure_value if config.failure_value is not None else 0.0
        logs: dict[str, list[float]] = {}
        for name in service.components:
            logs[f"rewardflow/{name}"] = [_or(r.components.get(name), fill) for r in results]
        logs["rewardflow/failed"] = [1.0 if f else 0.0 for f in failed]
        return JSONResponse({"rewards": values, "scores": values, "extra_logs": logs})

    @app.post("/rm", response_model=float | SlimeDictResponse, responses={**_ERRORS, **_FAILED}, tags=["slime"])
    async def rm(
        body: SlimeRequest,
        request: Request,
        format: str = Query("number", pattern="^(number|dict)$", description="`dict` for use with --reward-key."),
    ) -> Any:
        """slime ``--rm-url``: one sample in, the reward as a bare JSON number (or a dict with ``?format=dict``)."""
        prompt = body.prompt if isinstance(body.prompt, str) else json.dumps(body.prompt or "", ensure_ascii=False)
        row = dict(body.model_extra or {})
        row[config.label_column] = body.label
        results = await service.score([Sample(prompt, body.response, row=row)], _timeout_header(request))
        values, failed = _numbers(results, config.failure_value)
        if format == "number":
            return JSONResponse(values[0])
        out = results[0].to_dict()
        out.pop("info", None)
        out["reward"] = values[0]
        out["failed"] = failed[0]
        return JSONResponse(out)

    @app.get("/healthz", tags=["probes"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "alive"}

    @app.get("/readyz", tags=["probes"], responses={503: {"description": "Starting or shutting down."}})
    async def readyz() -> Any:
        """Readiness: spec loaded, reward workers up, not shutting down."""
        ok = service.state is ServiceState.READY
        body = {"status": service.state.value, "rewards": service.components, "queue_depth": service.queued}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics", tags=["probes"], response_class=Response)
    async def metrics() -> Response:
        """Prometheus text format."""
        payload, content_type = service.metrics.render()
        return Response(payload, media_type=content_type)

    return Guard(app, service)


def _or(value: float | None, fill: float) -> float:
    return fill if value is None else value


def _numbers(results: Sequence[RewardResult], failure_value: float | None) -> tuple[list[float], list[bool]]:
    """Values for the number-only dialects; a failure becomes ``failure_value`` or a 424 (never a silent 0)."""
    failed = [not r.ok for r in results]
    if any(failed) and failure_value is None:
        bad = _failed(results)
        first = bad[0]
        raise Rejected(
            424,
            f"{len(bad)} of {len(results)} samples failed (first: #{first['index']} {first['status']}: "
            f"{first['reason']}); start the server with --failure-value to send a stand-in value instead",
            failed=bad,
        )
    return [failure_value if f else r.value for r, f in zip(results, failed, strict=True)], failed  # type: ignore[misc]
