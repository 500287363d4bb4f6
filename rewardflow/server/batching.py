"""Cross-request batching: concurrent requests that use a model reward share one model call.

OpenRLHF and slime send one sample per request. Scored one by one, a reward model runs one forward pass (and one
onload/offload cycle) per completion. Here each ``batch``-kind component of the server's engine is replaced by a
:class:`Coalescer`: the first request to arrive opens a window of ``max_wait`` seconds (5 ms by default), the
requests that arrive meanwhile, and those that arrive while a model call is running, are merged into the next
call, up to ``max_samples`` samples. The model then packs the merged list into token-budget micro-batches
itself (:func:`rewardflow.models.batching.plan_micro_batches`), so the batch sent to the device is bounded by
tokens, not by the number of requests.

Isolation: if the merged call raises, each request's part is retried on its own, so one request's bad row (a
missing reference column) fails only that request. Model calls run one at a time in a thread (the model is one
device resource; :mod:`rewardflow.models.base` also serializes per device), never on the event loop.

Not covered: ``group`` rewards (their calls are per group of a request's samples, left as they are) and
per-sample rewards (process, inline, async), whose requests are merged into shared engine calls instead
(:mod:`rewardflow.server.merging`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rewardflow.engine import Component
from rewardflow.reward import Kind, Reward
from rewardflow.types import Sample

__all__ = ["Coalescer", "coalesce_components"]

logger = logging.getLogger(__name__)


@dataclass
class _Pending:
    samples: Sequence[Sample]
    future: asyncio.Future[Any]
    arrived: float = field(default_factory=time.perf_counter)


class Coalescer:
    """Merges concurrent calls of one batch reward; awaited by the engine as an async batch reward.

    Args:
        reward: the original ``batch`` reward (sync or async).
        max_wait: seconds the first call of a window waits for company.
        max_samples: most samples per merged call (a larger single request goes alone).
        on_batch: called with the size of every merged call (metrics).
    """

    def __init__(
        self,
        reward: Reward,
        *,
        max_wait: float = 0.005,
        max_samples: int = 256,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.reward = reward
        self.max_wait = max_wait
        self.max_samples = max_samples
        self.on_batch = on_batch
        self.calls = 0  # merged model calls made (for tests and the bench)
        self._pending: list[_Pending] = []
        self._worker: asyncio.Task[None] | None = None
        self._full = asyncio.Event()

    async def __call__(self, samples: Sequence[Sample]) -> list[Any]:
        """The engine's batch call: this request's samples in, their raw values out."""
        if not samples:
            return []
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(samples, future))
        if sum(len(p.samples) for p in self._pending) >= self.max_samples:
            self._full.set()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._pending:
            wait = self.max_wait - (time.perf_counter() - self._pending[0].arrived)
            if wait > 0 and not self._full.is_set():
                try:
                    await asyncio.wait_for(self._full.wait(), wait)
                except asyncio.TimeoutError:
                    pass
            taken, count = [], 0
            while self._pending and (not taken or count + len(self._pending[0].samples) <= self.max_samples):
                item = self._pending.pop(0)
                if item.future.done():  # the caller gave up (deadline); do not score it
                    continue
                taken.append(item)
                count += len(item.samples)
            self._full.clear()
            if sum(len(p.samples) for p in self._pending) >= self.max_samples:
                self._full.set()
            if taken:
                await self._run(taken, count)

    async def _run(self, taken: list[_Pending], count: int) -> None:
        self.calls += 1
        if self.on_batch is not None:
            self.on_batch(count)
        merged = [s for p in taken for s in p.samples]
        failure: Exception | None = None
        try:
            raw = await self._call(merged)
            if not hasattr(raw, "__len__") and hasattr(raw, "tolist"):
                raw = raw.tolist()
            if len(raw) != len(merged):  # let each request see the reward's own mistake
                raise ValueError(f"batch reward returned {len(raw)} values for {len(merged)} samples")
        except Exception as exc:
            failure = exc
        if failure is not None:
            if len(taken) == 1:
                self._settle_exception(taken[0], failure)
                return
            logger.debug("merged call failed (%s); retrying each request alone", failure)
            for item in taken:
                await self._run_alone(item)
            return
        start = 0
        for item in taken:
            if not item.future.done():
                item.future.set_result(list(raw[start : start + len(item.samples)]))
            start += len(item.samples)

    async def _run_alone(self, item: _Pending) -> None:
        try:
            raw = await self._call(list(item.samples))
        except Exception as exc:
            self._settle_exception(item, exc)
            return
        if not item.future.done():
            item.future.set_result(raw)

    async def _call(self, samples: list[Sample]) -> Any:
        rw = self.reward
        kwargs = rw.plan.batch_kwargs(samples)
        if rw.is_async:
            return await rw.fn(**kwargs)
        return await asyncio.to_thread(rw.fn, **kwargs)

    @staticmethod
    def _settle_exception(item: _Pending, exc: BaseException) -> None:
        if not item.future.done():
            item.future.set_exception(exc)


def coalesce_components(
    components: Sequence[Component],
    *,
    max_wait: float,
    max_samples: int,
    on_batch: Callable[[str, int], None] | None = None,
) -> tuple[list[Component], dict[str, Coalescer]]:
    """Replace every ``batch`` component by a coalesced async one; others are returned unchanged."""
    out: list[Component] = []
    coalescers: dict[str, Coalescer] = {}
    for comp in components:
        rw = comp.reward
        if rw.kind is not Kind.BATCH:
            out.append(comp)
            continue
        hook = (lambda n, name=comp.name: on_batch(name, n)) if on_batch is not None else None
        co = Coalescer(rw, max_wait=max_wait, max_samples=max_samples, on_batch=hook)
        coalescers[comp.name] = co

        async def merged(samples: Sequence[Sample], _co: Coalescer = co) -> list[Any]:
            return await _co(samples)

        # The coalescer owns the real limit (one model call at a time); the engine may let every request in.
        wrapped = Reward(fn=merged, name=rw.name, kind=Kind.BATCH, timeout=rw.timeout, concurrency=1_000_000)
        out.append(Component(comp.name, wrapped, comp.weight, comp.gate))
    return out, coalescers
