"""The service behind the routes: one engine per server process, admission, deadlines and the three dialects.

:class:`Service` owns the engine, hence the one global concurrency limit of the process (the worker pool, the
judges' limits, the model coalescers of :mod:`rewardflow.server.batching`, the request merger of
:mod:`rewardflow.server.merging`), and the admission state:

* not ready or shutting down: 503 + ``Retry-After``;
* more samples in one request than ``max_batch``: 413;
* ``queued + n > max_queue`` while something is queued: 429 + ``Retry-After`` (back-pressure);
* the request deadline (``min(request timeout, server's)``): samples not done by then come back ``timeout``
  and the engine cancels their work (for merged requests: once every request of the engine call gave up).

The dialect methods (:meth:`Service.native`, :meth:`Service.openrlhf`, :meth:`Service.slime`) turn a validated
body into the reply payload; the HTTP layers (:mod:`~rewardflow.server.guard` fast path and the FastAPI routes
in :mod:`~rewardflow.server.app`) only call them, so both answer byte for byte the same.

A sample that fails is a typed result in the native dialect. The OpenRLHF and slime dialects can only carry
numbers, so a failed sample fails the request with 424 (listing the failed samples), unless the server was
given ``failure_value``: then that value stands in and ``extra_logs["rewardflow/failed"]`` (OpenRLHF) or
``failed`` (slime dict) flags it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from enum import Enum
from typing import Any

from rewardflow.engine import Engine
from rewardflow.integrations.openrlhf import split_response
from rewardflow.reward import Kind
from rewardflow.server.config import ServerConfig
from rewardflow.server.merging import RequestMerger
from rewardflow.server.metrics import Metrics
from rewardflow.server.schemas import OpenRLHFRequest, ScoreRequest, SlimeRequest
from rewardflow.spec import Spec
from rewardflow.types import RewardResult, Sample, Status

__all__ = ["Rejected", "Service", "ServiceState"]

logger = logging.getLogger(__name__)


class ServiceState(str, Enum):
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"
    STOPPED = "stopped"


class Rejected(Exception):
    """A request refused (busy, not ready, too large, failed samples): HTTP status, one line, headers."""

    def __init__(
        self, status: int, message: str, headers: dict[str, str] | None = None, failed: list[Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}
        self.failed = failed

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": str(self)}
        if self.failed is not None:
            out["failed"] = self.failed
        return out


class Service:
    """The engine and admission state behind the routes; one per server process."""

    def __init__(self, spec: Spec, config: ServerConfig) -> None:
        self.spec = spec
        self.config = config
        self.state = ServiceState.STARTING
        self.engine: Engine | None = None
        self.coalescers: dict[str, Any] = {}
        self.merger: RequestMerger | None = None
        self.components = [r.component_name for r in spec.rewards]
        self.described: list[dict[str, Any]] = []  # GET /v1/components, filled when the rewards are resolved
        self.metrics = Metrics(self.components)
        self.queued = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Resolve the rewards, build the engine, start the reward workers and wait until they are up."""
        from rewardflow.server.batching import coalesce_components

        components = await asyncio.to_thread(self.spec.components)
        self.described = [
            {"name": c.name, "weight": c.weight, "gate": c.gate, "kind": c.reward.kind.value} for c in components
        ]
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
            executor=self.config.executor or spec.executor,
            ray_address=self.config.ray_address or spec.ray_address,
            ray_options=spec.ray_options(),
        )
        if self._mergeable(components):
            self.merger = RequestMerger(
                self.engine.ascore,
                max_samples=self.config.batch_max_samples,
                on_merge=lambda _requests, n: self.metrics.merged_samples.observe(n),
            )
        await asyncio.to_thread(self._start_workers)
        self.state = ServiceState.READY
        logger.info("rewardflow serve ready: %s", ", ".join(self.components))

    def _mergeable(self, components: Sequence[Any]) -> bool:
        """Whether concurrent requests may share an engine call (:mod:`rewardflow.server.merging`)."""
        if self.config.batch_wait_ms <= 0:
            return False  # cross-request batching off: one request, one engine call
        # Per-sample rewards only: a batch reward's calls are merged by its coalescer, which retries each request
        # alone when a merged call fails; a merged engine call would give it one request, failing all of them.
        # A group reward's groups (samples sharing a prompt) would mix requests.
        return all(c.reward.kind.per_sample for c in components)

    def _start_workers(self, wait: float = 120.0) -> None:
        engine = self.engine
        assert engine is not None
        process = [c.name for c in engine.components if c.reward.kind is Kind.PROCESS]
        if not process:
            return
        pool = engine._get_pool()  # the engine creates its executor lazily; the server wants it up before ready
        if not pool.start(wait):
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
        """Admit, score under the request deadline, account. Raises :class:`Rejected` for 413/429/503."""
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
                if self.merger is not None:
                    results = await self.merger.score(samples, deadline)
                else:
                    results = await asyncio.wait_for(self.engine.ascore(samples), deadline)
            except asyncio.TimeoutError:
                reason = f"request deadline of {deadline:g}s passed before this sample was scored"
                results = [RewardResult(None, Status.TIMEOUT, reason, latency=deadline) for _ in samples]
        finally:
            self.queued -= n
            self.metrics.queue_depth.set(self.queued)
        self.metrics.observe_results(results)
        return results

    # ------------------------------------------------------------------ dialects

    async def native(self, body: ScoreRequest, timeout: float | None, describe: bool = False) -> dict[str, Any]:
        """``POST /v1/score``: one typed result per sample, in order; with ``describe``, the components too."""
        samples = [
            Sample(s.prompt, s.completion, s.prompt_ids, s.completion_ids, s.group, s.model_extra or {})
            for s in body.samples
        ]
        results = await self.score(samples, body.timeout or timeout)
        out: dict[str, Any] = {"results": [r.to_dict() for r in results]}
        if describe:
            out["components"] = self.described
        return out

    async def openrlhf(self, body: OpenRLHFRequest, timeout: float | None) -> dict[str, Any]:
        """``POST /get_reward``: ``rewards``/``scores``/``extra_logs``; empty lists give empty lists."""
        n = len(body.query)
        prompts = body.prompts if body.prompts is not None else [""] * n
        extra = {k: v for k, v in (body.model_extra or {}).items() if isinstance(v, list) and len(v) == n}
        label = self.config.label_column
        samples = []
        for i in range(n):
            row = {k: v[i] for k, v in extra.items()}
            if body.labels is not None:
                row[label] = body.labels[i]
            samples.append(Sample(prompts[i], split_response(body.query[i], prompts[i]), row=row))
        results = await self.score(samples, timeout)
        values, failed = self._numbers(results)
        fill = self.config.failure_value if self.config.failure_value is not None else 0.0
        logs: dict[str, list[float]] = {}
        for name in self.components:
            logs[f"rewardflow/{name}"] = [_or(r.components.get(name), fill) for r in results]
        logs["rewardflow/failed"] = [1.0 if f else 0.0 for f in failed]
        return {"rewards": values, "scores": values, "extra_logs": logs}

    async def slime(self, body: SlimeRequest, as_dict: bool, timeout: float | None) -> Any:
        """``POST /rm``: the reward as a bare number, or a dict (``?format=dict``) for ``--reward-key``."""
        prompt = body.prompt if isinstance(body.prompt, str) else json.dumps(body.prompt or "", ensure_ascii=False)
        row = dict(body.model_extra or {})
        row[self.config.label_column] = body.label
        results = await self.score([Sample(prompt, body.response, row=row)], timeout)
        values, failed = self._numbers(results)
        if not as_dict:
            return values[0]
        out = results[0].to_dict()
        out.pop("info", None)
        out["reward"] = values[0]
        out["failed"] = failed[0]
        return out

    def _numbers(self, results: Sequence[RewardResult]) -> tuple[list[float], list[bool]]:
        """Values for the number-only dialects; a failure becomes ``failure_value`` or a 424 (never a silent 0)."""
        failure_value = self.config.failure_value
        failed = [not r.ok for r in results]
        if any(failed) and failure_value is None:
            bad = [
                {"index": i, "status": r.status.value, "reason": r.reason} for i, r in enumerate(results) if not r.ok
            ]
            first = bad[0]
            raise Rejected(
                424,
                f"{len(bad)} of {len(results)} samples failed (first: #{first['index']} {first['status']}: "
                f"{first['reason']}); start the server with --failure-value to send a stand-in value instead",
                failed=bad,
            )
        values = [failure_value if f else r.value for r, f in zip(results, failed, strict=True)]
        return values, failed  # type: ignore[return-value]


def _seconds(value: float) -> str:
    return str(max(1, round(value)))


def _or(value: float | None, fill: float) -> float:
    return fill if value is None else value
