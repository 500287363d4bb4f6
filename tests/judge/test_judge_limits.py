"""Rate limiting and retry delays, with an injected clock: no sleeping, exact numbers."""

from __future__ import annotations

import asyncio
import random
from email.utils import formatdate

import pytest

from rewardflow.judge.limits import (
    OK,
    OTHER,
    OVERLOAD,
    ConcurrencyLimit,
    TokenBucket,
    backoff_delay,
    retry_after_seconds,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_bucket_lets_one_second_through_then_paces() -> None:
    clock = FakeClock()
    bucket = TokenBucket(600, clock=clock, sleep=clock.sleep)  # 10 per second, burst of 10
    waits = [bucket.reserve(1) for _ in range(13)]
    assert waits[:10] == [0.0] * 10
    assert waits[10:] == pytest.approx([0.1, 0.2, 0.3])  # reservations queue up in arrival order


def test_bucket_refills_with_time_and_caps_at_capacity() -> None:
    clock = FakeClock()
    bucket = TokenBucket(60, clock=clock, sleep=clock.sleep)  # 1 per second, burst of 1
    assert bucket.reserve(1) == 0.0
    clock.now += 100.0  # a long idle period does not bank 100 requests
    assert bucket.reserve(1) == 0.0
    assert bucket.reserve(1) == pytest.approx(1.0)


def test_bucket_acquire_sleeps_for_the_reserved_wait() -> None:
    clock = FakeClock()
    bucket = TokenBucket(120, clock=clock, sleep=clock.sleep)  # 2 per second

    async def run() -> list[float]:
        return [await bucket.acquire(1) for _ in range(4)]

    assert asyncio.run(run()) == pytest.approx([0.0, 0.0, 0.5, 0.5])
    assert clock.sleeps == pytest.approx([0.5, 0.5])


def test_bucket_oversize_request_goes_through_and_leaves_debt() -> None:
    """A request bigger than the bucket (tokens-per-minute) must not wait forever; it pays afterwards."""
    clock = FakeClock()
    bucket = TokenBucket(6000, clock=clock, sleep=clock.sleep)  # 100 tokens/s, capacity 100
    assert bucket.reserve(300) == pytest.approx(2.0)  # 200 tokens of debt at 100/s
    clock.now += 2.0
    assert bucket.reserve(50) == pytest.approx(0.5)


def test_bucket_adjust_refunds_an_overestimate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(6000, clock=clock, sleep=clock.sleep)
    assert bucket.reserve(100) == 0.0
    assert bucket.reserve(50) == pytest.approx(0.5)
    bucket.adjust(+80)  # the first request used 20 tokens, not the 100 estimated
    assert bucket.reserve(30) == 0.0


def test_bucket_rejects_a_non_positive_rate() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0)


def test_backoff_is_exponential_capped_and_jittered_within_bounds() -> None:
    rng = random.Random(0)
    for attempt, ceiling in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        delays = [backoff_delay(attempt, 0.5, 8.0, rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > ceiling / 4  # jitter actually spreads the retries


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "2"}, 2.0),
        ({"retry-after": "0.25"}, 0.25),  # fractional seconds, as several servers send
        ({"retry-after-ms": "150", "Retry-After": "9"}, 0.15),  # the millisecond header wins
        ({"Retry-After": "soon"}, None),  # unparseable: ignored, not trusted
        ({"Retry-After": "-3"}, None),  # negative: ignored
        ({}, None),
    ],
)
def test_retry_after_seconds(headers: dict[str, str], expected: float | None) -> None:
    assert retry_after_seconds(headers) == (pytest.approx(expected) if expected is not None else None)


def test_retry_after_http_date() -> None:
    now = 1_700_000_000.0
    assert retry_after_seconds({"Retry-After": formatdate(now + 30, usegmt=True)}, now=now) == pytest.approx(30)
    assert retry_after_seconds({"Retry-After": formatdate(now - 30, usegmt=True)}, now=now) == 0.0


# ---------------------------------------------------------------------------------------------------- concurrency


def test_fixed_limit_never_moves() -> None:
    limit = ConcurrencyLimit(8, adaptive=False)

    async def go() -> None:
        for _ in range(20):
            started = await limit.acquire()
            limit.release(started, OVERLOAD, 10.0)

    asyncio.run(go())
    assert limit.limit == 8 and limit.cuts == 0


def test_adaptive_limit_halves_once_per_wave_of_timeouts_and_recovers() -> None:
    clock = FakeClock()
    limit = ConcurrencyLimit(16, clock=clock)

    async def go() -> None:
        starts = [await limit.acquire() for _ in range(16)]  # one wave, all sent before any cut
        assert limit.inflight == 16
        clock.now = 1.0
        for started in starts:  # the whole wave times out: one congestion event, one cut
            limit.release(started, OVERLOAD, 1.0)
        assert limit.limit == 8 and limit.cuts == 1
        clock.now = 2.0
        started = await limit.acquire()  # sent after the cut: its timeout cuts again
        clock.now = 3.0
        limit.release(started, OVERLOAD, 1.0)
        assert limit.limit == 4 and limit.cuts == 2
        for _ in range(200):  # fast replies: +1/limit each, back up to the maximum and no further
            started = await limit.acquire()
            limit.release(started, OK, 0.1)
        assert limit.limit == 16

    asyncio.run(go())
    assert limit.lowest == 4


def test_adaptive_limit_cuts_on_latency_growth_but_not_on_other_failures() -> None:
    clock = FakeClock()
    limit = ConcurrencyLimit(10, clock=clock)

    async def go() -> None:
        started = await limit.acquire()
        limit.release(started, OK, 0.1)  # the no-load latency
        clock.now = 1.0
        started = await limit.acquire()
        limit.release(started, OTHER, 0.01)  # a refused connection or a 4xx says nothing about load
        assert limit.limit == 10
        clock.now = 2.0
        started = await limit.acquire()
        limit.release(started, OK, 0.35)  # 3.5x the no-load latency: the server is queueing
        assert limit.limit == pytest.approx(9.0)

    asyncio.run(go())


def test_waiters_get_slots_in_order_and_a_cancelled_waiter_gives_its_slot_back() -> None:
    limit = ConcurrencyLimit(1, adaptive=False)
    order: list[int] = []

    async def worker(i: int, hold: float) -> None:
        started = await limit.acquire()
        order.append(i)
        await asyncio.sleep(hold)
        limit.release(started)

    async def go() -> None:
        first = asyncio.create_task(worker(0, 0.05))
        await asyncio.sleep(0)
        cancelled = asyncio.create_task(worker(1, 0))
        rest = [asyncio.create_task(worker(i, 0)) for i in (2, 3)]
        await asyncio.sleep(0.01)
        cancelled.cancel()
        await asyncio.gather(first, *rest)
        assert limit.inflight == 0

    asyncio.run(asyncio.wait_for(go(), 10))
    assert order == [0, 2, 3]
