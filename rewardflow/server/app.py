"""The FastAPI app: the OpenAPI schema, the probes, ``/metrics``, wrapped in :class:`~rewardflow.server.guard.Guard`.

Routes:

* ``POST /v1/score`` (native), ``POST /get_reward`` (OpenRLHF), ``POST /rm`` (slime): bodies in
  :mod:`rewardflow.server.schemas`, behaviour in :class:`~rewardflow.server.service.Service`. In a running
  server the guard's fast path answers them; the FastAPI handlers here call the same service methods (they
  define the OpenAPI operations and serve an app used without the guard);
* ``GET /v1/components``: the rewards behind ``/v1/score`` (name, weight, gate, kind), for
  :attr:`rewardflow.client.RemoteEngine.components`;
* ``POST /run_code`` (SandboxFusion): one program run in rewardflow's sandbox, SandboxFusion's request and reply
  (:mod:`rewardflow.server.run_code`); through FastAPI, behind the guard's token and body limits;
* ``GET /healthz`` (the process answers), ``GET /readyz`` (spec loaded, reward workers up, not shutting down;
  503 otherwise), ``GET /metrics`` (Prometheus, :mod:`rewardflow.server.metrics`).

Every error status a route can answer is declared in its OpenAPI ``responses``.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from rewardflow.server.config import ServerConfig
from rewardflow.server.guard import COMPONENTS_HEADER, TIMEOUT_HEADER, Guard, encode, validation_body
from rewardflow.server.run_code import CodeRunner, RunCodeRequest, RunCodeResponse
from rewardflow.server.schemas import (
    ComponentsResponse,
    ErrorResponse,
    OpenRLHFRequest,
    OpenRLHFResponse,
    ScoreRequest,
    ScoreResponse,
    SlimeDictResponse,
    SlimeRequest,
)
from rewardflow.server.service import Rejected, Service, ServiceState
from rewardflow.spec import Spec

__all__ = ["create_app"]

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing bearer token (when the server has one)."},
    403: {"model": ErrorResponse, "description": "Wrong bearer token."},
    413: {"model": ErrorResponse, "description": "Body larger than max_body_bytes, or more samples than max_batch."},
    429: {"model": ErrorResponse, "description": "Queue full; retry after `Retry-After` seconds."},
    503: {"model": ErrorResponse, "description": "Starting or shutting down; retry after `Retry-After` seconds."},
}
_FAILED: dict[int | str, dict[str, Any]] = {
    424: {"model": ErrorResponse, "description": "A sample failed and no `failure_value` is configured."}
}


class _JSON(JSONResponse):
    """Starlette's JSON response, encoded as the guard's fast path encodes (same bytes either way)."""

    def render(self, content: Any) -> bytes:
        return encode(content)


def _timeout(request: Request) -> float | None:
    raw = request.headers.get(TIMEOUT_HEADER.decode())
    try:
        value = float(raw) if raw is not None else None
    except ValueError:
        return None
    return value if value is not None and value > 0 else None


def create_app(spec: Spec, config: ServerConfig) -> Guard:
    """The ASGI app serving ``spec`` with ``config``: FastAPI inside a :class:`Guard`; ``.service`` is the service."""
    service = Service(spec, config)
    # Sandboxed programs run on their own threads, as many as the server has reward workers.
    runner = CodeRunner(config.workers or spec.workers, max_s=config.request_timeout, require=config.run_code_isolation)

    @asynccontextmanager
    async def lifespan(_: Any) -> Any:
        await service.start()
        try:
            yield
        finally:
            await service.stop()
            runner.close()

    app = FastAPI(
        title="rewardflow",
        summary="Reward service: native typed results, OpenRLHF, slime and SandboxFusion dialects.",
        version="1",
        lifespan=lifespan,
    )
    app.state.service = service

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _JSON(validation_body(list(exc.errors())), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI answers a body it cannot decode (not UTF-8) with 400; it is malformed JSON like any other: 422.
        if exc.status_code == 400:
            err = {"type": "json_invalid", "loc": ("body",), "msg": str(exc.detail), "input": None}
            return _JSON(validation_body([err]), status_code=422)
        return _JSON({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Rejected)
    async def _rejected(_: Request, exc: Rejected) -> JSONResponse:
        return _JSON(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.post("/v1/score", response_model=ScoreResponse, responses=_ERRORS, tags=["native"])
    async def score(body: ScoreRequest, request: Request) -> Any:
        """Score a batch: one typed result per sample, in order (reward, status, reason, components, latency_ms)."""
        describe = COMPONENTS_HEADER.decode() in request.headers
        return _JSON(await service.native(body, _timeout(request), describe))

    @app.get("/v1/components", response_model=ComponentsResponse, responses=_ERRORS, tags=["native"])
    async def components() -> Any:
        """The rewards behind ``/v1/score``: each component's name (its key in ``components``), weight, gate and
        kind, in the spec's order. ``RemoteEngine.components`` reads it, so adapters log per-component keys."""
        if service.state is not ServiceState.READY:
            raise Rejected(503, f"service is {service.state.value}", {"Retry-After": str(config.retry_after)})
        return _JSON({"components": service.described})

    @app.post("/get_reward", response_model=OpenRLHFResponse, responses={**_ERRORS, **_FAILED}, tags=["OpenRLHF"])
    async def get_reward(body: OpenRLHFRequest, request: Request) -> Any:
        """OpenRLHF ``--remote_rm_url``: lists in, ``rewards``/``scores``/``extra_logs`` out; empty lists allowed."""
        return _JSON(await service.openrlhf(body, _timeout(request)))

    @app.post("/rm", response_model=float | SlimeDictResponse, responses={**_ERRORS, **_FAILED}, tags=["slime"])
    async def rm(
        body: SlimeRequest,
        request: Request,
        format: str = Query("number", pattern="^(number|dict)$", description="`dict` for use with --reward-key."),
    ) -> Any:
        """slime ``--rm-url``: one sample in, the reward as a bare JSON number (or a dict with ``?format=dict``)."""
        return _JSON(await service.slime(body, format == "dict", _timeout(request)))

    @app.post("/run_code", response_model=RunCodeResponse, responses=_ERRORS, tags=["SandboxFusion"])
    async def run_code(body: RunCodeRequest) -> Any:
        """SandboxFusion ``/run_code``: run one program in the sandbox; ``Failed`` for the program's faults
        (wrong exit, time limit, compile error), ``SandboxError`` only for the infrastructure."""
        if service.state is not ServiceState.READY:
            raise Rejected(503, f"service is {service.state.value}", {"Retry-After": str(config.retry_after)})
        return _JSON((await runner.run(body)).model_dump(mode="json"))

    @app.get("/healthz", tags=["probes"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "alive"}

    @app.get("/readyz", tags=["probes"], responses={503: {"description": "Starting or shutting down."}})
    async def readyz() -> Any:
        """Readiness: spec loaded, reward workers up, not shutting down."""
        ok = service.state is ServiceState.READY
        body = {"status": service.state.value, "rewards": service.components, "queue_depth": service.queued}
        return _JSON(body, status_code=200 if ok else 503)

    @app.get("/metrics", tags=["probes"], response_class=Response)
    async def metrics() -> Response:
        """Prometheus text format."""
        payload, content_type = service.metrics.render()
        return Response(payload, media_type=content_type)

    return Guard(app, service)
