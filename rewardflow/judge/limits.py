"""Rate limits and retry delays for judge requests.

Covered: a token bucket for requests-per-minute and tokens-per-minute limits (:class:`TokenBucket`), the retry
delay schedule (:func:`backoff_delay`, exponential with "equal jitter") and the parsing of a server's
``Retry-After`` / ``retry-after-ms`` headers (:func:`retry_after_seconds`).

Not covered: concurrency (an ``asyncio.Semaphore`` in the client does that) and provider-side quota discovery
(the ``x-ratelimit-*`` headers are not read; set ``rpm``/``tpm`` to what your account allows).

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
from collections.abc import Awaitable, Callable, Mapping

__all__ = ["TokenBucket", "backoff_delay", "retry_after_seconds"]


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
