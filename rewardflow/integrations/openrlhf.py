"""OpenRLHF: a ``reward_func`` for ``--reward.remote_url /path/to/file.py``, backed by a spec file.

OpenRLHF (0.10 and later; tested with 0.11.2) loads ``reward_func`` from the Python file given to
``--reward.remote_url`` (it must end in ``.py``) and calls it positionally with lists, one sample per call in a
thread (``SingleTurnAgentExecutor`` in ``openrlhf/utils/agent.py``)::

    reward_func(queries, prompts, labels)

``queries`` are the prompt *as generated from* + response, decoded with special tokens; ``prompts`` the
original prompts; ``labels`` the dataset column named by ``--data.label_key``. It expects a dict: ``rewards``
(a tensor, used for advantages), ``scores`` (a tensor, used by ``--algo.dynamic_filtering_enable``) and
``extra_logs`` (logged per sample to wandb/TensorBoard).

When the prompt is longer than ``--data.max_len`` leaves room for, OpenRLHF keeps only its last tokens, so the
query starts with the *end* of the prompt, not the whole prompt. The response is therefore found where the
prompt ends inside the query (the longest end of the prompt that the query starts with), never by scoring the
whole query: an answer that sits in the prompt must not score the response. Trailing end-of-sequence markers are
stripped, and the batch goes through a rewardflow engine (parallel worker processes, killable timeouts). The
label reaches the reward as the column ``label_column`` (default ``answer``, what the built-in math rewards read).
``extra_logs`` holds one tensor per component (``rewardflow/<name>``) and ``rewardflow/failed``.

A model reward (:class:`~rewardflow.models.RewardModel`, ``similarity``) is refused with a
:class:`~rewardflow.errors.ConfigError`: OpenRLHF calls this function once per sample, which would mean one
forward pass and one onload/offload cycle per completion.

**A failed sample** (exception, timeout, unreadable query) is logged at WARNING with its reason, and what
OpenRLHF gets depends on ``on_failure``. OpenRLHF cannot drop one sample: the executor logs any exception from
``reward_func`` at INFO and leaves the reward ``None``, which then crashes the training step with an unrelated
error, and its advantage code reshapes rewards into fixed groups of ``n_samples_per_prompt``. So:

* ``on_failure="filter"`` (default): ``scores`` is NaN and ``rewards`` is ``failure_reward`` (0.0), with
  ``rewardflow/failed = 1``. With ``--algo.dynamic_filtering_enable`` OpenRLHF drops the prompt's whole group
  (a NaN average is outside every range) and samples a replacement prompt: the failure is never trained on.
  Without it, the step does not crash and the sample trains on ``failure_reward``, visibly: a WARNING with the
  reason, ``rewardflow/failed`` in the logged metrics (its components carry ``failure_reward`` too, so their
  averages stay readable) and a NaN ``score``;
* ``on_failure="raise"``: raise :class:`~rewardflow.errors.RewardFailedError` (what OpenRLHF then does is above;
  for debugging only).

torch is imported only when the function is called (OpenRLHF always has it); importing this module does not.
The spec comes from configuration only: ``$REWARDFLOW_SPEC`` for the module-level :func:`reward_func`, or the
path given to :func:`make_reward_func` in your own reward file.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from os import PathLike
from typing import Any, Literal

from rewardflow.engine import Engine
from rewardflow.errors import MissingDependencyError, RewardFailedError
from rewardflow.integrations._shared import (
    build_engine,
    engine_key,
    log_failures,
    refuse_batch_only_rewards,
    shared_engines,
    spec_from_env,
)
from rewardflow.types import RewardResult, Sample

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
        on_failure: ``"filter"`` (NaN score, ``failure_reward`` as reward) or ``"raise"``; see the module docstring.
        failure_reward: the reward a failed sample carries under ``"filter"`` (used only if OpenRLHF trains on it).
        **engine_options: overrides of the spec's ``workers``/``timeout``/``retries``/``concurrency``.
    """

    def __init__(
        self,
        spec: str | PathLike[str] | Any,
        *,
        label_column: str = "answer",
        end_markers: Sequence[str] = DEFAULT_END_MARKERS,
        on_failure: Literal["filter", "raise"] = "filter",
        failure_reward: float = 0.0,
        **engine_options: Any,
    ) -> None:
        if on_failure not in ("filter", "raise"):
            raise ValueError(f"on_failure must be 'filter' or 'raise', got {on_failure!r}")
        self.spec = spec
        self.label_column = label_column
        self.end_markers = tuple(end_markers)
        self.on_failure = on_failure
        self.failure_reward = float(failure_reward)
        self.engine_options = engine_options
        self._key = (_ADAPTER, *engine_key(spec, engine_options))

    @property
    def engine(self) -> Engine:
        return shared_engines.get(self._key, lambda: build_engine(self.spec, **self.engine_options))

    def __call__(
        self, queries: Sequence[str], prompts: Sequence[str], labels: Sequence[Any] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """OpenRLHF's call; returns ``{"rewards", "scores", "extra_logs"}`` (failures: see ``on_failure``)."""
        try:
            import torch
        except ImportError as exc:  # pragma: no cover - OpenRLHF always has torch
            raise MissingDependencyError("torch", "models") from exc

        n = len(queries)
        if len(prompts) != n or (labels is not None and len(labels) != n):
            raise ValueError(f"OpenRLHF passed {len(prompts)} prompts and {len(labels or [])} labels for {n} queries")
        samples: list[Sample | None] = []
        unreadable: dict[int, str] = {}
        for i in range(n):
            row = {k: v[i] for k, v in kwargs.items() if isinstance(v, (list, tuple)) and len(v) == n}
            if labels is not None:
                row[self.label_column] = labels[i]
            response = split_response(queries[i], prompts[i], self.end_markers)
            if response is None:
                unreadable[i] = "the query does not contain the end of its prompt; the response cannot be located"
                samples.append(None)
            else:
                samples.append(Sample(prompt=prompts[i], completion=response, row=row))
        engine = self.engine
        refuse_batch_only_rewards(
            engine,
            "OpenRLHF's reward_func (called per sample, or per micro-batch in older versions)",
            "give the reward model to OpenRLHF itself (--reward.model_name_or_path), or score it over the whole "
            "batch in the training step with rewardflow.models.score_training_batch",
        )
        scored = iter(engine.score([s for s in samples if s is not None]))
        results = [RewardResult.error(unreadable[i]) if s is None else next(scored) for i, s in enumerate(samples)]
        log_failures(results, "OpenRLHF reward_func", logger)
        if self.on_failure == "raise":
            for r in results:
                if not r.ok:
                    raise RewardFailedError(r, context="OpenRLHF reward_func")
        names = [c.name for c in engine.components]  # top-level components: the same keys for every sample
        rewards = [r.value if r.ok else self.failure_reward for r in results]
        scores = [r.value if r.ok else math.nan for r in results]
        extra_logs = {
            f"rewardflow/{name}": torch.tensor(
                [_component(r, name) if r.ok else self.failure_reward for r in results], dtype=torch.float32
            )
            for name in names
        }
        extra_logs["rewardflow/failed"] = torch.tensor([0.0 if r.ok else 1.0 for r in results], dtype=torch.float32)
        return {
            "rewards": torch.tensor(rewards, dtype=torch.float32),
            "scores": torch.tensor(scores, dtype=torch.float32),
            "extra_logs": extra_logs,
        }


def _component(result: RewardResult, name: str) -> float:
    value = result.components.get(name)
    return math.nan if value is None else float(value)


def split_response(query: str, prompt: str, end_markers: Sequence[str] = DEFAULT_END_MARKERS) -> str | None:
    """The response part of OpenRLHF's ``query``, without trailing end markers; ``None`` if it cannot be found.

    The query is the prompt OpenRLHF generated from, followed by the response. That prompt is the whole prompt,
    or, when OpenRLHF truncated it to fit ``--data.max_len``, its last tokens. So the response starts where the
    longest end of ``prompt`` that the query starts with stops. A whole prompt found further in (a BOS added in
    front) is cut there first. If neither is found (a tokenizer that does not round-trip the text), the response
    is ``None``, a failure: scoring the whole query would score the prompt too.

    Limit: a truncated prompt whose kept tail repeats earlier in the prompt, followed by a response that
    continues that repetition, can lose the repeated text from the response.
    """
    if not prompt or query.startswith(prompt):
        response = query[len(prompt) :]
    else:
        overlap = _prompt_tail_overlap(query, prompt)
        if prompt in query:  # detokenisation added text in front (a BOS)
            response = query[query.index(prompt) + len(prompt) :]
        elif overlap:  # OpenRLHF kept only the prompt's last tokens
            response = query[overlap:]
        else:
            return None
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


def _prompt_tail_overlap(query: str, prompt: str) -> int:
    """The length of the longest suffix of ``prompt`` that is a prefix of ``query`` (KMP prefix function, O(n))."""
    text = query[: len(prompt)] + "\x00" + prompt
    pi = [0] * len(text)
    for i in range(1, len(text)):
        k = pi[i - 1]
        while k and text[i] != text[k]:
            k = pi[k - 1]
        if text[i] == text[k]:
            k += 1
        pi[i] = k
    return pi[-1]


def make_reward_func(spec: str | PathLike[str] | Any, **options: Any) -> OpenRLHFReward:
    """The ``reward_func`` for your reward file, over a spec path you choose::

    reward_func = make_reward_func("/abs/path/reward_spec.yaml")
    """
    return OpenRLHFReward(spec, **options)


def reward_func(
    queries: Sequence[str], prompts: Sequence[str], labels: Sequence[Any] | None = None, **kwargs: Any
) -> dict[str, Any]:
    """OpenRLHF's ``reward_func`` over the spec in ``$REWARDFLOW_SPEC`` (point ``--reward.remote_url`` at this file)."""
    return OpenRLHFReward(spec_from_env("rewardflow.integrations.openrlhf"))(queries, prompts, labels, **kwargs)
