"""RequestMerger on its own (no server): slicing, splitting, failures, deadlines and cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from rewardflow.server.merging import RequestMerger
from rewardflow.types import RewardResult, Sample, Status


def _samples(*ids: int) -> list[Sample]:
    return [Sample("p", str(i)) for i in ids]


class FakeEngine:
    """``ascore`` returning each sample's completion as its value, after ``delay`` seconds; records call sizes."""

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.delay = delay
        self.fail = fail
        self.sizes: list[int] = []
        self.cancelled = 0

    async def ascore(self, samples: Sequence[Sample]) -> list[RewardResult]:
        self.sizes.append(len(samples))
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if self.fail:
            raise RuntimeError("engine closed")
        return [RewardResult(float(s.completion), Status.OK) for s in samples]


def test_concurrent_requests_get_their_own_slices_in_order() -> None:
    engine = FakeEngine()
    merger = RequestMerger(engine.ascore, max_samples=1000)

    async def main() -> list[list[RewardResult]]:
        return list(await asyncio.gather(*(merger.score(_samples(*range(k, k + k % 3 + 1)), None) for k in range(50))))

    out = asyncio.run(main())
    assert [[r.value for r in rs] for rs in out] == [[float(i) for i in range(k, k + k % 3 + 1)] for k in range(50)]
    assert engine.sizes == [sum(k % 3 + 1 for k in range(50))]  # one loop turn: one engine call


def test_max_samples_splits_calls_and_a_large_request_goes_alone() -> None:
    engine = FakeEngine()
    merger = RequestMerger(engine.ascore, max_samples=10)

    async def main() -> list[list[RewardResult]]:
        small = [merger.score(_samples(i, i), None) for i in range(12)]  # 24 samples
        large = merger.score(_samples(*range(100, 125)), None)
        return list(await asyncio.gather(*small, large))

    out = asyncio.run(main())
    assert [[r.value for r in rs] for rs in out[:12]] == [[float(i), float(i)] for i in range(12)]
    assert [r.value for r in out[12]] == [float(i) for i in range(100, 125)]
    assert sorted(engine.sizes) == [4, 10, 10, 25]
    assert merger.calls == 3  # the large request is not a merged call


def test_an_engine_exception_reaches_every_request_of_that_call() -> None:
    merger = RequestMerger(FakeEngine(fail=True).ascore)

    async def main() -> list[object]:
        return list(await asyncio.gather(*(merger.score(_samples(i), None) for i in range(3)), return_exceptions=True))

    assert [str(e) for e in asyncio.run(main())] == ["engine closed"] * 3


def test_each_request_has_its_own_deadline_and_a_call_nobody_waits_for_is_cancelled() -> None:
    engine = FakeEngine(delay=0.3)
    merger = RequestMerger(engine.ascore)

    async def main() -> tuple[object, object]:
        short = merger.score(_samples(1), 0.05)
        long = merger.score(_samples(2), 5.0)
        out = await asyncio.gather(short, long, return_exceptions=True)
        # now a call whose every request gives up: the engine's work is cancelled
        alone = await asyncio.gather(merger.score(_samples(3), 0.05), merger.score(_samples(4), 0.05),
                                     return_exceptions=True)  # fmt: skip
        await asyncio.sleep(0.05)
        return out, alone

    (short, long), alone = asyncio.run(main())
    assert isinstance(short, asyncio.TimeoutError)
    assert [r.value for r in long] == [2.0]  # type: ignore[union-attr]
    assert all(isinstance(a, asyncio.TimeoutError) for a in alone)  # type: ignore[union-attr]
    assert engine.cancelled == 1  # only the abandoned call; the first one went on for its other request


def test_requests_of_alone_from_samples_or_more_are_not_merged() -> None:
    engine = FakeEngine()
    merger = RequestMerger(engine.ascore, max_samples=100, alone_from=5)

    async def main() -> list[list[RewardResult]]:
        return list(await asyncio.gather(*(merger.score(_samples(*range(n)), None) for n in (4, 5, 1, 6))))

    out = asyncio.run(main())
    assert [len(rs) for rs in out] == [4, 5, 1, 6]
    assert sorted(engine.sizes) == [5, 5, 6]  # the 4 and the 1 merged; the 5 and the 6 went alone
    assert merger.calls == 1


@pytest.mark.parametrize("n", [0, 1])
def test_a_lone_request_is_scored(n: int) -> None:
    engine = FakeEngine()
    merger = RequestMerger(engine.ascore)
    out = asyncio.run(merger.score(_samples(*range(n)), None))
    assert [r.value for r in out] == [float(i) for i in range(n)]
