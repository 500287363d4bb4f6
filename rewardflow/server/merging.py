"""Request merging: concurrent requests share one engine call, so one-sample requests do not cost one call each.

OpenRLHF and slime send one sample per request. Scored one request at a time, every sample pays for a whole
engine call: a submission to the worker pool (a lock, a future, a wake-up of the pool's thread) and a wake-up
of the event loop when its result comes back, several times the cost of a cheap rule reward itself.
:class:`RequestMerger` collects the requests that reach the service in one turn of the event loop (no timer:
it adds no waiting) and scores them with one :meth:`Engine.ascore <rewardflow.engine.Engine.ascore>` call, up to
``max_samples`` samples per call; each request then gets its own slice of the results, in order.

Only for engines whose rewards are all per sample (``process``, ``inline``, ``async``): a ``group`` reward's
groups would mix requests, and ``batch`` rewards (models) have their own cross-request batching, which keeps a
failing request from failing the others merged with it (:mod:`rewardflow.server.batching`). ``--batch-wait-ms
0`` turns both off: one request, one engine call.

Deadlines and isolation:

* each request waits for its own slice under its own deadline; when it passes, that request gets ``timeout``
  results and the merged call goes on for the others; when every request of a merged call has given up, the
  call is cancelled, which stops the engine's work on it (as a lone request's deadline does);
* the engine never raises for a bad sample or a failing reward (those are typed results, per sample); if the
  merged call raises anyway (the engine closing under it), every request of that call gets the exception.

The price: a request's reply waits for the slowest sample of its merged call (at most ``max_samples``
samples, each bounded by its reward's timeout), where alone it would wait only for its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from rewardflow.types import RewardResult, Sample

__all__ = ["ALONE_FROM", "RequestMerger"]

ScoreFn = Callable[[list[Sample]], Awaitable[list[RewardResult]]]

#: Requests of at least this many samples are scored alone: their engine call's fixed cost is already spread
#: over their samples, and merging them would make a few clients with big batches wait for one another.
ALONE_FROM = 16


class RequestMerger:
    """Merges the samples of concurrent requests into one engine call per event-loop turn.

    Args:
        score: the engine call (``engine.ascore``): samples in, one result per sample out, in order.
        max_samples: most samples in one merged call.
        alone_from: a request of at least this many samples is scored alone, at once (see :data:`ALONE_FROM`).
        on_merge: called with the number of requests and of samples of every merged call (metrics, tests).
    """

    def __init__(
        self,
        score: ScoreFn,
        *,
        max_samples: int = 256,
        alone_from: int = ALONE_FROM,
        on_merge: Callable[[int, int], None] | None = None,
    ) -> None:
        self._score = score
        self.max_samples = max_samples
        self.alone_from = min(alone_from, max_samples)
        self.on_merge = on_merge
        self.calls = 0  # merged engine calls made (tests, bench)
        self._waiting: list[tuple[Sequence[Sample], asyncio.Future[list[RewardResult]]]] = []
        self._count = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def score(self, samples: Sequence[Sample], deadline: float | None) -> list[RewardResult]:
        """This request's results, in order; raises :class:`asyncio.TimeoutError` when ``deadline`` passes."""
        if len(samples) >= self.alone_from:
            return await asyncio.wait_for(self._score(list(samples)), deadline)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[RewardResult]] = loop.create_future()
        if self._count + len(samples) > self.max_samples:
            self._flush()
        self._waiting.append((samples, future))
        self._count += len(samples)
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await asyncio.wait_for(future, deadline)

    def _flush(self) -> None:
        """Start one engine call for everything waiting (run at the end of the loop turn, or when full)."""
        waiting = [(s, f) for s, f in self._waiting if not f.done()]
        self._waiting, self._count, self._scheduled = [], 0, False
        if not waiting:
            return
        task = asyncio.get_running_loop().create_task(self._run(waiting))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        live = [len(waiting)]

        def gave_up(future: asyncio.Future[Any]) -> None:
            if future.cancelled():  # that request's deadline passed (or its client left)
                live[0] -= 1
                if live[0] == 0:
                    task.cancel()  # nobody waits for this call any more: stop the engine's work on it

        for _, future in waiting:
            future.add_done_callback(gave_up)

    async def _run(self, waiting: list[tuple[Sequence[Sample], asyncio.Future[list[RewardResult]]]]) -> None:
        merged = [s for samples, _ in waiting for s in samples]
        self.calls += 1
        if self.on_merge is not None:
            self.on_merge(len(waiting), len(merged))
        try:
            results = await self._score(merged)
            if len(results) != len(merged):  # the engine's contract; never hand a request someone else's row
                raise RuntimeError(f"engine returned {len(results)} results for {len(merged)} samples")
        except Exception as exc:
            for _, future in waiting:
                if not future.done():
                    future.set_exception(exc)
            return
        start = 0
        for samples, future in waiting:
            end = start + len(samples)
            if not future.done():
                future.set_result(results[start:end])
            start = end
