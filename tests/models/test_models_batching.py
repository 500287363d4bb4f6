"""Token-budget planning: pure Python, no torch. Each test names the property it guards."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rewardflow.errors import ConfigError
from rewardflow.models.batching import plan_micro_batches


@given(
    lengths=st.lists(st.integers(min_value=1, max_value=300), max_size=80),
    budget=st.integers(min_value=1, max_value=2000),
    cap=st.one_of(st.none(), st.integers(min_value=1, max_value=16)),
)
@settings(max_examples=200, deadline=None)
def test_plan_is_a_partition_within_budget(lengths: list[int], budget: int, cap: int | None) -> None:
    plan = plan_micro_batches(lengths, budget, cap)
    seen = sorted(i for batch in plan.batches for i in batch)
    assert seen == list(range(len(lengths)))  # every sample exactly once
    padded = 0
    for batch in plan.batches:
        widths = [lengths[i] for i in batch]
        assert widths == sorted(widths, reverse=True)  # longest first inside a batch
        cost = len(batch) * widths[0]
        assert cost <= budget or len(batch) == 1  # only a lone over-long sample may exceed the budget
        assert cap is None or len(batch) <= cap
        padded += cost
    assert plan.padded_tokens == padded
    assert plan.real_tokens == sum(lengths)
    assert 0.0 <= plan.padding_waste < 1.0


def test_sorting_beats_input_order_on_padding() -> None:
    # alternating long/short: packing in input order would pad every short sample to 100
    lengths = [100, 5] * 20
    plan = plan_micro_batches(lengths, token_budget=400)
    assert plan.padding_waste == 0.0
    assert [len(b) for b in plan.batches] == [4, 4, 4, 4, 4, 20]  # the short ones travel together


def test_ties_keep_input_order_and_plans_are_deterministic() -> None:
    lengths = [7, 9, 7, 9, 7]
    assert plan_micro_batches(lengths, token_budget=100).batches == ((1, 3, 0, 2, 4),)
    plan = plan_micro_batches(lengths, token_budget=18)
    assert plan.batches == ((1, 3), (0, 2), (4,))
    assert plan == plan_micro_batches(lengths, token_budget=18)


def test_waste_is_exact() -> None:
    plan = plan_micro_batches([10, 6, 4], token_budget=30)  # one batch of 3 rows x 10 tokens, 20 of them real
    assert plan.batches == ((0, 1, 2),)
    assert plan.padded_tokens == 30 and plan.real_tokens == 20
    assert plan.padding_waste == pytest.approx(1 / 3)


def test_empty_input_and_bad_numbers() -> None:
    assert plan_micro_batches([], 10).batches == ()
    assert plan_micro_batches([], 10).padding_waste == 0.0
    with pytest.raises(ConfigError):
        plan_micro_batches([1], 0)
    with pytest.raises(ConfigError):
        plan_micro_batches([1], 10, max_batch_size=0)
