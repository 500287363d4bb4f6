"""Fitting a reward model's input into ``max_length`` without losing the parts it reads: keep both ends.

A reward model reads its score at the *end* of the sequence (the last token, or the template's closing tokens
and EOS), and it was trained on conversations that *start* with BOS and the template's header. Cutting either
end scores text the model never saw: a plain left cut (what rewardflow did before) drops BOS, the header and the
user turn; a plain right cut (OpenRLHF's tokenizer call, which then overwrites the last id with EOS) drops the
completion's end, where the answer is.

So every token is labelled by where it came from (:data:`FIXED` for template text and special tokens,
:data:`PROMPT` for the user message's content, :data:`COMPLETION` for the completion's content) and the excess
is removed in this order:

1. from the middle of the prompt's content (its opening instruction and its last words stay);
2. then from the middle of the completion's content (its first and, above all, its last tokens stay);
3. only if the template's own tokens are longer than ``max_length``, from the middle of what is left.

BOS, the header, the template's closing tokens and EOS are :data:`FIXED`: steps 1-2 never touch them, and step 3
keeps the first ``max_length // 2`` and the last tokens. Pure Python: no tokenizer, no torch (tested from tables).
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["COMPLETION", "FIXED", "PROMPT", "keep_ends"]

FIXED = 0
PROMPT = 1
COMPLETION = 2


def _cut_middle(keep: list[bool], labels: Sequence[int], label: int, count: int) -> int:
    """Drop up to ``count`` kept tokens labelled ``label`` from the middle of their span; return how many."""
    span = [i for i, (k, lab) in enumerate(zip(keep, labels, strict=True)) if k and lab == label]
    drop = min(count, len(span))
    if drop == 0:
        return 0
    left = (len(span) - drop) // 2  # the tail keeps the odd token: the end is what a reward model reads
    for i in span[left : left + drop]:
        keep[i] = False
    return drop


def keep_ends(labels: Sequence[int], max_length: int) -> list[int]:
    """Indices of the tokens to keep (in order) so that at most ``max_length`` remain; see the module docstring."""
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    excess = len(labels) - max_length
    keep = [True] * len(labels)
    if excess > 0:
        excess -= _cut_middle(keep, labels, PROMPT, excess)
    if excess > 0:
        excess -= _cut_middle(keep, labels, COMPLETION, excess)
    if excess > 0:
        kept = [i for i, k in enumerate(keep) if k]
        head = max_length // 2
        return kept[:head] + kept[len(kept) - (max_length - head) :]
    return [i for i, k in enumerate(keep) if k]
