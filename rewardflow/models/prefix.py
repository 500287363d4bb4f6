"""Group prefix sharing: in a GRPO batch the G completions of a prompt share it, so run the prompt once.

A causal reward model's hidden state at position ``t`` depends on tokens ``0..t`` only. For a group of samples
with the same prompt, the prompt's keys and values are the same in every sample; computing them once and running
the G completions against them (batched) does the same arithmetic on ``P + G*C`` tokens instead of
``G*(P + C)``: 2.1x less for 300-token prompts, 200-token completions and G=8.

How, with transformers' own interfaces: the shared prefixes run once through the base model with
``use_cache=True``, which returns its ``Cache`` (a ``DynamicCache``); for each micro-batch of completions the
rows of the prefixes they continue are picked with the cache's own ``batch_select_indices`` and passed back (as
``cache``, transformers 5's name, or ``past_key_values`` before it), with the attention mask covering prefix +
completion and the completions' absolute positions (``position_ids``: absolute-position models such as GPT-2
need them). Prefixes are left-padded and completions right-padded; in a causal model padding after a token cannot
change it, and masked padding before it is skipped.

How many groups share a pass depends on the device (:func:`bundle_groups`): one on the CPU, where a pass costs its
arithmetic and an unpadded prefix pass is cheapest; as many as the token budget holds on an accelerator, where a
pass per group costs more in kernel launches than it saves in arithmetic.

When it applies: the model must take a KV cache and must be causal. Causality is *measured* once per
model (:func:`sharing_blocker`): a 4-token probe's first 3 positions must equal a 3-token run (a bidirectional
encoder changes them), and prefix + cache must reproduce the full pass. Otherwise scoring falls back to the
padded path and the reason is reported in ``ScoreReport.prefix_sharing``. Samples whose shared prefix is shorter
than :data:`MIN_SHARED` tokens, or that have no group, go the padded path too.

Not covered: models with token type ids.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MIN_SHARED",
    "SharedGroup",
    "bundle_groups",
    "cache_kwarg",
    "forward_groups",
    "plan_groups",
    "sharing_blocker",
]

#: Below this many shared tokens the extra pass costs more than it saves.
MIN_SHARED = 16


@dataclass(frozen=True)
class SharedGroup:
    """Rows of one call that share their first ``prefix`` tokens."""

    prefix: int
    rows: tuple[int, ...]


def plan_groups(
    input_ids: Sequence[Sequence[int]], prompt_lengths: Sequence[int], read_at: Sequence[int] | None = None
) -> list[SharedGroup]:
    """Group rows by their prompt tokens; each group's prefix is the members' longest common prefix.

    The prefix stops at the earliest read position of the group (default: one token short of the shortest
    member), so every member's score is read from a token of its own pass. Groups of one row, and prefixes under
    :data:`MIN_SHARED`, are left out.
    """
    by_prompt: dict[tuple[int, ...], list[int]] = {}
    for i, (ids, n) in enumerate(zip(input_ids, prompt_lengths, strict=True)):
        if n > 0:
            by_prompt.setdefault(tuple(ids[:n]), []).append(i)
    groups: list[SharedGroup] = []
    for rows in by_prompt.values():
        if len(rows) < 2:
            continue
        first = input_ids[rows[0]]
        common = min(read_at[r] if read_at is not None else len(input_ids[r]) - 1 for r in rows)
        for r in rows[1:]:
            other = input_ids[r]
            k = 0
            while k < common and other[k] == first[k]:
                k += 1
            common = k
        if common >= MIN_SHARED:
            groups.append(SharedGroup(common, tuple(rows)))
    return groups


def cache_kwarg(module: Any) -> str | None:
    """The name under which ``module.forward`` takes a KV cache (``cache`` since transformers 5), or ``None``."""
    params = inspect.signature(module.forward).parameters
    if "use_cache" not in params or "attention_mask" not in params:
        return None
    return next((name for name in ("cache", "past_key_values") if name in params), None)


def _cache_of(output: Any) -> Any:
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)


def sharing_blocker(base: Any, device: Any, vocab_size: int) -> str | None:
    """``None`` when ``base`` can share prefixes, else the reason it cannot (measured on a 4-token probe)."""
    import torch

    name = cache_kwarg(base)
    if name is None:
        return f"{type(base).__name__} takes no KV cache"
    ids = (torch.arange(4, dtype=torch.long).reshape(1, 4) * 7 + 3) % max(vocab_size, 1)
    ids = ids.to(device)
    with torch.inference_mode():
        full = base(input_ids=ids, use_cache=False).last_hidden_state.float()
        head = base(input_ids=ids[:, :3], use_cache=False).last_hidden_state.float()
        scale = float(full.abs().max()) or 1.0
        if float((full[:, :3] - head).abs().max()) > 1e-3 * scale:
            return f"{type(base).__name__} is a bidirectional encoder (a token's state changes when one is appended)"
        cache = _cache_of(base(input_ids=ids[:, :2], use_cache=True))
        if cache is None or not hasattr(cache, "batch_repeat_interleave"):
            return f"{type(base).__name__} returns no transformers Cache object"
        rest = base(
            input_ids=ids[:, 2:],
            attention_mask=torch.ones_like(ids),
            position_ids=torch.arange(2, 4, device=ids.device).reshape(1, 2),
            use_cache=True,
            **{name: cache},
        ).last_hidden_state.float()
        if float((full[:, 2:] - rest).abs().max()) > 1e-3 * scale:
            return f"{type(base).__name__}'s KV cache does not reproduce its full forward pass"
    return None


def bundle_groups(
    groups: Sequence[SharedGroup], budget: int, *, together: bool, max_rows: int | None = None
) -> list[list[SharedGroup]]:
    """Groups that run their prefixes in one pass (and their completions in shared passes).

    ``together=False``: one group per pass, its prefix unpadded (the CPU's choice: there a pass costs its
    arithmetic, and a padded prefix pass adds padding and the slower masked attention kernel). ``together=True``:
    groups sorted by prefix length fill a pass while ``groups x longest prefix`` stays within ``budget`` tokens
    (the accelerator's choice: there a small pass costs its kernel launches, and one pass per group ran at 2.3x
    the per-sample loop where padded batches without sharing ran at 5.6x; ``bench/gpu_check.py``), and
    ``max_rows`` (the model's ``max_batch_size``) bounds the groups per pass.
    """
    if not together:
        return [[g] for g in groups]
    bundles: list[list[SharedGroup]] = []
    for group in sorted(groups, key=lambda g: g.prefix):
        fits = (len(bundles[-1]) + 1) * group.prefix <= budget if bundles else False
        if fits and (max_rows is None or len(bundles[-1]) < max_rows):
            bundles[-1].append(group)
        else:
            bundles.append([group])
    return bundles


def _sharing_copy(cache: Any) -> Any:
    """A copy of ``cache`` whose layers are new objects but whose key/value tensors are the originals.

    Safe because every use selects rows first (``batch_select_indices`` indexes, so it makes new tensors) and a
    forward pass then appends to those; the prefix's own tensors are never written. Copying them too would cost a
    full copy of the prefix cache per pass.
    """
    import torch

    memo: dict[int, Any] = {}
    for layer in getattr(cache, "layers", ()):
        for value in vars(layer).values():
            if isinstance(value, torch.Tensor):
                memo[id(value)] = value
    return copy.deepcopy(cache, memo)


def forward_groups(
    base: Any,
    prefixes: Sequence[Sequence[int]],
    suffixes: Sequence[Sequence[int]],
    owner: Sequence[int],
    read: Sequence[int],
    *,
    pad_id: int,
    device: Any,
    chunk: int,
) -> tuple[Any, int, int]:
    """Hidden states (``[len(suffixes), hidden]``) at each suffix's ``read`` index; each prefix runs once.

    ``prefixes`` run in one pass, left-padded so that every prefix ends where its suffixes begin (the cache then
    keeps true distances between tokens, as in batched generation). Suffix ``i`` belongs to prefix ``owner[i]``;
    the suffixes run in passes of at most ``chunk`` rows, longest first, each against the rows of the prefix cache
    it needs (``batch_select_indices``), with the attention mask covering that prefix + the suffix and positions
    continuing the prefix's. Returns the states, the number of passes (prefix pass included) and the tokens those
    passes computed, padding included.
    """
    import torch

    name = cache_kwarg(base)
    lengths = [len(p) for p in prefixes]
    width = max(lengths)
    prefix_ids = torch.full((len(prefixes), width), pad_id, dtype=torch.long)
    prefix_mask = torch.zeros((len(prefixes), width), dtype=torch.long)
    for row, seq in enumerate(prefixes):
        prefix_ids[row, width - len(seq) :] = torch.tensor(list(seq), dtype=torch.long)
        prefix_mask[row, width - len(seq) :] = 1
    positions = (prefix_mask.cumsum(-1) - 1).clamp(min=0)
    output = base(
        input_ids=prefix_ids.to(device),
        attention_mask=prefix_mask.to(device),
        position_ids=positions.to(device),
        use_cache=True,
    )
    cache = _cache_of(output)
    computed = prefix_ids.numel()
    passes = 1
    starts = torch.tensor(lengths, dtype=torch.long)
    order = sorted(range(len(suffixes)), key=lambda i: -len(suffixes[i]))  # similar lengths pad less
    states: Any = None
    for begin in range(0, len(order), chunk):
        part = order[begin : begin + chunk]
        longest = max(len(suffixes[i]) for i in part)
        ids = torch.full((len(part), longest), pad_id, dtype=torch.long)
        mask = torch.zeros((len(part), longest), dtype=torch.long)
        for row, i in enumerate(part):
            ids[row, : len(suffixes[i])] = torch.tensor(list(suffixes[i]), dtype=torch.long)
            mask[row, : len(suffixes[i])] = 1
        rows_of = torch.tensor([owner[i] for i in part], dtype=torch.long)
        view = _sharing_copy(cache)  # a forward pass appends to the cache it is given
        view.batch_select_indices(rows_of.to(device))
        hidden = base(
            input_ids=ids.to(device),
            attention_mask=torch.cat([prefix_mask[rows_of], mask], 1).to(device),
            position_ids=(starts[rows_of, None] + torch.arange(longest)).to(device),
            use_cache=True,
            **{name: view},
        ).last_hidden_state
        picked = hidden[
            torch.arange(len(part), device=hidden.device),
            torch.tensor([read[i] for i in part], dtype=torch.long, device=hidden.device),
        ]
        if states is None:
            states = picked.new_empty((len(suffixes), picked.shape[-1]))
        states[torch.tensor(part, dtype=torch.long, device=picked.device)] = picked
        computed += ids.numel()
        passes += 1
    return states, passes, computed
