"""Model-based rewards: reward models and embedding similarity, scored in batches and offloaded after use.

A learned reward model is heavy GPU work, so it is never a per-sample function in a worker process: it is a
``batch`` reward that the engine calls once per training batch, in the main process, and that leaves the device
right after (:mod:`rewardflow.models.base`). What is here:

* :class:`RewardModel` (registry name ``reward_model``): sequence-classification, token-classification
  (AReaL-style) and value-head (OpenRLHF, TRL) reward models, read at a position computed from each sequence
  (never by a pad-id search), with chat re-templating, an eos policy matched to the trainer, truncation that keeps
  both ends (:mod:`~rewardflow.models.truncation`), token-budget micro-batching and GRPO prefix sharing
  (:mod:`~rewardflow.models.prefix`);
* :class:`SimilarityReward` (``similarity``): cosine similarity to the reference answer with a sentence encoder
  (the bundled all-MiniLM-L6-v2 by default);
* :func:`score_training_batch`: the training-step hook that scores a batch with a whole spec and guarantees every
  model is offloaded afterwards.

Everything needs the ``models`` extra (torch, transformers, safetensors); this package's ``__init__`` imports none
of it: the names below are loaded on first access.
"""

from __future__ import annotations

from rewardflow._lazy import lazy_exports
from rewardflow.registry import Entry

__all__ = [
    "BUILTINS",
    "ModelState",
    "OffloadMode",
    "RewardModel",
    "ScoreReport",
    "SimilarityReward",
    "TrainingStepReport",
    "ascore_training_batch",
    "score_training_batch",
]

BUILTINS: list[Entry] = [
    Entry(
        "reward_model",
        "rewardflow.models.reward_model:RewardModel",
        "Learned reward model scored over the whole batch, then offloaded (params: path, head, offload, ...).",
        factory=True,
        extra="models",
    ),
    Entry(
        "similarity",
        "rewardflow.models.similarity:SimilarityReward",
        "Embedding cosine similarity to the reference column (bundled all-MiniLM-L6-v2; params: reference).",
        factory=True,
        extra="models",
    ),
]

_LAZY = {
    "ModelState": "rewardflow.models.base",
    "ScoreReport": "rewardflow.models.base",
    "OffloadMode": "rewardflow.models.weights",
    "RewardModel": "rewardflow.models.reward_model",
    "SimilarityReward": "rewardflow.models.similarity",
    "TrainingStepReport": "rewardflow.models.training",
    "ascore_training_batch": "rewardflow.models.training",
    "score_training_batch": "rewardflow.models.training",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
