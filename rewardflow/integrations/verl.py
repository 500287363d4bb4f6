"""verl: ``compute_score`` functions for verl's custom reward function, backed by a spec file.

verl loads a custom reward function from a Python file (or ``pkg://module``) named in its configuration and
calls it with keywords, merging ``reward_kwargs`` into them (``get_custom_reward_fn`` in
``verl/trainer/ppo/reward.py``). In verl 0.9 the keys are ``reward.custom_reward_function.path/name/
reward_kwargs``; the top-level ``custom_reward_function.*`` keys of older versions are still accepted by
``main_ppo`` but ignored, so verl silently trains on its built-in scorer.

* verl's reward loop (the only reward path since verl 0.8: managers ``naive``, ``dapo``, ...) calls
  ``compute_score(data_source=..., solution_str=..., ground_truth=..., extra_info=...)`` once per sample and
  accepts a float or a dict with a ``"score"`` key whose other keys become ``reward_extra_info``; it awaits the
  function when it is ``async def`` and may add ``reward_router_address``/``reward_model_tokenizer`` keywords;
* the ``batch`` form ``compute_score(data_sources=..., solution_strs=..., ground_truths=..., extra_infos=...)``
  is the convention of the ``batch`` reward manager of verl < 0.8. verl 0.8+ has no such manager: to score whole
  batches (model rewards, batch rewards) use the reward-loop manager in
  :mod:`rewardflow.integrations.verl_manager`.

verl runs those functions with no timeout, so one hung sympy call stalls the training step. Here each call goes
through a rewardflow engine (killable timeouts, worker processes, composition); the batch form scores the whole
batch in parallel. The spec comes from configuration only, never from a data row: ``$REWARDFLOW_SPEC`` for the
module-level functions, or the path given to :func:`make_compute_score` in your own reward file.

**A failure raises** :class:`~rewardflow.errors.RewardFailedError`: verl has no "no reward" value (the score goes
straight into the reward tensor), so the step stops with the reason instead of training on an invented number.
To keep training, pass ``failure_score=`` explicitly: failed samples then get that value *and* a
``rewardflow_failed`` flag of 1.0 in the returned dict, so every substitution is visible in verl's logged
metrics. rewardflow never picks that number for you.

``details=True`` returns dicts: ``score``, ``rewardflow_failed`` and one key per component (NaN where a
component failed), the same keys for every sample as verl requires.

A spec with a model reward (:class:`~rewardflow.models.RewardModel`, ``similarity``) is refused by the
per-sample forms with a :class:`~rewardflow.errors.ConfigError` rather than run one forward pass per completion;
:class:`~rewardflow.integrations.verl_manager.RewardflowRewardManager` scores it on whole batches.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from os import PathLike
from typing import Any

from rewardflow.engine import Engine
from rewardflow.errors import RewardFailedError
from rewardflow.integrations._shared import (
    build_engine,
    engine_key,
    refuse_batch_only_rewards,
    shared_engines,
    spec_from_env,
)
from rewardflow.types import RewardResult, Sample

__all__ = [
    "VerlReward",
    "compute_score",
    "compute_score_async",
    "compute_score_batch",
    "make_compute_score",
]

_ADAPTER = "verl"
#: Keywords verl's reward loop adds for its own reward-model plumbing; never passed on to rewards.
VERL_EXTRAS = frozenset({"reward_router_address", "reward_model_tokenizer"})


class VerlReward:
    """verl's reward-function forms over one spec. Holds only configuration, so it pickles (Ray) cheaply; the
    engine is looked up per process in the shared table.

    Args:
        spec: path of a spec YAML file (or a :class:`~rewardflow.spec.Spec`).
        details: return dicts with per-component values instead of floats.
        failure_score: opt-in value for failed samples (implies dict results with ``rewardflow_failed``); by
            default a failure raises :class:`RewardFailedError`.
        **engine_options: overrides of the spec's ``workers``/``timeout``/``retries``/``concurrency``.
    """

    def __init__(
        self,
        spec: str | PathLike[str] | Any,
        *,
        details: bool = False,
        failure_score: float | None = None,
        **engine_options: Any,
    ) -> None:
        self.spec = spec
        self.failure_score = None if failure_score is None else float(failure_score)
        self.details = details or failure_score is not None
        self.engine_options = engine_options
        self._key = (_ADAPTER, *engine_key(spec, engine_options))

    @property
    def engine(self) -> Engine:
        return shared_engines.get(self._key, lambda: build_engine(self.spec, **self.engine_options))

    def compute_score(
        self, data_source: Any, solution_str: str, ground_truth: Any, extra_info: Any = None, **kwargs: Any
    ) -> float | dict[str, float]:
        """verl's per-sample form (sync)."""
        sample = verl_sample(data_source, solution_str, ground_truth, extra_info, kwargs)
        return self._finish(self._per_sample_engine().score([sample])[0], data_source)

    async def compute_score_async(
        self, data_source: Any, solution_str: str, ground_truth: Any, extra_info: Any = None, **kwargs: Any
    ) -> float | dict[str, float]:
        """verl's per-sample form, awaited on the reward loop's event loop."""
        sample = verl_sample(data_source, solution_str, ground_truth, extra_info, kwargs)
        return self._finish(await self._per_sample_engine().ascore_one(sample), data_source)

    def compute_score_batch(
        self,
        data_sources: Sequence[Any],
        solution_strs: Sequence[str],
        ground_truths: Sequence[Any],
        extra_infos: Sequence[Any] | None = None,
        **kwargs: Any,
    ) -> list[float | dict[str, float]]:
        """The ``batch`` form (verl < 0.8's ``batch`` reward manager, or your own code): the whole batch at once,
        scored in parallel."""
        n = len(solution_strs)
        if len(data_sources) != n or len(ground_truths) != n:
            raise ValueError(
                f"verl passed {len(data_sources)} data_sources and {len(ground_truths)} ground_truths "
                f"for {n} solution_strs"
            )
        extras = [None] * n if extra_infos is None else list(extra_infos)
        samples = [
            verl_sample(data_sources[i], solution_strs[i], ground_truths[i], extras[i], kwargs) for i in range(n)
        ]
        results = self.engine.score(samples)
        return [self._finish(r, data_sources[i]) for i, r in enumerate(results)]

    def _per_sample_engine(self) -> Engine:
        engine = self.engine
        refuse_batch_only_rewards(
            engine,
            "verl's per-sample compute_score",
            "use the reward-loop manager rewardflow.integrations.verl_manager.RewardflowRewardManager "
            "(reward.reward_manager.source=importlib), which scores whole batches",
        )
        return engine

    def _finish(self, result: RewardResult, data_source: Any) -> float | dict[str, float]:
        if not result.ok and self.failure_score is None:
            raise RewardFailedError(result, context=f"verl compute_score (data_source={data_source!r})")
        value = result.value if result.ok else self.failure_score
        if not self.details:
            return value  # type: ignore[return-value]
        out: dict[str, float] = {"score": value, "rewardflow_failed": 0.0 if result.ok else 1.0}  # type: ignore[dict-item]
        for name in self._component_names:  # top-level components only: the same keys for every sample
            component = result.components.get(name)
            out.setdefault(name, math.nan if component is None else component)
        return out

    @property
    def _component_names(self) -> list[str]:
        return [c.name for c in self.engine.components]


def verl_sample(
    data_source: Any, solution_str: str, ground_truth: Any, extra_info: Any, kwargs: dict[str, Any]
) -> Sample:
    """A :class:`Sample` whose row gives a reward verl's names back: ``data_source``, ``ground_truth``,
    ``extra_info`` (``solution_str`` is the completion), plus ``reward_kwargs`` from verl's configuration."""
    row = {k: v for k, v in kwargs.items() if k not in VERL_EXTRAS}
    row.update(data_source=_plain(data_source), ground_truth=_plain(ground_truth), extra_info=extra_info)
    return Sample(prompt="", completion=str(solution_str), row=row)


def _plain(value: Any) -> Any:
    # verl hands numpy scalars from its non-tensor batch (np.str_); plain Python values pickle and compare as expected
    item = getattr(value, "item", None)
    if getattr(value, "ndim", None) == 0 and callable(item):
        return item()
    return value


def make_compute_score(
    spec: str | PathLike[str] | Any,
    *,
    form: str = "sample",
    details: bool = False,
    failure_score: float | None = None,
    **engine_options: Any,
) -> Any:
    """The function to name in ``reward.custom_reward_function.name``, for a spec path you choose.

    ``form`` is ``"sample"`` (verl's reward loop runs it in a thread), ``"async"`` (the reward loop awaits it) or
    ``"batch"`` (verl < 0.8's ``batch`` manager). Use it in your reward file::

        compute_score = make_compute_score("/abs/path/reward_spec.yaml")
    """
    reward = VerlReward(spec, details=details, failure_score=failure_score, **engine_options)
    forms = {"sample": reward.compute_score, "batch": reward.compute_score_batch, "async": reward.compute_score_async}
    if form not in forms:
        raise ValueError(f"form must be one of {sorted(forms)}, got {form!r}")
    return forms[form]


def _from_env() -> VerlReward:
    return VerlReward(spec_from_env("rewardflow.integrations.verl"))


def compute_score(
    data_source: Any, solution_str: str, ground_truth: Any, extra_info: Any = None, **kwargs: Any
) -> float | dict[str, float]:
    """Per-sample form over the spec in ``$REWARDFLOW_SPEC``."""
    return _from_env().compute_score(data_source, solution_str, ground_truth, extra_info, **kwargs)


async def compute_score_async(
    data_source: Any, solution_str: str, ground_truth: Any, extra_info: Any = None, **kwargs: Any
) -> float | dict[str, float]:
    """Async per-sample form over the spec in ``$REWARDFLOW_SPEC`` (verl's reward loop awaits it)."""
    return await _from_env().compute_score_async(data_source, solution_str, ground_truth, extra_info, **kwargs)


def compute_score_batch(
    data_sources: Sequence[Any],
    solution_strs: Sequence[str],
    ground_truths: Sequence[Any],
    extra_infos: Sequence[Any] | None = None,
    **kwargs: Any,
) -> list[float | dict[str, float]]:
    """Batch form over the spec in ``$REWARDFLOW_SPEC`` (verl < 0.8's ``reward_model.reward_manager=batch``)."""
    return _from_env().compute_score_batch(data_sources, solution_strs, ground_truths, extra_infos, **kwargs)
