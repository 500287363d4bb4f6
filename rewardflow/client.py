"""``RemoteEngine``: the :class:`~rewardflow.engine.Engine` API over one or more ``rewardflow serve`` services.

``score`` / ``ascore`` / ``ascore_one`` behave like the engine's: one typed result per input, in order; a bad
row becomes an error result locally. The batch is cut into chunks of ``batch_size`` sent concurrently to
``POST /v1/score``.

Delivery: a chunk is retried until the service answers it, so no row is lost and none comes back twice
(results are placed by position, and scoring is idempotent, so a chunk re-sent after a lost reply is harmless).

* Retried, with exponential backoff and full jitter: connection errors (refused, reset, read timeout), 408,
  429 and 503 (waiting at least ``Retry-After``), and every other 5xx.
* Never retried: any other 4xx (bad token, oversized request, invalid body: the same request would fail the
  same way), raised as :class:`ServiceError`; and per-sample failures, which are results (``status`` error or
  timeout) like the engine's.
* Several URLs: each chunk goes to the URL with the fewest chunks in flight from this client (ties rotate); a URL
  that refuses connections is skipped for ``cooldown`` seconds and the chunk fails over at once to another.
* When ``retry_deadline`` passes (default 300 s) or ``max_attempts`` are spent, the chunk's rows come back as
  ``status="error"`` results naming the last problem: the caller still gets one result per row.

One pooled ``httpx.AsyncClient`` per event loop (created lazily, keep-alive connections reused); the sync
:meth:`RemoteEngine.score` runs on a loop the object owns. Adapters build one of these instead of a local engine
when ``$REWARDFLOW_URL`` or the spec's ``url:`` is set (:func:`remote_engine_for`).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import random
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rewardflow.engine import _LoopThread
from rewardflow.errors import EngineClosedError, InputError, MissingDependencyError, RewardflowError
from rewardflow.reward import Kind
from rewardflow.types import RewardResult, Sample, Status

__all__ = ["URL_ENV", "RemoteComponent", "RemoteEngine", "RemoteReward", "ServiceError", "remote_engine_for"]

logger = logging.getLogger(__name__)

#: Environment variable with the service URL(s), comma-separated; adapters then score remotely.
URL_ENV = "REWARDFLOW_URL"
TOKEN_ENV = "REWARDFLOW_TOKEN"
_RETRY_STATUS = frozenset({408, 429})


class ServiceError(RewardflowError):
    """The service refused a request for a reason a retry cannot fix (4xx: auth, size, validation)."""

    def __init__(self, message: str, *, status_code: int = 0) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass(frozen=True)
class RemoteReward:
    """What a client knows of a reward that runs on the service: its kind. ``fn`` is ``None``: it is not here."""

    kind: Kind
    fn: None = None


@dataclass(frozen=True)
class RemoteComponent:
    """One of the service's components, as ``GET /v1/components`` describes it (an :class:`Engine` component's
    fields, without the callable)."""

    name: str
    weight: float
    gate: bool
    reward: RemoteReward


@dataclass
class _Endpoint:
    base: str
    in_flight: int = 0
    down_until: float = 0.0

    @property
    def score_url(self) -> str:
        return self.base + "/v1/score"


class RemoteEngine:
    """Score through ``rewardflow serve``; see the module docstring.

    Args:
        urls: base URL(s) of the service (``http://host:8000``), a list or a comma-separated string.
        token: bearer token; default ``$REWARDFLOW_TOKEN``.
        timeout: seconds to wait for one reply (also sent as the request's deadline).
        batch_size: most samples per request.
        max_attempts: tries per chunk before its rows come back as errors.
        retry_deadline: seconds per chunk before its rows come back as errors.
        backoff, max_backoff: base and cap of the jittered exponential backoff, seconds.
        cooldown: seconds a URL that refused a connection is skipped while others are up.
        max_connections: pooled connections per event loop.
        transport: an ``httpx`` transport (tests: ``httpx.MockTransport``).
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        token: str | None = None,
        timeout: float = 300.0,
        batch_size: int = 256,
        max_attempts: int = 1000,
        retry_deadline: float = 300.0,
        backoff: float = 0.05,
        max_backoff: float = 2.0,
        cooldown: float = 1.0,
        max_connections: int = 256,
        transport: Any = None,
    ) -> None:
        bases = [u.strip() for u in (urls.split(",") if isinstance(urls, str) else urls) if u and u.strip()]
        if not bases:
            raise ValueError("RemoteEngine needs at least one URL")
        self.endpoints = [_Endpoint(_base(u)) for u in bases]
        self.token = token if token is not None else (os.environ.get(TOKEN_ENV, "").strip() or None)
        self.timeout = timeout
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.retry_deadline = retry_deadline
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.cooldown = cooldown
        self.max_connections = max_connections
        self._transport = transport
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
        self._rotation = itertools.count()
        self._runner = _LoopThread()
        self._closed = False
        self._components: tuple[RemoteComponent, ...] | None = None  # from the service, on first use
        self.attempts = 0  # requests sent, retries included (tests, bench)

    # ------------------------------------------------------------------ public API (the Engine's)

    def score(self, samples: Iterable[Sample | Mapping[str, Any]]) -> list[RewardResult]:
        """Score a batch remotely; one result per input, in input order."""
        self._check_open()
        return self._runner.run(self.ascore(list(samples)))

    async def ascore(self, samples: Iterable[Sample | Mapping[str, Any]]) -> list[RewardResult]:
        """Async :meth:`score`, on the caller's event loop (its own pooled connections)."""
        self._check_open()
        rows: list[dict[str, Any] | RewardResult] = [_to_row(i, s) for i, s in enumerate(samples)]
        todo = [i for i, r in enumerate(rows) if isinstance(r, dict)]
        chunks = [todo[k : k + self.batch_size] for k in range(0, len(todo), self.batch_size)]
        outs = await asyncio.gather(*(self._send([rows[i] for i in chunk]) for chunk in chunks))  # type: ignore[misc]
        for chunk, results in zip(chunks, outs, strict=True):
            for i, r in zip(chunk, results, strict=True):
                rows[i] = r
        return rows  # type: ignore[return-value]

    async def ascore_one(self, sample: Sample | Mapping[str, Any]) -> RewardResult:
        return (await self.ascore([sample]))[0]

    def close(self) -> None:
        """Close the pooled connections of the sync loop and stop it. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._runner.started:
            try:
                self._runner.run(self._aclose_current())
            except Exception:
                logger.debug("closing the HTTP client failed", exc_info=True)
        self._runner.close()
        self._clients.clear()

    async def aclose(self) -> None:
        """Close the connections opened on the current event loop, then everything else."""
        await self._aclose_current()
        await asyncio.to_thread(self.close)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def components(self) -> tuple[RemoteComponent, ...]:
        """The service's components (``GET /v1/components``), as :attr:`Engine.components` gives a local engine's.

        The first ``/v1/score`` reply lists them (asked for with a header), so they are known once a request has
        been answered. Read before that, outside an event loop, they are fetched here; inside a running event
        loop they stay empty until the first reply (waiting for the service there would block the loop).
        """
        if self._components is None and not self._closed:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                self._runner.run(self._fetch_components())
        return self._components or ()

    async def _fetch_components(self) -> None:
        """``GET /v1/components`` from the first URL that answers; left unset (tried again later) if none does."""
        import httpx

        client = self._client()
        for endpoint in sorted(self.endpoints, key=lambda e: e.down_until):
            try:
                response = await client.get(endpoint.base + "/v1/components")
            except httpx.TransportError as exc:
                logger.debug("%s/v1/components: %s", endpoint.base, exc)
                continue
            if response.status_code == 404:  # a service older than the endpoint: no components to report
                self._components = ()
                return
            if response.status_code != 200:
                continue
            try:
                self._components = _components(response.json()["components"])
            except (ValueError, KeyError, TypeError) as exc:
                raise ServiceError(f"{endpoint.base}: reply is not a /v1/components list ({exc})") from exc
            return

    def __enter__(self) -> RemoteEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> RemoteEngine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ internals

    def _check_open(self) -> None:
        if self._closed:
            raise EngineClosedError("the remote engine is closed")

    async def _aclose_current(self) -> None:
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    def _client(self) -> Any:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            try:
                import httpx
            except ImportError as exc:
                raise MissingDependencyError("httpx", "server") from exc
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            limits = httpx.Limits(max_connections=self.max_connections, max_keepalive_connections=self.max_connections)
            client = httpx.AsyncClient(
                headers=headers,
                limits=limits,
                timeout=httpx.Timeout(self.timeout + 10.0, connect=5.0),
                transport=self._transport,
            )
            self._clients[loop] = client
        return client

    def _pick(self) -> _Endpoint:
        now = time.monotonic()
        up = [e for e in self.endpoints if e.down_until <= now] or sorted(self.endpoints, key=lambda e: e.down_until)[
            :1
        ]
        least = min(e.in_flight for e in up)
        candidates = [e for e in up if e.in_flight == least]
        return candidates[next(self._rotation) % len(candidates)]

    async def _send(self, rows: list[dict[str, Any]]) -> list[RewardResult]:
        import httpx

        try:
            body = json.dumps({"samples": rows, "timeout": self.timeout}, ensure_ascii=False).encode()
        except (TypeError, ValueError):
            return await self._send_each(rows)
        client = self._client()
        start = time.monotonic()
        problem = "not sent"
        for attempt in range(self.max_attempts):
            endpoint = self._pick()
            endpoint.in_flight += 1
            self.attempts += 1
            wait: float | None = None
            try:
                headers = {"Content-Type": "application/json"}
                if self._components is None:
                    headers["X-Rewardflow-Components"] = "1"  # the first reply also lists the components
                response = await client.post(endpoint.score_url, content=body, headers=headers)
            except httpx.TransportError as exc:
                problem = f"{endpoint.base}: {type(exc).__name__}: {exc}"
                endpoint.down_until = time.monotonic() + self.cooldown
                if any(e.down_until <= time.monotonic() for e in self.endpoints):
                    wait = 0.0  # fail over to a URL that is up, at once
            else:
                status = response.status_code
                if status == 200:
                    results, components = _parse(response, len(rows), endpoint.base)
                    if components is not None:
                        self._components = components
                    return results
                message = _error_text(response)
                problem = f"{endpoint.base}: HTTP {status}: {message}"
                if status not in _RETRY_STATUS and status < 500:
                    raise ServiceError(problem, status_code=status)
                retry_after = _retry_after(response)
                if retry_after is not None:
                    wait = retry_after + random.uniform(0, 0.1 * retry_after)
                    if status == 503:
                        endpoint.down_until = time.monotonic() + retry_after
            finally:
                endpoint.in_flight -= 1
            if wait is None:
                wait = random.uniform(0, min(self.max_backoff, self.backoff * 2**attempt))
            if time.monotonic() - start + wait > self.retry_deadline:
                break
            logger.debug("retrying a chunk of %d rows in %.2fs: %s", len(rows), wait, problem)
            await asyncio.sleep(wait)
        reason = f"service unavailable after {attempt + 1} attempts: {problem}"
        return [RewardResult(None, Status.ERROR, reason) for _ in rows]

    async def _send_each(self, rows: list[dict[str, Any]]) -> list[RewardResult]:
        """A chunk with a value JSON cannot carry: find the bad rows, send the rest."""
        out: list[RewardResult | None] = [None] * len(rows)
        good: list[int] = []
        for i, row in enumerate(rows):
            try:
                json.dumps(row)
                good.append(i)
            except (TypeError, ValueError) as exc:
                out[i] = RewardResult(None, Status.ERROR, f"row cannot be sent as JSON: {exc}")
        if good:
            for i, r in zip(good, await self._send([rows[i] for i in good]), strict=True):
                out[i] = r
        return out  # type: ignore[return-value]


def _base(url: str) -> str:
    url = url.rstrip("/")
    for suffix in ("/v1/score", "/get_reward", "/rm"):
        if url.endswith(suffix):
            return url[: -len(suffix)]
    return url


def _to_row(index: int, item: Sample | Mapping[str, Any]) -> dict[str, Any] | RewardResult:
    try:
        sample = item if isinstance(item, Sample) else Sample.from_row(item)
    except InputError as exc:
        return RewardResult(None, Status.ERROR, f"row {index}: {exc}")
    row: dict[str, Any] = dict(sample.row)
    row["prompt"] = sample.prompt
    row["completion"] = sample.completion
    if sample.prompt_ids is not None:
        row["prompt_ids"] = sample.prompt_ids
    if sample.completion_ids is not None:
        row["completion_ids"] = sample.completion_ids
    if sample.group is not None:
        row["group"] = sample.group
    return row


_STATUS = {s.value: s for s in Status}


def _components(items: list[dict[str, Any]]) -> tuple[RemoteComponent, ...]:
    return tuple(
        RemoteComponent(c["name"], float(c["weight"]), bool(c["gate"]), RemoteReward(Kind(c["kind"]))) for c in items
    )


def _parse(response: Any, expected: int, where: str) -> tuple[list[RewardResult], tuple[RemoteComponent, ...] | None]:
    """The results of a ``/v1/score`` reply, and the service's components when the reply lists them."""
    try:
        body = response.json()
        items = body["results"]
        listed = body.get("components")
        components = _components(listed) if listed else None
        results = [
            RewardResult(
                d["reward"],
                _STATUS[d["status"]],
                d.get("reason"),
                d.get("components") or {},
                float(d.get("latency_ms", 0.0)) / 1000.0,
                d.get("info") or {},
            )
            for d in items
        ]
    except (ValueError, KeyError, TypeError) as exc:
        raise ServiceError(f"{where}: reply is not a /v1/score result list ({exc})") from exc
    if len(results) != expected:
        raise ServiceError(f"{where}: {len(results)} results for {expected} samples")
    return results, components


def _error_text(response: Any) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        return str(body.get("error") or body.get("detail"))[:500]
    return str(body)[:200]


def _retry_after(response: Any) -> float | None:
    raw = response.headers.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None


def remote_engine_for(target: Any, **options: Any) -> RemoteEngine | None:
    """A :class:`RemoteEngine` when ``$REWARDFLOW_URL`` is set or ``target`` is a spec with ``url:``; else None.

    The hook the framework adapters call before building a local engine (``integrations/_shared.py``).
    ``options`` that only make sense locally (workers, timeout, ...) are ignored: the service's spec decides.
    """
    url: Any = os.environ.get(URL_ENV, "").strip() or None
    if url is None:
        from rewardflow.spec import Spec, load_spec

        if isinstance(target, Spec):
            url = target.url
        elif isinstance(target, (str, os.PathLike)) and str(target).endswith((".yaml", ".yml")):
            url = load_spec(target).url
    if not url:
        return None
    logger.info("scoring through the reward service at %s", url)
    return RemoteEngine(url)
