"""Rate limits and retry delays for judge requests.

Covered: the concurrency limit of an endpoint, fixed or adaptive (:class:`ConcurrencyLimit`), a token bucket for
requests-per-minute and tokens-per-minute limits (:class:`TokenBucket`), the retry delay schedule
(:func:`backoff_delay`, exponential with "equal jitter") and the parsing of a server's ``Retry-After`` /
``retry-after-ms`` headers (:func:`retry_after_seconds`).

Not covered: provider-side quota discovery (the ``x-ratelimit-*`` headers are not read; set ``rpm``/``tpm`` to
what your account allows).

The bucket holds one second's worth of its rate (at least one unit), so ``rpm=600`` lets 10 requests through at
once and then 10 per second; it never bursts a whole minute's budget, which providers that enforce the limit on
short windows would reject. A request larger than the bucket is let through when the bucket is full and leaves it
in debt, so nothing waits forever.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping

__all__ = ["ConcurrencyLimit", "TokenBucket", "backoff_delay", "retry_after_seconds"]

#: Outcomes a request can report to :meth:`ConcurrencyLimit.release`.
OK, OVERLOAD, OTHER = "ok", "overload", "other"


class ConcurrencyLimit:
    """At most ``limit`` requests in flight to one endpoint; with ``adaptive=True`` the limit follows the server (AIMD).

    Why adaptive: a judge server has a capacity nobody configured for us, and past it every request gets slower
    until attempts time out, while a server that does not abort abandoned requests (llama.cpp) keeps computing
    them. A fixed limit set too high then turns the whole batch into timeouts. The adaptive limit starts at
    ``maximum`` (a healthy server sees no change) and is

    * halved on an overload signal: a timed-out attempt, a 429, or a 502/503/504;
    * cut by 10 % when a reply is slow: its latency exceeds ``tolerance`` times the no-load latency (the lowest
      latency seen recently; it drifts up by 1 % of the gap per reply, so a server that got slower for good is
      relearned), or half the per-attempt ``deadline`` (a server loaded from the first request never shows its
      no-load latency, but a reply that used half its time budget warns of the timeouts to come);
    * raised by ``1 / limit`` per fast reply (one more slot per round of replies), up to ``maximum``.

    As in TCP, a request only moves the limit down if it started after the last cut, so one wave of timeouts
    counts once. Other failures (refused connections, 4xx) say nothing about load and leave the limit alone.
    The limit never goes below ``minimum``. Not thread-safe: one instance per event loop, like a semaphore.
    """

    def __init__(
        self,
        maximum: int,
        *,
        adaptive: bool = True,
        minimum: int = 1,
        tolerance: float = 2.0,
        deadline: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.maximum = maximum
        self.minimum = max(1, min(minimum, maximum))
        self.adaptive = adaptive
        self.tolerance = tolerance
        self.deadline = deadline
        self.limit = float(maximum)
        self.inflight = 0
        self.baseline: float | None = None  # no-load latency estimate (seconds)
        self.cuts = 0
        self.lowest = float(maximum)
        self._clock = clock
        self._last_cut = -float("inf")
        self._waiters: deque[asyncio.Future[None]] = deque()

    def __repr__(self) -> str:
        return f"ConcurrencyLimit(limit={self.limit:.1f}/{self.maximum}, inflight={self.inflight})"

    async def acquire(self) -> float:
        """Wait for a slot; return the clock time it was granted (pass it back to :meth:`release`)."""
        if self.inflight < int(self.limit) and not self._waiters:
            self.inflight += 1
            return self._clock()
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # granted, then cancelled: hand the slot on
                self.inflight -= 1
                self._wake()
            else:
                self._waiters.remove(waiter)
            raise
        return self._clock()

    def release(self, started: float, outcome: str = OK, latency: float | None = None) -> None:
        """Give the slot back and let the outcome (:data:`OK`, :data:`OVERLOAD`, :data:`OTHER`) move the limit."""
        self.inflight -= 1
        if self.adaptive:
            self._update(started, outcome, latency)
        self._wake()

    def _update(self, started: float, outcome: str, latency: float | None) -> None:
        if outcome == OVERLOAD:
            self._cut(started, 0.5)
        elif outcome == OK and latency is not None:
            base = self.baseline
            self.baseline = latency if base is None or latency < base else base + (latency - base) * 0.01
            slow = base is not None and latency > self.tolerance * base
            if slow or (self.deadline is not None and latency > self.deadline / 2):
                self._cut(started, 0.9)
            else:
                self.limit = min(float(self.maximum), self.limit + 1.0 / self.limit)

    def _cut(self, started: float, factor: float) -> None:
        if started <= self._last_cut:
            return  # sent before the last cut: the cut already answered this congestion
        self._last_cut = self._clock()
        self.limit = max(float(self.minimum), self.limit * factor)
        self.cuts += 1
        self.lowest = min(self.lowest, self.limit)

    def _wake(self) -> None:
        while self._waiters and self.inflight < int(self.limit):
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.inflight += 1
                waiter.set_result(None)


class TokenBucket:
    """An async token bucket refilled at ``per_minute / 60`` units per second.

    ``acquire(n)`` reserves ``n`` units at once (going into debt if needed) and then sleeps until the debt is
    repaid, so concurrent callers are served in arrival order without holding a lock while sleeping. ``adjust``
    corrects a reservation once the real amount is known (tokens-per-minute: the estimate made before the request
    versus the usage the server reported). The clock and sleep function are injectable for tests.
    """

    def __init__(
        self,
        per_minute: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if per_minute <= 0:
            raise ValueError(f"a rate limit must be positive, got {per_minute}")
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate)
        self._clock = clock
        self._sleep = sleep
        self._level = self.capacity
        self._stamp = clock()
        self._lock = threading.Lock()  # buckets may be shared by clients on several event loops

    def _refill(self) -> None:
        now = self._clock()
        self._level = min(self.capacity, self._level + (now - self._stamp) * self.rate)
        self._stamp = now

    def reserve(self, amount: float) -> float:
        """Take ``amount`` units now; return how long the caller must wait before using them (0 if none)."""
        with self._lock:
            self._refill()
            self._level -= amount
            return 0.0 if self._level >= 0 else -self._level / self.rate

    async def acquire(self, amount: float = 1.0) -> float:
        """Wait until ``amount`` units are available; return the time waited (seconds)."""
        wait = self.reserve(amount)
        if wait > 0:
            await self._sleep(wait)
        return wait

    def adjust(self, delta: float) -> None:
        """Give back (``delta > 0``) or take (``delta < 0``) units after the fact."""
        with self._lock:
            self._refill()
            self._level = min(self.capacity, self._level + delta)


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Delay before retry number ``attempt`` (0-based): uniform in ``[d/2, d]`` with ``d = min(cap, base * 2**n)``.

    "Equal jitter": the exponential floor keeps a struggling server from being hammered, the random half spreads
    a crowd of clients that failed together so they do not come back in lockstep.
    """
    d = min(cap, base * (2.0**attempt))
    r = rng.random() if rng is not None else random.random()
    return d / 2.0 + r * d / 2.0


def retry_after_seconds(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds a server asked us to wait, from ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP date).

    Fractional seconds are accepted (several inference servers send them). Unparseable or negative values are
    ignored (``None``) rather than trusted.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    ms = lowered.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000.0
        except ValueError:
            value = -1.0
        if value >= 0:
            return value
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        value = when.timestamp() - (time.time() if now is None else now)
        return max(0.0, value)
    return value if value >= 0 else None
