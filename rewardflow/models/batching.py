"""Token-budget micro-batching: sort by length, pack under a budget of padded tokens, keep the input order.

A reward-model forward pass costs about ``batch_size * longest_sequence`` tokens of compute and activation
memory, padding included. Packing samples in input order wastes most of that on padding (one long completion
pads the whole batch); sorting by length first puts sequences of similar length together, so the padding left
is small, and the budget bounds the memory of every micro-batch whatever the lengths. Scores are written back
by the original index, so callers never see the reordering.

Covered: the plan (which samples go together) and its padding accounting. Not covered: tokenization and the
forward pass itself (:mod:`rewardflow.models.base`). Pure Python, no torch import.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rewardflow.errors import ConfigError

__all__ = ["MicroBatchPlan", "pack_micro_batches", "plan_micro_batches"]


@dataclass(frozen=True, slots=True)
class MicroBatchPlan:
    """Micro-batches as tuples of input indices, longest first, plus their token accounting."""

    batches: tuple[tuple[int, ...], ...]
    real_tokens: int  # sum of the sequence lengths
    padded_tokens: int  # sum over micro-batches of size * longest length: what the forward passes compute

    @property
    def padding_waste(self) -> float:
        """Fraction of the computed tokens that are padding (0.0 for an empty plan)."""
        if self.padded_tokens == 0:
            return 0.0
        return 1.0 - self.real_tokens / self.padded_tokens


def plan_micro_batches(lengths: Sequence[int], token_budget: int, max_batch_size: int | None = None) -> MicroBatchPlan:
    """Pack sequences of the given lengths into micro-batches of at most ``token_budget`` padded tokens.

    Greedy over the lengths sorted longest first (ties keep input order, so the plan is deterministic): a
    micro-batch's cost is ``len(batch) * its first (longest) length``, and a sample joins the current batch while
    that stays within the budget and ``max_batch_size``. A single sequence longer than the budget gets a batch of
    its own (the budget bounds batching, it never drops a sample; ``max_length`` bounds one sequence).
    """
    if token_budget < 1:
        raise ConfigError(f"token_budget must be >= 1, got {token_budget}")
    if max_batch_size is not None and max_batch_size < 1:
        raise ConfigError(f"max_batch_size must be >= 1 or None, got {max_batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[tuple[int, ...]] = []
    current: list[int] = []
    longest = 0
    padded = 0
    for i in order:
        fits = (len(current) + 1) * longest <= token_budget
        if current and (not fits or (max_batch_size is not None and len(current) >= max_batch_size)):
            batches.append(tuple(current))
            padded += len(current) * longest
            current = []
        if not current:
            longest = max(lengths[i], 1)  # an empty sequence still occupies a row
        current.append(i)
    if current:
        batches.append(tuple(current))
        padded += len(current) * longest
    return MicroBatchPlan(tuple(batches), sum(lengths), padded)


def pack_micro_batches(lengths: Sequence[int], token_budget: int, max_batch_size: int | None = None) -> MicroBatchPlan:
    """Micro-batches for packed rows (:mod:`rewardflow.models.packing`): at most ``token_budget`` real tokens each.

    The same longest-first greedy order as :func:`plan_micro_batches`, but a packed row has no padding, so a
    micro-batch costs the sum of its lengths and ``padded_tokens`` equals ``real_tokens``.
    """
    plan_micro_batches([], token_budget, max_batch_size)  # validates both
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[tuple[int, ...]] = []
    current: list[int] = []
    used = 0
    for i in order:
        full = max_batch_size is not None and len(current) >= max_batch_size
        if current and (used + lengths[i] > token_budget or full):
            batches.append(tuple(current))
            current, used = [], 0
        current.append(i)
        used += lengths[i]
    if current:
        batches.append(tuple(current))
    total = sum(lengths)
    return MicroBatchPlan(tuple(batches), total, total)
