"""Turn many concurrent one-sample calls into one engine call.

Frameworks that call a reward once per sample, concurrently, on one event loop (verl's reward loop gathers one
``run_single`` per sample) give a reward model or a batch reward one sample at a time. :class:`SampleBatcher`
collects the samples that arrive within a short window and scores them together, so the engine sees the batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from rewardflow.types import RewardResult, Sample

__all__ = ["SampleBatcher"]


class SampleBatcher:
    """Collects samples from concurrent coroutines on one event loop and scores them in one engine call.

    The first sample of a batch starts a timer of ``window_s``; every sample that arrives before it fires (or
    until ``max_batch`` samples) joins the batch. Each caller gets its own result.
    """

    def __init__(
        self, score: Callable[[list[Sample]], Awaitable[list[RewardResult]]], window_s: float, max_batch: int = 4096
    ) -> None:
        self._score = score
        self.window_s = window_s
        self.max_batch = max_batch
        self._pending: list[tuple[Sample, asyncio.Future[RewardResult]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.batch_sizes: list[int] = []  # for tests and logs: the size of every engine call
        self._running: set[asyncio.Task[None]] = set()  # the loop keeps only weak references to tasks

    async def score(self, sample: Sample) -> RewardResult:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (verl restarts none, tests do): start afresh
            self._loop, self._pending, self._timer = loop, [], None
        future: asyncio.Future[RewardResult] = loop.create_future()
        self._pending.append((sample, future))
        if len(self._pending) >= self.max_batch:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.window_s, self._flush)
        return await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending, []
        if batch:
            self.batch_sizes.append(len(batch))
            task = asyncio.ensure_future(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, batch: list[tuple[Sample, asyncio.Future[RewardResult]]]) -> None:
        try:
            results = await self._score([sample for sample, _ in batch])
        except Exception as exc:  # the engine itself failed (closed, misconfigured): every caller hears of it
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
