"""The judge client: one shared async HTTP client per judge endpoint, with limits, retries, usage and a cache.

Covered: ``POST {base_url}/chat/completions`` against any OpenAI-compatible server (vLLM, SGLang, OpenAI,
llama.cpp, ...), awaited natively on the caller's event loop. Per endpoint, :class:`JudgeClient` enforces

* a concurrency limit (also the size of the HTTP connection pool), adaptive by default: AIMD on timeouts, 429/5xx
  overload answers and latency (:class:`~rewardflow.judge.limits.ConcurrencyLimit`),
* optional requests-per-minute and tokens-per-minute limits (:mod:`rewardflow.judge.limits`),
* a per-attempt timeout, and up to ``max_retries`` retries with exponential backoff and jitter on connection
  errors, HTTP 429 (honouring ``Retry-After``) and 5xx, and on nothing else: a 4xx, a garbage body, a reply cut
  off at ``max_tokens`` or an unparseable verdict is final. A timed-out attempt is retried only where the server
  is known to abort abandoned requests (:attr:`ClientConfig.retries_after_timeout`),
* usage accounting (calls, HTTP requests, retries, failures, tokens, latency, cost), per call in
  :class:`JudgeReply` and in total via :meth:`JudgeClient.usage`,
* an optional cache of identical requests (:mod:`rewardflow.judge.cache`) plus in-flight deduplication, so the
  identical completions of a GRPO group cost one judge call even when they are scored concurrently.

Structured output: a request may carry a JSON schema; it is sent as ``response_format`` (``json_schema``), which
vLLM, SGLang, llama.cpp and OpenAI enforce. With ``structured="auto"`` a 400 answer to such a request is retried
once without it; the model is remembered as not supporting it on this endpoint only when the server's message
names the feature (``response_format``, ``json_schema``, grammar, ...) *and* the retry without it succeeded. A
400 that says the prompt does not fit the context is a :class:`~rewardflow.errors.JudgeContextError` (prompt
token estimate and the server's limit in the message), neither retried nor taken as "no structured output"
(measured on llama.cpp: that mistake had switched structured output off for the whole endpoint).
``max_tokens``, when not given, is derived from the schema (:func:`~rewardflow.judge.parse.schema_max_tokens`); a
reply with ``finish_reason="length"`` is a :class:`~rewardflow.errors.JudgeTruncatedError`.

Transport: not ``openai.AsyncOpenAI`` but an HTTP client library used directly, aiohttp by default
(:mod:`rewardflow.judge.http`, where the choice is measured). The judge needs one endpoint and full control of the
request cycle (one deadline per attempt, our own retry policy, ``Retry-After``, a garbage body's text kept for the
error); ``AsyncOpenAI`` would have to be switched off on each point (``max_retries=0``, custom timeouts, raw
responses) and, being built on httpx, costs more CPU per request, which is what decides how close a client gets to
a judge server's capacity. ``http_backend="httpx"`` switches to httpx (``httpx.MockTransport`` via
``transport=``). Transport exceptions stop in :meth:`JudgeClient._attempt` and leave as
:class:`~rewardflow.errors.JudgeError` subclasses.

Event loops: connections, a semaphore and in-flight futures belong to the loop they are used on. The client keeps
one such state per running loop, created on first use under a lock. The engine's sync ``score()`` runs on one
long-lived loop, so in practice one HTTP client (connection pool) is created per endpoint for the life of the
engine (:attr:`JudgeClient.clients_created` counts them). Calling ``asyncio.run(...)`` per batch creates a new loop,
and so a new pool, each time: keep one loop. A loop's pool is closed by :meth:`JudgeClient.aclose` on
that loop (``Engine.close()`` calls it; the client stays usable), when the loop shuts down
(``loop.shutdown_asyncgens()``, called by ``asyncio.run``), or for good by :meth:`JudgeClient.close`.

Not covered: streaming, tool calls, the legacy ``/completions`` endpoint, Azure-style deployments.
"""

from __future__ import annotations

import asyncio
import copy
import enum
import json
import logging
import random
import re
import threading
import time
import weakref
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from rewardflow.errors import (
    ConfigError,
    EngineClosedError,
    JudgeConnectionError,
    JudgeContextError,
    JudgeError,
    JudgeResponseError,
    JudgeStatusError,
    JudgeTimeoutError,
    JudgeTruncatedError,
)
from rewardflow.judge import limits
from rewardflow.judge.cache import JudgeCache, request_key
from rewardflow.judge.config import ClientConfig
from rewardflow.judge.http import AiohttpBackend, Backend, HttpxBackend, import_library
from rewardflow.judge.limits import ConcurrencyLimit, TokenBucket, backoff_delay, retry_after_seconds
from rewardflow.judge.parse import schema_max_tokens
from rewardflow.judge.usage import UsageTotals

__all__ = ["JudgeClient", "JudgeReply", "JudgeRequest", "shared_client"]

logger = logging.getLogger(__name__)

Structured = Literal["auto"] | bool

#: ``max_tokens`` when it is not given and no schema bounds the reply.
DEFAULT_MAX_TOKENS = 1024
_OVERLOAD_STATUS = frozenset({429, 502, 503, 504})
# how servers word "the prompt does not fit": llama.cpp, vLLM, SGLang, OpenAI, TGI
_CONTEXT = re.compile(
    r"exceeds? the available context|context length|context window|context size|maximum context"
    r"|context_length_exceeded|exceed_context_size|too long for the model|prompt is too long|input is too long",
    re.I,
)
_STRUCTURED = re.compile(r"response_format|json_schema|json schema|structured output|guided|grammar|schema", re.I)


@dataclass(frozen=True)
class JudgeRequest:
    """One chat completion to ask the judge for. ``schema`` (a JSON schema) asks for structured output."""

    model: str
    messages: tuple[Mapping[str, str], ...]
    temperature: float = 0.0
    max_tokens: int | None = None  # None: derived from the schema when it is sent, else DEFAULT_MAX_TOKENS
    schema: Mapping[str, Any] | None = None
    schema_name: str = "judgement"
    structured: Structured = "auto"
    extra_body: Mapping[str, Any] = field(default_factory=dict)
    prices: tuple[float, float] | None = None  # USD per million prompt / completion tokens

    def body(self, structured: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model, "messages": [dict(m) for m in self.messages]}
        out["temperature"] = self.temperature
        out["max_tokens"] = self.completion_budget(structured)
        if structured and self.schema is not None:
            out["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": self.schema_name, "schema": dict(self.schema), "strict": True},
            }
        out.update(self.extra_body)
        return out

    def completion_budget(self, structured: bool) -> int:
        """``max_tokens`` as sent: the caller's, else the schema's bound (when it is sent), else 1024."""
        if self.max_tokens is not None:
            return self.max_tokens
        bound = schema_max_tokens(self.schema) if structured and self.schema is not None else None
        return bound if bound is not None else DEFAULT_MAX_TOKENS


@dataclass(frozen=True)
class JudgeReply:
    """The judge's reply text plus the accounting of the call that produced it."""

    text: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0  # HTTP requests sent for this call (0 when served from cache)
    retries: int = 0
    latency: float = 0.0  # seconds, including retries and waits for limits
    cached: bool = False
    structured: bool = False
    errors: tuple[str, ...] = ()
    cost: float | None = None

    def info(self) -> dict[str, Any]:
        """Per-call usage as it goes into ``RewardResult.info["judge"]``."""
        out: dict[str, Any] = {
            "model": self.model,
            "requests": self.requests,
            "retries": self.retries,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "latency": round(self.latency, 6),
            "cached": self.cached,
            "structured": self.structured,
        }
        if self.errors:
            out["errors"] = list(self.errors)
        if self.cost is not None:
            out["cost_usd"] = self.cost
        return out


class ClientState(str, enum.Enum):
    NEW = "new"  # no HTTP client open (none yet, or all released by aclose)
    OPEN = "open"
    CLOSED = "closed"


@dataclass
class _LoopState:
    """What belongs to one event loop: the HTTP backend, the concurrency semaphore, the in-flight calls."""

    backend: Backend
    limit: ConcurrencyLimit
    inflight: dict[str, asyncio.Future[JudgeReply]]
    closer: AsyncGenerator[None, None] | None = None  # see JudgeClient._close_at_shutdown


@dataclass
class _Failure:
    kind: str  # "timeout" | "connection" | "status" | "response" | "context" | "truncated"
    message: str
    retryable: bool
    status_code: int = 0
    retry_after: float | None = None
    raw: str = ""  # the truncated reply ("truncated")
    context: tuple[int | None, int | None] = (None, None)  # server's prompt tokens and limit ("context")
    usage: Mapping[str, Any] = field(default_factory=dict)  # tokens of a reply that came back anyway ("truncated")


class JudgeClient:
    """An OpenAI-compatible chat client for one judge endpoint; see the module docstring.

    Create it directly, or get the process-wide shared instance for a config with :func:`shared_client` (what the
    judge rewards do, so every reward pointing at one endpoint shares its limits). ``transport`` replaces the
    network (``httpx.MockTransport`` in tests); ``rng`` makes the retry jitter reproducible.
    """

    def __init__(
        self,
        config: ClientConfig | None = None,
        *,
        transport: Any = None,
        rng: random.Random | None = None,
        **options: Any,
    ) -> None:
        if config is None:
            config = ClientConfig(**options)
        elif options:
            raise ConfigError("give either a ClientConfig or keyword options, not both")
        self.config = config
        import_library("httpx" if transport is not None else config.http_backend)  # fail early, off the loop
        self._transport = transport
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = weakref.WeakKeyDictionary()
        self._rpm = TokenBucket(config.rpm) if config.rpm else None
        self._tpm = TokenBucket(config.tpm) if config.tpm else None
        self._cache = JudgeCache(config.cache_size, config.cache_path) if config.cache else None
        self._usage = UsageTotals()
        self._no_structured: set[str] = set()
        self.state = ClientState.NEW
        self.clients_created = 0  # HTTP clients built: one per event loop the client was used on

    def __repr__(self) -> str:
        return f"JudgeClient({self.config.url!r}, state={self.state.value}, clients_created={self.clients_created})"

    # ------------------------------------------------------------------ public API

    async def complete(self, request: JudgeRequest) -> JudgeReply:
        """Send one chat completion (or serve it from the cache); raise a :class:`JudgeError` subclass on failure.

        A raised error carries ``info = {"judge": {...}}`` with the usage of the failed attempts.
        """
        state = await self._state()
        structured = self._wants_structured(request)
        body = request.body(structured)
        start = time.perf_counter()
        self._usage.add(calls=1)
        if self._cache is None:
            return await self._send(state, request, body, structured, start)
        key = request_key(body)
        hit = await self._cache.aget(key)
        if hit is not None:
            self._usage.add(cache_hits=1)
            return self._cached(request, hit, structured, start)
        pending = state.inflight.get(key)
        leader = pending is None
        if pending is None:
            pending = asyncio.ensure_future(self._send(state, request, body, structured, start))
            state.inflight[key] = pending
            pending.add_done_callback(lambda f: self._settle(state, key, f))
        try:
            # shield: a caller cancelled by the engine's timeout must not cancel the request others wait on
            reply = await asyncio.shield(pending)
        except JudgeError as exc:
            if leader:
                raise
            raise _as_follower(exc, time.perf_counter() - start) from exc.__cause__
        if leader:
            if self._cache.path is not None:
                await self._persist(key, reply)
            return reply
        self._usage.add(cache_hits=1)
        return self._cached(request, _cache_value(reply), structured, start)

    def forget(self, request: JudgeRequest) -> None:
        """Drop a request's cached reply (a reward found it unreadable; a later identical call asks again)."""
        if self._cache is not None:
            self._cache.discard(request_key(request.body(self._wants_structured(request))))

    def usage(self) -> dict[str, Any]:
        """Totals since creation: calls, requests, retries, failures, cache hits, tokens, latency, cost, errors."""
        out = self._usage.snapshot()
        out["clients_created"] = self.clients_created
        return out

    async def aclose(self) -> None:
        """Close the HTTP client of the running loop; the client stays usable (``Engine.close()`` calls this).

        A later call, on this loop or another, opens a new connection pool; :meth:`close` closes for good.
        """
        loop = asyncio.get_running_loop()
        with self._lock:
            state = self._states.pop(loop, None)
            if not self._states and self.state is ClientState.OPEN:
                self.state = ClientState.NEW
        if state is not None:
            await state.backend.aclose()

    def close(self) -> None:
        """Close every HTTP client this object created, on whichever loop owns it. Idempotent; never raises."""
        with self._lock:
            states = list(self._states.items())
            self._states.clear()
            self.state = ClientState.CLOSED
        for loop, state in states:
            try:
                if loop.is_closed():
                    continue
                if loop.is_running():
                    if _running_loop() is loop:
                        loop.create_task(state.backend.aclose())
                    else:
                        asyncio.run_coroutine_threadsafe(state.backend.aclose(), loop).result(timeout=5)
                else:
                    loop.run_until_complete(state.backend.aclose())
            except Exception:  # closing must not raise; sockets die with their loop
                logger.debug("closing a judge HTTP client failed", exc_info=True)
        if self._cache is not None:
            self._cache.close()

    # ------------------------------------------------------------------ internals

    async def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is not None:
            return state
        with self._lock:
            if self.state is ClientState.CLOSED:
                raise EngineClosedError(f"the judge client for {self.config.url} is closed")
            state = self._states.get(loop)
            if state is not None:
                return state
            limit = ConcurrencyLimit(
                self.config.concurrency, adaptive=self.config.adaptive, deadline=self.config.timeout
            )
            state = _LoopState(self._make_backend(), limit, {})
            self._states[loop] = state
            self.clients_created += 1
            self.state = ClientState.OPEN
        state.closer = self._close_at_shutdown(state)
        await state.closer.__anext__()  # registers it with the loop; returns at once
        return state

    async def _close_at_shutdown(self, state: _LoopState) -> AsyncGenerator[None, None]:
        """Close this loop's HTTP client when the loop shuts down, even if nobody calls :meth:`close`.

        A started async generator is finalised by ``loop.shutdown_asyncgens()``, which ``asyncio.run`` and the
        engine's ``close()`` call before closing their loop: the ``finally`` closes the connections on their own
        loop, so a judge used through ``with Engine(...)`` or ``asyncio.run(...)`` leaves no open session behind.
        """
        try:
            yield
        finally:
            loop = asyncio.get_running_loop()
            with self._lock:
                if self._states.get(loop) is state:
                    del self._states[loop]
            await state.backend.aclose()

    def _make_backend(self) -> Backend:
        cfg = self.config
        headers = {"Content-Type": "application/json", **dict(cfg.headers)}
        if cfg.api_key:
            headers["Authorization"] = f"Bearer {cfg.api_key}"
        trust_env = not cfg.loopback  # never send loopback traffic through a proxy from the environment
        if cfg.http_backend == "httpx" or self._transport is not None:
            return HttpxBackend(
                cfg.url,
                headers,
                connections=cfg.concurrency,
                timeout=cfg.timeout,
                trust_env=trust_env,
                transport=self._transport,
            )
        return AiohttpBackend(cfg.url, headers, connections=cfg.concurrency, trust_env=trust_env)

    def _wants_structured(self, request: JudgeRequest) -> bool:
        if request.schema is None or request.structured is False:
            return False
        return request.structured is True or request.model not in self._no_structured

    def _cached(self, request: JudgeRequest, value: Mapping[str, Any], structured: bool, start: float) -> JudgeReply:
        latency = time.perf_counter() - start
        self._usage.add(latency=latency)
        return JudgeReply(
            text=value["text"], model=request.model, latency=latency, cached=True, structured=structured, cost=None
        )

    async def _persist(self, key: str, reply: JudgeReply) -> None:
        """Write a reply to the disk cache before its caller gets it (a task left behind dies with its loop)."""
        try:
            await self._cache.aput(key, _cache_value(reply))  # type: ignore[union-attr]
        except Exception as exc:  # a lost cache entry costs one more judge call later, never a judgment
            logger.warning("judge cache write failed: %s", exc)

    def _settle(self, state: _LoopState, key: str, future: asyncio.Future[JudgeReply]) -> None:
        state.inflight.pop(key, None)
        if future.cancelled():
            return
        exc = future.exception()  # marks it retrieved even when every caller has gone
        if exc is None and self._cache is not None:
            value = _cache_value(future.result())
            self._cache.put(key, value)  # at once, so the next identical call finds it in memory

    async def _send(
        self, state: _LoopState, request: JudgeRequest, body: dict[str, Any], structured: bool, start: float
    ) -> JudgeReply:
        cfg = self.config
        errors: list[str] = []
        requests = retries = 0
        fell_back = False
        says_unsupported = False  # the 400 that made us drop the schema named structured output
        estimate = _estimate_tokens(body)
        payload = _encode(body)
        while True:
            started = await state.limit.acquire()
            signal = limits.OTHER
            sent = time.perf_counter()
            try:
                # rate limits are taken inside the slot, so requests held back by the limit cannot burst later
                waited = 0.0
                if self._rpm is not None:
                    waited += await self._rpm.acquire(1.0)
                if self._tpm is not None:
                    waited += await self._tpm.acquire(estimate)
                if waited:
                    self._usage.add(limit_wait=waited)
                requests += 1
                self._usage.add(requests=1)
                self._usage.enter()
                sent = time.perf_counter()
                try:
                    outcome = await self._attempt(state.backend, payload)
                finally:
                    self._usage.leave()
                signal = _signal(outcome)
            finally:
                state.limit.release(started, signal, time.perf_counter() - sent)
            if isinstance(outcome, dict):
                if fell_back and says_unsupported:
                    logger.info("judge %s: %s does not take structured output; sending none", cfg.url, request.model)
                    self._no_structured.add(request.model)
                return self._finish(request, outcome, structured, requests, retries, errors, start, estimate)
            errors.append(outcome.message if len(outcome.message) <= 200 else outcome.message[:197] + "...")
            self._usage.error(outcome.kind if outcome.kind != "status" else str(outcome.status_code))
            if (
                outcome.kind == "status"
                and outcome.status_code == 400
                and structured
                and request.structured == "auto"
                and not fell_back
            ):
                # the server may not support response_format: try once without; remembered only if that works
                # and the server said so (a 400 for another reason must not switch it off for the endpoint)
                says_unsupported = bool(_STRUCTURED.search(outcome.message))
                body = {k: v for k, v in body.items() if k != "response_format"}
                body["max_tokens"] = request.completion_budget(False)
                payload = _encode(body)
                structured, fell_back = False, True
                continue
            retryable = outcome.retryable and (outcome.kind != "timeout" or cfg.retries_after_timeout)
            if not retryable or retries >= cfg.max_retries:
                raise self._failed(request, outcome, requests, retries, errors, start, structured, estimate)
            delay = backoff_delay(retries, cfg.backoff, cfg.backoff_max, self._rng)
            if outcome.retry_after is not None:
                delay = min(outcome.retry_after, cfg.max_retry_after)
            retries += 1
            self._usage.add(retries=1)
            logger.debug("judge %s: %s; retry %d in %.3fs", cfg.url, outcome.message, retries, delay)
            await asyncio.sleep(delay)

    async def _attempt(self, backend: Backend, payload: bytes) -> dict[str, Any] | _Failure:
        """One HTTP request. Transport exceptions stop here: the result is the parsed reply or a :class:`_Failure`."""
        timeout = self.config.timeout
        try:
            status, headers, data = await asyncio.wait_for(backend.post(payload), timeout)
        except (asyncio.TimeoutError, TimeoutError):  # distinct classes before Python 3.11
            return _Failure("timeout", f"no reply within {timeout:g}s", retryable=True)
        except OSError as exc:  # ConnectionError, DNS and TLS failures
            return _Failure("connection", f"{type(exc).__name__}: {exc}".rstrip(": "), retryable=True)
        if status != 200:
            text = data.decode("utf-8", "replace")
            excerpt = _excerpt(text)
            retryable = status == 429 or status >= 500
            retry_after = retry_after_seconds(headers) if retryable else None
            hint = " (base_url should be the API root, e.g. http://host:8000/v1)" if status == 404 else ""
            message = f"HTTP {status}{hint}: {excerpt}" if excerpt else f"HTTP {status}{hint}"
            if status in (400, 413) and _CONTEXT.search(text):
                return _Failure("context", message, False, status_code=status, context=_context_numbers(text))
            return _Failure("status", message, retryable, status_code=status, retry_after=retry_after)
        try:
            reply = json.loads(data)
            choice = reply["choices"][0]
            content = choice["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            text = _excerpt(data.decode("utf-8", "replace"))
            return _Failure("response", f"not a chat completion: {text!r}", retryable=False)
        if not isinstance(content, str):
            return _Failure("response", f"reply content is {type(content).__name__}, not text", retryable=False)
        usage = reply.get("usage") if isinstance(reply.get("usage"), dict) else {}
        out = {
            "text": content,
            "prompt_tokens": _int(usage.get("prompt_tokens")),
            "completion_tokens": _int(usage.get("completion_tokens")),
        }
        if isinstance(choice, dict) and choice.get("finish_reason") == "length":
            message = f"reply cut off at max_tokens (finish_reason=length): {_excerpt(content, 120)!r}"
            return _Failure("truncated", message, retryable=False, raw=content, context=(None, None), usage=out)
        return out

    def _finish(
        self,
        request: JudgeRequest,
        data: dict[str, Any],
        structured: bool,
        requests: int,
        retries: int,
        errors: list[str],
        start: float,
        estimate: float,
    ) -> JudgeReply:
        prompt_tokens, completion_tokens = data["prompt_tokens"], data["completion_tokens"]
        if self._tpm is not None and (prompt_tokens or completion_tokens):
            self._tpm.adjust(estimate - prompt_tokens - completion_tokens)
        cost = _cost(request, prompt_tokens, completion_tokens)
        latency = time.perf_counter() - start
        self._usage.add(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, latency=latency)
        if cost is not None:
            self._usage.add(cost=cost)
        return JudgeReply(
            text=data["text"],
            model=request.model,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            requests=requests,
            retries=retries,
            latency=latency,
            structured=structured,
            errors=tuple(errors),
            cost=cost,
        )

    def _failed(
        self,
        request: JudgeRequest,
        outcome: _Failure,
        requests: int,
        retries: int,
        errors: list[str],
        start: float,
        structured: bool,
        estimate: float,
    ) -> JudgeError:
        latency = time.perf_counter() - start
        prompt_tokens = _int(outcome.usage.get("prompt_tokens"))
        completion_tokens = _int(outcome.usage.get("completion_tokens"))
        self._usage.add(failures=1, latency=latency, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        info = JudgeReply(
            "",
            request.model,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            requests=requests,
            retries=retries,
            latency=latency,
            errors=tuple(errors),
        )
        judge_info = {**info.info(), "structured": structured, "failed": True}
        tried = f"after {requests} request{'s' if requests != 1 else ''}"
        message = f"judge {self.config.url} failed {tried}: {outcome.message}"
        if len(set(errors)) > 1:
            message += " (earlier: " + "; ".join(errors[:-1])[:300] + ")"
        payload = {"judge": judge_info}
        if outcome.kind == "timeout":
            return JudgeTimeoutError(message, info=payload)
        if outcome.kind == "connection":
            return JudgeConnectionError(message, info=payload)
        if outcome.kind == "context":
            server_prompt, limit = outcome.context
            prompt_estimate = int(estimate - request.completion_budget(structured))
            counted = f"{server_prompt} (server's count)" if server_prompt else f"~{prompt_estimate} (estimate)"
            where = f"the server's limit is {limit}" if limit else "the server did not say its limit"
            budget = request.completion_budget(structured)
            message = (
                f"judge {self.config.url}: the prompt does not fit the judge's context: {counted} prompt tokens "
                f"+ max_tokens {budget}; {where} (llama.cpp: context per slot = -c / -np). {outcome.message}"
            )
            return JudgeContextError(
                message,
                status_code=outcome.status_code,
                prompt_tokens=server_prompt or prompt_estimate,
                context_limit=limit,
                info=payload,
            )
        if outcome.kind == "status":
            return JudgeStatusError(message, status_code=outcome.status_code, info=payload)
        if outcome.kind == "truncated":
            judge_info["raw"] = outcome.raw[:2000]
            return JudgeTruncatedError(message, raw=outcome.raw, info=payload)
        return JudgeResponseError(message, info=payload)


def _signal(outcome: dict[str, Any] | _Failure) -> str:
    """What an attempt says about the server's load, for the adaptive concurrency limit."""
    if isinstance(outcome, dict) or outcome.kind == "truncated":
        return limits.OK
    if outcome.kind == "timeout" or (outcome.kind == "status" and outcome.status_code in _OVERLOAD_STATUS):
        return limits.OVERLOAD
    return limits.OTHER


def _context_numbers(text: str) -> tuple[int | None, int | None]:
    """The server's prompt token count and context limit from an overflow error, where it gives them.

    llama.cpp sends ``n_prompt_tokens`` and ``n_ctx`` in its JSON error; vLLM words it ("maximum context length is
    2048 tokens ... (3000 in the messages"), SGLang too ("input (3000 tokens) is longer than the model's context
    length (2048 tokens)").
    """
    try:
        error = json.loads(text).get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, Mapping):
        prompt, limit = error.get("n_prompt_tokens"), error.get("n_ctx")
        if isinstance(limit, int) and not isinstance(limit, bool):
            return (prompt if isinstance(prompt, int) and not isinstance(prompt, bool) else None), limit
    match = re.search(r"maximum context length is (\d+) tokens", text, re.I)
    if match:
        prompt = re.search(r"\((\d+) in the messages", text)
        return (int(prompt.group(1)) if prompt else None), int(match.group(1))
    match = re.search(r"\((\d+) tokens\) is longer than the model's context length \((\d+) tokens\)", text, re.I)
    if match:
        return int(match.group(1)), int(match.group(2))
    return None, None


def _as_follower(exc: JudgeError, latency: float) -> JudgeError:
    """The leader's failure, re-raised for a caller that waited on the same request (no requests of its own)."""
    twin = copy.copy(exc)
    inner = dict(exc.info.get("judge", {}))
    inner.update(requests=0, retries=0, latency=round(latency, 6), cached=True)
    twin.info = {"judge": inner}
    return twin


def _cache_value(reply: JudgeReply) -> dict[str, Any]:
    return {"text": reply.text, "prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens}


def _cost(request: JudgeRequest, prompt_tokens: int, completion_tokens: int) -> float | None:
    if request.prices is None:
        return None
    prompt_price, completion_price = request.prices
    return (prompt_tokens * prompt_price + completion_tokens * completion_price) / 1e6


def _estimate_tokens(body: Mapping[str, Any]) -> float:
    """Rough token count of a request (4 characters per token) plus its completion budget, for the tpm bucket."""
    chars = sum(len(str(m.get("content", ""))) for m in body.get("messages", ()))
    return chars / 4.0 + float(body.get("max_tokens") or 256)


def _encode(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _excerpt(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


_SHARED: weakref.WeakValueDictionary[ClientConfig, JudgeClient] = weakref.WeakValueDictionary()
_SHARED_LOCK = threading.Lock()


def shared_client(config: ClientConfig) -> JudgeClient:
    """The one :class:`JudgeClient` for ``config`` in this process, created on first request.

    Held weakly: it lives as long as some reward holds it, so a closed engine's judge goes away with it.
    """
    with _SHARED_LOCK:
        client = _SHARED.get(config)
        if client is None or client.state is ClientState.CLOSED:
            client = JudgeClient(config)
            _SHARED[config] = client
        return client
