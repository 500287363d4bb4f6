"""verl: a reward-loop manager that scores whole batches with a rewardflow engine (model and batch rewards too).

verl 0.8+ computes rewards in its reward loop (``verl/experimental/reward_loop``): each ``RewardLoopWorker``
holds one *reward manager* and calls its ``async run_single(data)`` once per sample, for all the samples of its
chunk at once (``asyncio.gather``). verl has no ``batch`` reward manager any more, so a ``compute_score`` function
only ever sees one sample: a reward model would run one forward pass per completion, and a batch reward cannot
run at all. :class:`RewardflowRewardManager` is a ``RewardManagerBase`` subclass that gathers the samples of the
concurrent ``run_single`` calls (those that arrive within ``rewardflow_batch_window_s``, 10 ms by default) and
scores them with **one** engine call: rules in parallel worker processes with killable timeouts, judges
concurrently, reward models and batch rewards on the whole batch.

verl loads it by itself through its own importlib mechanism; the spec comes from configuration only::

    reward.reward_manager.source=importlib
    reward.reward_manager.name=RewardflowRewardManager
    reward.reward_manager.module.path=pkg://rewardflow.integrations.verl_manager
    +reward.reward_kwargs.rewardflow_spec=/abs/path/reward_spec.yaml   # or set $REWARDFLOW_SPEC

``reward.custom_reward_function.path`` must stay unset (the spec is the reward) and ``reward.reward_model.enable``
false (verl would then send samples to its own reward-model server instead of the manager).

**A failure raises** :class:`~rewardflow.errors.RewardFailedError` (the step stops with the reason), as for the
``compute_score`` functions of :mod:`rewardflow.integrations.verl`. With ``+reward.reward_kwargs.
rewardflow_failure_score=<value>`` failed samples get that value instead, and ``rewardflow_failed=1.0`` in
their ``reward_extra_info``. Every sample's ``reward_extra_info`` holds ``score``, ``rewardflow_failed`` and one
key per top-level component: verl logs them per data source in validation metrics and writes them per sample to
``trainer.rollout_data_dir``.

Each ``RewardLoopWorker`` (``reward.num_workers``, 8 by default) gets its own manager and so its own engine and
worker processes: on a small node, lower ``reward.num_workers`` and let the engine's ``workers`` do the
parallelism. This module imports verl; it is meant to be loaded by verl.

**The prompt a reward sees** is the user message itself when verl's ``raw_prompt`` (the dataset's messages, which
verl 0.9 keeps for its own reward models) is one user turn, as in GSM8K- and MATH-style data: a reward model renders
it with its own chat template, as verl's reward loop does (``_preprocess_reward_inputs``), and a judge quotes the
question. Otherwise it is the prompt as the policy read it, decoded with its template's special tokens, so that a
reward model refuses a prompt it cannot split (a system prompt, several turns) with an error
(:mod:`rewardflow.models.templates`). It is never the prompt decoded without its special tokens: that text
(``"user\nQ\nassistant\n"`` for ChatML) has lost the markers a reward model needs to find the question, and was
scored as if it were the question.

Not covered: multi-turn tool fields (``tool_extra_fields``, ``__num_turns__``) are not passed to rewards; the
sample is the decoded last response, as verl's ``naive`` manager scores it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, cast

from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase

from rewardflow.errors import ConfigError
from rewardflow.integrations._batcher import SampleBatcher
from rewardflow.integrations._shared import SPEC_ENV
from rewardflow.integrations.verl import VerlReward, verl_sample
from rewardflow.types import Sample

__all__ = ["RewardflowRewardManager"]

_DEFAULT_WINDOW_S = 0.01


class RewardflowRewardManager(RewardManagerBase):
    """verl reward-loop manager over a rewardflow spec; see the module docstring.

    verl constructs it as ``cls(config=..., tokenizer=..., compute_score=..., reward_router_address=...,
    reward_model_tokenizer=...)`` (``load_reward_manager`` in ``verl/trainer/ppo/reward.py``).
    """

    def __init__(
        self,
        config: Any,
        tokenizer: Any,
        compute_score: Any = None,
        reward_router_address: str | None = None,
        reward_model_tokenizer: Any = None,
        **_: Any,
    ) -> None:
        super().__init__(config, tokenizer, compute_score)
        # verl always passes a compute_score (its built-in default when no custom function is configured); only a
        # configured custom function is a conflict.
        if _get(config, "reward", "custom_reward_function", "path"):
            raise ConfigError(
                "RewardflowRewardManager scores with the rewardflow spec; unset reward.custom_reward_function.path "
                "(the spec is the reward function)"
            )
        options = _options(config)
        spec = options.get("rewardflow_spec") or os.environ.get(SPEC_ENV, "").strip()
        if not spec:
            raise ConfigError(
                "RewardflowRewardManager needs a spec: set +reward.reward_kwargs.rewardflow_spec=/abs/path/spec.yaml "
                f"(or the environment variable {SPEC_ENV})"
            )
        failure_score = options.get("rewardflow_failure_score")
        self.reward = VerlReward(
            str(spec), details=True, failure_score=None if failure_score is None else float(failure_score)
        )
        window = float(options.get("rewardflow_batch_window_s", _DEFAULT_WINDOW_S))
        self.batcher = SampleBatcher(lambda samples: self.reward.engine.ascore(samples), window)

    async def run_single(self, data: Any) -> dict[str, Any]:
        item = data[-1:][0]  # as verl's own managers: a multi-sequence output is scored on its last sequence
        # Decoded here, synchronously (a few ms), not in an executor: then every run_single of one gather reaches
        # the batcher in the same pass of the event loop, and the chunk becomes one engine call.
        sample = self.sample(item)
        result = await self.batcher.score(sample)
        out = cast("dict[str, float]", self.reward._finish(result, sample.row.get("data_source")))  # details=True
        return {"reward_score": out["score"], "reward_extra_info": out}

    def sample(self, item: Any) -> Sample:
        """A :class:`Sample` from one ``DataProtoItem``: the prompt (module docstring), the response decoded without
        padding and special tokens, their ids, and verl's ``data_source``/``ground_truth``/``extra_info``."""
        batch, extra = item.batch, item.non_tensor_batch
        prompt_ids, response_ids = batch["prompts"], batch["responses"]
        mask = batch["attention_mask"]
        prompt_len = prompt_ids.shape[-1]
        prompt_valid = prompt_ids[mask[:prompt_len].bool()].tolist()
        response_valid = response_ids[: int(mask[prompt_len:].sum())].tolist()
        reward_model = extra.get("reward_model") or {}
        info = extra.get("extra_info")
        sample = verl_sample(
            extra.get("data_source"),
            self.tokenizer.decode(response_valid, skip_special_tokens=True),
            reward_model.get("ground_truth") if isinstance(reward_model, Mapping) else None,
            dict(info) if isinstance(info, Mapping) else info,
            {},
        )
        prompt = _single_user_message(extra.get("raw_prompt"))
        if prompt is None:
            prompt = self.tokenizer.decode(prompt_valid, skip_special_tokens=False)
        return Sample(
            prompt=prompt,
            completion=sample.completion,
            prompt_ids=prompt_valid,
            completion_ids=response_valid,
            row=sample.row,
        )


def _single_user_message(raw_prompt: Any) -> str | None:
    """The text of ``raw_prompt`` when it is one user message with text content, else ``None``."""
    messages = list(raw_prompt) if isinstance(raw_prompt, (list, tuple)) or hasattr(raw_prompt, "tolist") else []
    if len(messages) != 1 or not isinstance(messages[0], Mapping):
        return None
    message = messages[0]
    content = message.get("content")
    return content if message.get("role") == "user" and isinstance(content, str) else None


def _get(config: Any, *keys: str) -> Any:
    for key in keys:
        if config is None or not hasattr(config, "get"):
            return None
        config = config.get(key)
    return config


def _options(config: Any) -> Mapping[str, Any]:
    kwargs = _get(config, "reward", "reward_kwargs")
    return kwargs if kwargs is not None else {}
