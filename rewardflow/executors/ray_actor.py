"""The code that runs inside a rewardflow Ray actor (the Ray counterpart of :mod:`rewardflow.executors.worker`).

One actor scores one chunk at a time (``max_concurrency=1``, so every caller of the pool shares the same limit:
one call per actor). Inside :meth:`RewardActor.run` the chunk runs on a helper thread while the method's own
thread watches the clock: the deadline of each call is ``its start + timeout``, both read on the actor's
monotonic clock, so queueing, transfer and actor start-up never count. When a call passes its deadline the
method returns at once with the results so far and the index of the hung call; the driver then ``ray.kill`` s
the actor (a thread cannot be killed; the process can) and re-queues the rest of the chunk.

Limit: the watch needs the GIL. A reward stuck in C code that holds it (a catastrophic regular expression) blocks
the watcher too; the driver's backstop (the chunk's whole time budget plus a grace period) catches that case.

Each result carries the id of the node that computed it in ``info["ray_node_id"]``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from rewardflow.reward import Reward, invoke
from rewardflow.types import RewardResult, Sample

__all__ = ["NODE_KEY", "RewardActor"]

#: Key of the node id in each result's ``info``.
NODE_KEY = "ray_node_id"


class _Progress:
    """What the scoring thread is doing: ``current`` is ``(index, start)``, written as one tuple (no lock)."""

    __slots__ = ("current", "results")

    def __init__(self) -> None:
        self.current: tuple[int, float] = (0, time.monotonic())
        self.results: list[RewardResult] = []


def _score(rw: Reward, items: Sequence[Sample], progress: _Progress, node: str) -> list[RewardResult]:
    now = time.monotonic
    out = progress.results
    for index, sample in enumerate(items):
        progress.current = (index, now())
        r = invoke(rw, sample)
        out.append(RewardResult(r.value, r.status, r.reason, r.components, r.latency, {**r.info, NODE_KEY: node}))
    return out


class RewardActor:
    """Holds the rewards (unpickled once, when the actor starts) and scores chunks of samples."""

    def __init__(self, rewards: Mapping[str, Reward]) -> None:
        import ray

        self._rewards = dict(rewards)
        self._node = ray.get_runtime_context().get_node_id()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="rewardflow-call")
        self._hung = False

    def ready(self) -> str:
        """The id of the node this actor runs on (answered once the rewards are loaded)."""
        return self._node

    def run(
        self, reward_id: str, items: Sequence[Sample], timeout: float | None
    ) -> tuple[list[RewardResult], int | None, float]:
        """Score ``items``: ``(results, None, 0)``, or ``(results so far, hung index, its elapsed s)``."""
        if self._hung:  # a hung call still occupies the scoring thread: refuse rather than queue behind it
            return [], -1, 0.0
        progress = _Progress()
        future = self._thread.submit(_score, self._rewards[reward_id], items, progress, self._node)
        if timeout is None:
            return future.result(), None, 0.0
        while True:
            index, start = progress.current
            remaining = start + timeout - time.monotonic()
            try:
                return future.result(timeout=max(remaining, 0.0)), None, 0.0
            except FutureTimeout:
                if progress.current != (index, start) or len(progress.results) > index:
                    continue  # that call finished in time; watch the next one
                self._hung = True
                return list(progress.results[:index]), index, time.monotonic() - start
