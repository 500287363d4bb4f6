"""OpenRLHF: a ``reward_func`` for ``--remote_rm_url /path/to/file.py``, backed by a spec file.

OpenRLHF loads ``reward_func`` from the Python file given to ``--remote_rm_url`` (it must end in ``.py``) and
calls it positionally with lists (``SingleTurnAgentExecutor`` in ``openrlhf/utils/agent.py``, one sample per call
in a thread; older versions sent chunks of ``micro_rollout_batch_size`` to Ray tasks)::

    reward_func(queries, prompts, labels)

``queries`` are prompt + response decoded with special tokens, ``prompts`` the prompts, ``labels`` the dataset
column named by ``--label_key``. It expects a dict: ``rewards`` (a tensor, used for advantages), ``scores`` (a
tensor, used by ``--dynamic_filtering``) and ``extra_logs`` (logged to wandb).

Here the response is the query with its prompt prefix removed and trailing end-of-sequence markers stripped,
and the batch goes through a rewardflow engine (parallel worker processes, killable timeouts). The label reaches
the reward as the column ``label_column`` (default ``answer``, what the built-in math rewards read).
``extra_logs`` holds one tensor per component (``rewardflow/<name>``).

A model reward (:class:`~rewardflow.models.RewardModel`, ``similarity``) is refused with a
:class:`~rewardflow.errors.ConfigError`: OpenRLHF calls this function once per sample, which would mean one
forward pass and one onload/offload cycle per completion.

**A failure raises** :class:`~rewardflow.errors.RewardFailedError`, never a 0: the current executor catches it,
logs it and leaves that sample's reward empty instead of training on an invented value.

torch is imported only when the function is called (OpenRLHF always has it); importing this module does not.
The spec comes from configuration only: ``$REWARDFLOW_SPEC`` for the module-level :func:`reward_func`, or the
path given to :func:`make_reward_func` in your own reward file.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from os import PathLike
from typing import Any

from rewardflow.engine import Engine
from rewardflow.errors import MissingDependencyError, RewardFailedError
from rewardflow.integrations._shared import (
    build_engine,
    engine_key,
    refuse_batch_only_rewards,
    shared_engines,
    spec_from_env,
)
from rewardflow.types import Sample

__all__ = ["DEFAULT_END_MARKERS", "OpenRLHFReward", "make_reward_func", "reward_func", "split_response"]

logger = logging.getLogger(__name__)

_ADAPTER = "openrlhf"
#: End-of-sequence markers that OpenRLHF's decoding keeps (``skip_special_tokens=False``) and rule rewards trip on.
DEFAULT_END_MARKERS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>", "</s>", "<eos>")


class OpenRLHFReward:
    """OpenRLHF's ``reward_func`` over one spec. Holds only configuration (pickles for Ray); the engine is looked
    up per process in the shared table.

    Args:
        spec: path of a spec YAML file (or a :class:`~rewardflow.spec.Spec`).
        label_column: the column name under which each label reaches the reward.
        end_markers: suffixes stripped (repeatedly) from the end of each response.
        **engine_options: overrides of the spec's ``workers``/``timeout``/``retries``/``concurrency``.
    """

    def __init__(
        self,
        spec: str | PathLike[str] | Any,
        *,
        label_column: str = "answer",
        end_markers: Sequence[str] = DEFAULT_END_MARKERS,
        **engine_options: Any,
    ) -> None:
        self.spec = spec
        self.label_column = label_column
        self.end_markers = tuple(end_markers)
        self.engine_options = engine_options
        self._key = (_ADAPTER, *engine_key(spec, engine_options))

    @property
    def engine(self) -> Engine:
        return shared_engines.get(self._key, lambda: build_engine(self.spec, **self.engine_options))

    def __call__(
        self, queries: Sequence[str], prompts: Sequence[str], labels: Sequence[Any] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """OpenRLHF's call; returns ``{"rewards", "scores", "extra_logs"}`` or raises RewardFailedError."""
        try:
            import torch
        except ImportError as exc:  # pragma: no cover - OpenRLHF always has torch
            raise MissingDependencyError("torch", "models") from exc

        n = len(queries)
        if len(prompts) != n or (labels is not None and len(labels) != n):
            raise ValueError(f"OpenRLHF passed {len(prompts)} prompts and {len(labels or [])} labels for {n} queries")
        samples = []
        for i in range(n):
            row = {k: v[i] for k, v in kwargs.items() if isinstance(v, (list, tuple)) and len(v) == n}
            if labels is not None:
                row[self.label_column] = labels[i]
            response = split_response(queries[i], prompts[i], self.end_markers)
            samples.append(Sample(prompt=prompts[i], completion=response, row=row))
        engine = self.engine
        refuse_batch_only_rewards(
            engine,
            "OpenRLHF's reward_func (called per sample, or per micro-batch in older versions)",
            "give the reward model to OpenRLHF itself (--reward_pretrain), or score it over the whole batch in the "
            "training step with rewardflow.models.score_training_batch",
        )
        results = engine.score(samples)
        for r in results:
            if not r.ok:
                raise RewardFailedError(r, context="OpenRLHF reward_func")
        values = torch.tensor([r.value for r in results], dtype=torch.float32)
        names = [c.name for c in self.engine.components]  # top-level components: the same keys for every sample
        extra_logs = {
            f"rewardflow/{name}": torch.tensor([r.components[name] for r in results], dtype=torch.float32)
            for name in names
        }
        return {"rewards": values, "scores": values.clone(), "extra_logs": extra_logs}


def split_response(query: str, prompt: str, end_markers: Sequence[str] = DEFAULT_END_MARKERS) -> str:
    """The response part of OpenRLHF's ``query`` (prompt + response), without trailing end markers.

    The prompt is removed when the query starts with it (else from its first occurrence, when detokenisation
    added text in front); when the prompt is not in the query at all (changed by detokenisation, truncated), the
    whole query is scored.
    """
    if prompt and query.startswith(prompt):
        response = query[len(prompt) :]
    elif prompt and prompt in query:
        response = query[query.index(prompt) + len(prompt) :]
    else:
        if prompt:
            logger.debug("the prompt is not part of the query; scoring the whole query")
        response = query
    stripped = True
    while stripped:
        stripped = False
        trimmed = response.rstrip()
        for marker in end_markers:
            if marker and trimmed.endswith(marker):
                response = trimmed[: -len(marker)]
                stripped = True
                break
    return response


def make_reward_func(spec: str | PathLike[str] | Any, **options: Any) -> OpenRLHFReward:
    """The ``reward_func`` for your reward file, over a spec path you choose::

    reward_func = make_reward_func("/abs/path/reward_spec.yaml")
    """
    return OpenRLHFReward(spec, **options)


def reward_func(
    queries: Sequence[str], prompts: Sequence[str], labels: Sequence[Any] | None = None, **kwargs: Any
) -> dict[str, Any]:
    """OpenRLHF's ``reward_func`` over the spec in ``$REWARDFLOW_SPEC`` (point ``--remote_rm_url`` at this file)."""
    return OpenRLHFReward(spec_from_env("rewardflow.integrations.openrlhf"))(queries, prompts, labels, **kwargs)
