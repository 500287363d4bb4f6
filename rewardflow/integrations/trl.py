"""TRL: a reward function for ``GRPOTrainer(reward_funcs=...)`` that scores the whole batch through an engine.

TRL calls every custom reward function once per generation batch (``GRPOTrainer._calculate_rewards`` in
``trl/trainer/grpo_trainer.py``)::

    reward_func(prompts=prompts, completions=completions, completion_ids=completion_ids_list, **reward_kwargs)

where ``reward_kwargs`` holds every other dataset column as a list, plus trainer objects that are not columns
(``trainer_state``, and in recent versions ``log_extra``, ``log_metric``, ``environments``). It names the function
in its logs by ``__name__``. A sync reward function is called in the training loop, one function after another,
and a plain per-sample Python reward then scores the batch one completion at a time. :func:`trl_reward` returns a
function with that exact convention whose batch goes through a rewardflow engine at once: sync rewards run in
parallel worker processes with killable timeouts, ``async def`` rewards concurrently, batch rewards in one call.

**Failures are ``None``.** TRL's only value for "no reward here" is ``None``: it turns it into NaN and sums the
reward functions with ``nansum``, so a failed sample simply does not count for this function. If every reward
function returns ``None`` for a sample, TRL (since 1.6) treats the sample as unscorable: it is left out of its
group's mean, its advantage is set to 0, and TRL warns ("All reward functions returned None"). Each failure is
logged here with its status and reason. Pass ``on_failure="raise"`` to stop training on the first failure instead
(:class:`~rewardflow.errors.RewardFailedError`).

**Components reach TRL's logs.** TRL (since 1.x) passes reward functions a ``log_metric(name, value)`` hook (a
scalar per batch, averaged into its logged metrics next to ``kl`` and ``reward``) and a ``log_extra(column,
values)`` hook (one value per sample, a column of its completions table). For every batch the function logs
``<name>/<component>`` (the mean over the samples where that component scored) for each component of a
composed reward or spec and ``<name>/failed`` (the fraction of failed samples) through ``log_metric``, and the
per-sample component values through ``log_extra``. Older TRL versions, which pass neither, still work.

**Conversational data.** When prompts/completions are lists of chat messages, the reward sees text: the completion
is the content of the last ``assistant`` message, the prompt the content of the last ``user`` message (text parts
of multimodal content are joined). Rewards that need the whole conversation should be used with TRL directly.

TRL versions that include huggingface/trl#4567 await ``async def`` reward functions concurrently on their own
event loop; ``trl_reward(..., asynchronous=True)`` returns such a function, so the engine's work overlaps with the
trainer's other async reward functions.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from rewardflow.errors import ConfigError, RewardFailedError
from rewardflow.integrations._shared import build_engine, is_spec_path, log_failures
from rewardflow.types import RewardResult, Sample

__all__ = ["message_text", "report_to_trl", "trl_reward", "trl_samples"]

logger = logging.getLogger(__name__)

#: Keyword arguments TRL passes that are trainer objects, not dataset columns.
TRL_EXTRAS = frozenset({"trainer_state", "log_extra", "log_metric", "environments"})


def trl_reward(
    rewards_or_spec: Any,
    *,
    name: str | None = None,
    asynchronous: bool = False,
    on_failure: Literal["none", "raise"] = "none",
    **engine_options: Any,
) -> Callable[..., Any]:
    """A TRL reward function backed by an engine; see the module docstring.

    Args:
        rewards_or_spec: anything :class:`~rewardflow.engine.Engine` accepts (a callable, a registry name, a
            weighted mapping, ...), or a spec (object or YAML path).
        name: the ``__name__`` TRL logs the reward under; by default the reward's or spec file's name.
        asynchronous: return an ``async def`` function, for TRL versions that await reward functions.
        on_failure: ``"none"`` (failed samples get ``None``, logged) or ``"raise"``.
        **engine_options: engine settings (``workers``, ``timeout``, ``kind``, ...).

    The returned function has ``close()`` (kill the workers now; otherwise done when it is garbage-collected or
    at exit) and ``engine`` attributes.
    """
    if on_failure not in ("none", "raise"):
        raise ConfigError(f"on_failure must be 'none' or 'raise', got {on_failure!r}")
    engine = build_engine(rewards_or_spec, **engine_options)
    label = name or _default_name(rewards_or_spec)

    def finish(results: list[RewardResult], hooks: Mapping[str, Any]) -> list[float | None]:
        log_failures(results, f"rewardflow reward {label!r}", logger)
        report_to_trl(results, label, hooks.get("log_metric"), hooks.get("log_extra"))
        if on_failure == "raise":
            for r in results:
                if not r.ok:
                    raise RewardFailedError(r, context=f"TRL reward {label!r}")
        return [r.value if r.ok else None for r in results]

    if asynchronous:

        async def reward_fn(
            prompts: Sequence[Any],
            completions: Sequence[Any],
            completion_ids: Sequence[Any] | None = None,
            **kwargs: Any,
        ) -> list[float | None]:
            return finish(await engine.ascore(trl_samples(prompts, completions, completion_ids, kwargs)), kwargs)

        fn: Callable[..., Any] = reward_fn
    else:

        def reward_fn_sync(
            prompts: Sequence[Any],
            completions: Sequence[Any],
            completion_ids: Sequence[Any] | None = None,
            **kwargs: Any,
        ) -> list[float | None]:
            return finish(engine.score(trl_samples(prompts, completions, completion_ids, kwargs)), kwargs)

        fn = reward_fn_sync
    fn.__name__ = fn.__qualname__ = label
    fn.__doc__ = f"rewardflow reward {label!r} in TRL's reward-function convention."
    fn.engine = engine  # type: ignore[attr-defined]
    fn.close = engine.close  # type: ignore[attr-defined]
    weakref.finalize(fn, engine.close)
    return fn


def report_to_trl(
    results: Sequence[RewardResult],
    label: str,
    log_metric: Callable[[str, float], Any] | None,
    log_extra: Callable[[str, list[Any]], Any] | None = None,
) -> None:
    """Send the batch's components and failure rate to TRL's ``log_metric``/``log_extra`` hooks (when given).

    A metric is the mean over the samples where the component has a value; a component that scored nowhere in the
    batch is not logged (a 0 would look like a real score). ``log_extra`` gets one value per sample, ``None`` where
    the component did not score.
    """
    if not results or (log_metric is None and log_extra is None):
        return
    names: list[str] = []
    for r in results:
        names.extend(k for k in r.components if k not in names)
    for key in names:
        values = [r.components.get(key) for r in results]
        scored = [float(v) for v in values if v is not None]
        if log_metric is not None and scored:
            log_metric(f"{label}/{key}", sum(scored) / len(scored))
        if log_extra is not None:
            log_extra(f"{label}/{key}", values)
    if log_metric is not None:
        log_metric(f"{label}/failed", sum(1 for r in results if not r.ok) / len(results))


def trl_samples(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    completion_ids: Sequence[Any] | None,
    kwargs: Mapping[str, Any],
) -> list[Sample]:
    """One :class:`Sample` per completion from TRL's arguments; every list-valued keyword of the batch's length is
    a dataset column, trainer objects (``trainer_state``, ...) are ignored."""
    n = len(completions)
    if len(prompts) != n:
        raise ValueError(f"TRL passed {len(prompts)} prompts for {n} completions")
    if completion_ids is not None and len(completion_ids) != n:
        raise ValueError(f"TRL passed {len(completion_ids)} completion_ids for {n} completions")
    columns: dict[str, Sequence[Any]] = {}
    for key, value in kwargs.items():
        if key in TRL_EXTRAS:
            continue
        if isinstance(value, (list, tuple)) and len(value) == n:
            columns[key] = value
        else:
            logger.debug("ignoring keyword %r: not a column of %d values", key, n)
    samples = []
    for i in range(n):
        ids = None if completion_ids is None else completion_ids[i]
        samples.append(
            Sample(
                prompt=message_text(prompts[i], "user"),
                completion=message_text(completions[i], "assistant"),
                completion_ids=None if ids is None else [int(t) for t in ids],
                row={key: column[i] for key, column in columns.items()},
            )
        )
    return samples


def message_text(value: Any, role: str) -> str:
    """Text of a prompt or completion: a string as is; for a list of chat messages, the content of the last
    message with ``role`` (text parts of multimodal content joined); ``""`` when there is none."""
    if isinstance(value, str):
        return value
    if isinstance(value, Sequence) and all(isinstance(m, Mapping) for m in value):
        for message in reversed(value):
            if message.get("role") == role:
                return _content_text(message.get("content"))
        return ""
    return "" if value is None else str(value)


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):  # [{"type": "text", "text": ...}, {"type": "image"}, ...]
        return "".join(
            str(part.get("text", "")) for part in content if isinstance(part, Mapping) and part.get("type") == "text"
        )
    return str(content)


def _default_name(target: Any) -> str:
    if is_spec_path(target):
        return Path(target).stem
    if isinstance(target, str):
        return target.replace(":", ".").rsplit(".", 1)[-1]
    named = getattr(target, "__name__", None)
    return named if isinstance(named, str) else "rewardflow"
