"""Rate limiting and retry delays, with an injected clock: no sleeping, exact numbers."""

from __future__ import annotations

import asyncio
import random
from email.utils import formatdate

import pytest

from rewardflow.judge.limits import TokenBucket, backoff_delay, retry_after_seconds


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
