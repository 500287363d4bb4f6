"""Packed micro-batches on the CPU: sequences end to end in one row, no padding, attention per sequence.

Why: a padded micro-batch computes its padding in every linear layer (3 % of the tokens for GSM8K solutions
after sorting by length, half of them for one-line answers), builds a ``[batch, 1, length, length]`` mask, and
sends attention through torch's CPU flash kernel with that mask, which runs at about two thirds of its unmasked
rate (47 against 71 GFLOP/s on MiniLM's shapes, one Zen 5 core). Packed, the linear layers see only real tokens
and each sequence's attention runs unmasked over its own span. Bench P4: MiniLM 1.04x on GSM8K solutions, the
similarity reward 1.86x on one-line answers, with the same kernels.

:class:`~rewardflow.models.base.ManagedModel` runs the packed loop and the probe; a subclass reads one output per
sequence from a packed row (``_read_packed``): ``RewardModel`` its head, ``SimilarityReward`` a pooled embedding.

How, with transformers' own interfaces rather than a copy of the model code:

* an attention function and a mask function registered under :data:`NAME` (``AttentionInterface`` and
  ``AttentionMaskInterface``). Outside a packed pass they *are* transformers' ``sdpa`` functions, called with the
  same arguments, so the padded path and prefix sharing compute exactly what ``sdpa`` computes. During a packed
  pass (a context variable holds the spans), the mask function returns ``None`` and the attention function runs
  :func:`torch.nn.functional.scaled_dot_product_attention` once per span, causal or not as the layer says, or,
  for a bidirectional span where the model opted in, oneDNN's fused attention graph
  (:mod:`rewardflow.models.attention`, ``cpu_attention="onednn"``);
* position ids restart for every sequence where the model starts them (0, or the pad id + 1 for RoBERTa-style
  position tables, :func:`rewardflow.models.base.position_offset`);
* the score is read at each sequence's read position of the packed row (a base model plus linear head), or, for
  encoder classifiers run whole (BERT's pooler, RoBERTa's head: they read the first token), a forward hook
  replaces the encoder's output by one row per sequence, ``[sequences, 1, hidden]``, so the model's own pooler
  and classifier run on it.

Checked, not assumed: before a model's first packed pass, a probe scores a few sequences both ways and packing is
used only when the scores agree to 1e-4 and every attention layer went through the packed function (a model
whose attention does not use the interface, or whose head reads another token, fails the probe and keeps the
padded path, with the reason in ``ScoreReport.packing``). Layer options the per-span call does not implement
(an attention bias, soft-capping, sink tokens, a sliding window shorter than a sequence) make the pass raise
:class:`PackingRefused` and that micro-batch runs padded. CPU only: on an accelerator a loop of per-sequence
kernel launches would cost more than the padding saves (flash-attention's varlen kernel is the GPU's answer).
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from rewardflow.models.attention import MAX_LENGTH, MIN_LENGTH

__all__ = ["NAME", "PackingRefused", "Spans", "pack_rows", "packed_pass", "register"]

#: the attention implementation name under which rewardflow's functions are registered in transformers
NAME = "rewardflow_packed"

#: layer options that the per-span call does not implement: a packed pass with any of them set is refused
_UNSUPPORTED = ("position_bias", "softcap", "s_aux", "sinks")


class PackingRefused(RuntimeError):
    """A layer needs something the packed path does not do; the micro-batch runs padded instead."""


@dataclass
class Spans:
    """The packed row being computed: ``(start, end)`` of each sequence, and how many attention calls ran."""

    bounds: list[tuple[int, int]]
    total: int
    longest: int
    calls: int = 0
    shapes: set[tuple[int, ...]] = field(default_factory=set)
    fused: Any = None  # a rewardflow.models.attention.FusedAttention for bidirectional spans, or None: SDPA
    fused_spans: int = 0  # span attentions the fused kernel ran


_ACTIVE: contextvars.ContextVar[Spans | None] = contextvars.ContextVar("rewardflow_packed_spans", default=None)


@contextmanager
def packed_pass(lengths: Sequence[int], fused: Any = None) -> Iterator[Spans]:
    """Within the block, models set to :data:`NAME` attend within each of these consecutive spans only.

    ``fused`` (a :class:`~rewardflow.models.attention.FusedAttention`) runs the bidirectional spans of
    :data:`~rewardflow.models.attention.MIN_LENGTH` to :data:`~rewardflow.models.attention.MAX_LENGTH` tokens;
    SDPA runs the rest.
    """
    bounds, start = [], 0
    for n in lengths:
        bounds.append((start, start + n))
        start += n
    spans = Spans(bounds, start, max(lengths, default=0), fused=fused)
    token = _ACTIVE.set(spans)
    try:
        yield spans
    finally:
        _ACTIVE.reset(token)


def pack_rows(rows: Sequence[Sequence[int]]) -> tuple[list[int], list[int], list[int]]:
    """``(flat ids, position ids restarting at 0 per row, start of each row)`` for rows laid end to end."""
    flat: list[int] = []
    positions: list[int] = []
    starts: list[int] = []
    for row in rows:
        starts.append(len(flat))
        flat.extend(row)
        positions.extend(range(len(row)))
    return flat, positions, starts


def _attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    spans = _ACTIVE.get()
    if spans is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
        )
    import torch

    if query.shape[0] != 1 or query.shape[2] != spans.total or key.shape[2] != spans.total:
        raise PackingRefused(f"attention saw shapes {tuple(query.shape)}/{tuple(key.shape)}, not one packed row")
    used = [name for name in _UNSUPPORTED if kwargs.get(name) is not None]
    if used:
        raise PackingRefused(f"the attention layer uses {', '.join(used)}")
    window = kwargs.get("sliding_window")
    if isinstance(window, int) and 0 < window < spans.longest:
        raise PackingRefused(f"a sliding window of {window} tokens is shorter than a {spans.longest}-token sequence")
    causal = is_causal if is_causal is not None else bool(getattr(module, "is_causal", True))
    groups = query.shape[1] // key.shape[1]
    if groups > 1:
        key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    heads, width = query.shape[1], value.shape[-1]
    out = query.new_empty(1, spans.total, heads, width)
    fused = None if causal else spans.fused  # causal spans keep SDPA's flash kernel (it skips the masked half)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5  # SDPA's own default
    for start, end in spans.bounds:
        q, k, v = query[:, :, start:end], key[:, :, start:end], value[:, :, start:end]
        if fused is not None and MIN_LENGTH <= end - start <= MAX_LENGTH:
            piece = fused(q, k, v, scale)
            spans.fused_spans += 1
        else:
            piece = torch.nn.functional.scaled_dot_product_attention(
                q, k, v, scale=scale, is_causal=causal and end - start > 1
            )
        out[0, start:end] = piece[0].transpose(0, 1)
    spans.calls += 1
    spans.shapes.add(tuple(query.shape))
    return out, None


def _mask(*args: Any, **kwargs: Any) -> Any:
    from transformers.masking_utils import sdpa_mask

    if _ACTIVE.get() is not None:
        return None  # the spans are the mask
    return sdpa_mask(*args, **kwargs)


@functools.cache
def register() -> str | None:
    """Register :data:`NAME` with transformers once; ``None`` on success, else why it cannot be (old versions)."""
    try:
        from transformers import AttentionInterface
        from transformers.integrations.sdpa_attention import sdpa_attention_forward  # noqa: F401
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask  # noqa: F401
    except ImportError as exc:
        return f"this transformers has no attention/mask interfaces ({exc})"
    AttentionInterface.register(NAME, _attention)
    AttentionMaskInterface.register(NAME, _mask)
    return None
