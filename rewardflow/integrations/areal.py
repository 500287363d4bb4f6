"""AReaL: a drop-in for ``areal.api.reward_api.AsyncRewardWrapper`` backed by a rewardflow engine.

AReaL workflows build ``AsyncRewardWrapper(reward_fn)`` once per workflow instance and await it once per rollout
(``areal/workflow/rlvr.py`` and the agent workflows)::

    reward = await self.async_reward_fn(prompt_str, completions_str, resp.input_tokens, resp.output_tokens, **data)

AReaL's own wrapper runs the reward in a ``ProcessPoolExecutor`` under ``asyncio.wait_for``: on a timeout the
call is abandoned but the worker keeps running it (a hung sympy call occupies that worker for good), timeouts
and exceptions are retried ``max_retries`` times, and the last timeout returns ``0``, a failure scored as a wrong
answer. This wrapper keeps the constructor and the call exactly, and changes what happens underneath:

* the reward runs in rewardflow's process pool; at ``timeout_seconds`` the worker running it is killed and
  replaced, so no hung worker is left behind;
* a failure (exception, timeout, invalid return value) raises :class:`~rewardflow.errors.RewardFailedError`
  carrying the :class:`~rewardflow.types.RewardResult`; it is never returned as 0. In AReaL 1.0.4 the error
  leaves ``arun_episode``; with ``n_samples > 1`` ``GroupedRolloutWorkflow`` gathers the group's episodes
  without ``return_exceptions``, so the error ends the *whole group*: ``WorkflowExecutor`` logs
  ``Workflow execution failed: ...`` at ERROR, counts ``rollout/rejected`` and returns ``None`` for the task
  (``areal/infra/workflow_executor.py``), and ``prepare_batch`` draws another prompt. Rejecting only the failed
  trajectory would be worse: AReaL normalises rewards in slices of a fixed ``group_size``, so a short group
  would shift every later group. ``await wrapper.score(...)`` returns the typed result for workflows that want
  to decide themselves;
* ``max_retries`` now means retries of a sample whose *worker process died* (segfault, OOM killer); timeouts and
  exceptions are not retried, since they would fail the same way again;
* a model reward (:class:`~rewardflow.models.RewardModel`, ``similarity``) is refused with a
  :class:`~rewardflow.errors.ConfigError`: this wrapper runs once per rollout, and a reward model belongs in the
  training step over the whole batch (:func:`rewardflow.models.score_training_batch`), as AReaL's maintainers
  advise;
* engines (and their workers) are shared by every wrapper with the same configuration in a process and closed
  at exit, like AReaL's executors shared per ``max_workers``;
* positional arguments bind to the wrapped function's own parameters, so AReaL's agent workflows, which call
  ``await wrapper(completion_text, answer)`` for ``math_reward_fn(completions, answer)``, work; a spec or a
  reward name (no signature of its own) takes AReaL's order ``prompt, completions, prompt_ids, completion_ids``.

AReaL's built-in workflows build AReaL's own wrapper; :mod:`rewardflow.integrations.areal_workflows` has
subclasses that use this one and can be named by string path (single-controller mode).

The calling event loop is the caller's (``Engine.ascore_one`` awaits on whatever loop AReaL runs). Not covered:
rewards returning a ``dict`` (AReaL passes those through); return a :class:`~rewardflow.types.Score` with
``components`` instead.
"""

from __future__ import annotations

import inspect
import os
import pickle
from collections.abc import Callable, Iterable
from typing import Any

from rewardflow.engine import Engine
from rewardflow.errors import ConfigError, RewardFailedError
from rewardflow.integrations._shared import build_engine, engine_key, refuse_batch_only_rewards, shared_engines
from rewardflow.reward import Kind
from rewardflow.types import RewardResult, Sample

__all__ = ["AsyncRewardWrapper", "areal_sample", "default_max_workers", "positional_names", "workers_for"]

_ADAPTER = "areal"
# AReaL's positional order, and the keyword names that are sample fields rather than dataset columns.
_POSITIONAL = ("prompt", "completions", "prompt_ids", "completion_ids")
_COMPLETION_NAMES = ("completions", "completion", "response", "solution_str")
_ACCELERATORS = ("nvidia", "davinci")


def default_max_workers() -> int:
    """AReaL's default worker count for this machine; see :func:`workers_for`."""
    try:
        names = os.listdir("/dev")
    except OSError:
        names = []
    return workers_for(os.cpu_count() or 1, names)


def workers_for(cpus: int, dev_names: Iterable[str]) -> int:
    """AReaL's heuristic: CPU cores shared among the node's accelerators, halved, at least one.

    Accelerators are counted from ``/dev`` entries ``nvidiaN`` or ``davinciN`` (no CUDA initialisation); when
    there are none, eight are assumed, as AReaL does, to stay conservative on a shared node.
    """
    names = list(dev_names)
    devices = 0
    for prefix in _ACCELERATORS:
        devices = sum(1 for n in names if n.startswith(prefix) and n[len(prefix) :].isdigit())
        if devices:
            break
    return max(cpus // (devices or 8) // 2, 1)


class AsyncRewardWrapper:
    """Await a reward the way AReaL does, with killable timeouts and failures that are never a score.

    Args:
        reward_fn: the reward: any callable with AReaL's signature (or any rewardflow reward), an import path
            string, or a rewardflow spec (object or YAML path). Sync rewards run in worker processes, so they must
            be importable module-level functions (AReaL's requirement too); ``async def`` rewards are awaited.
        timeout_seconds: per-call timeout, counted from the start of the call; the worker is killed at the
            deadline. ``None`` disables it.
        max_workers: worker processes; ``None`` uses AReaL's heuristic (:func:`default_max_workers`).
        max_retries: retries of a sample whose worker process died. Unlike AReaL, timeouts and exceptions are
            not retried.
        on_result: called with every :class:`RewardResult` before the call returns or raises (for logging its
            components and failures; :mod:`rewardflow.integrations.areal_workflows` sends them to AReaL's stats).
    """

    def __init__(
        self,
        reward_fn: Callable[..., Any] | Any,
        timeout_seconds: float | None = 15,
        max_workers: int | None = None,
        max_retries: int = 3,
        on_result: Callable[[RewardResult], None] | None = None,
    ) -> None:
        self.reward_fn = reward_fn
        self.on_result = on_result
        self.timeout_seconds = timeout_seconds
        self.max_workers = max_workers if max_workers is not None else default_max_workers()
        self.max_retries = max_retries
        self._options: dict[str, Any] = {
            "workers": self.max_workers,
            "timeout": timeout_seconds,
            "retries": max_retries,
        }
        self._key = (_ADAPTER, *engine_key(reward_fn, self._options))
        self._positional = positional_names(reward_fn)
        _check_picklable(self.engine)  # fail here, not on every rollout, for a lambda or a local function
        refuse_batch_only_rewards(
            self.engine,
            "AsyncRewardWrapper",
            "score it over the whole batch in the training step with rewardflow.models.score_training_batch "
            "(between rollout and advantage computation) and keep rule and judge rewards in this wrapper",
        )

    @property
    def engine(self) -> Engine:
        """The engine shared by every wrapper with this configuration in this process."""
        return shared_engines.get(self._key, lambda: build_engine(self.reward_fn, **self._options), self.reward_fn)

    async def __call__(self, *args: Any, **kwargs: Any) -> float:
        """AReaL's call: ``await wrapper(prompt, completions, prompt_ids, completion_ids, **data) -> float``.

        Raises :class:`RewardFailedError` when the sample could not be scored.
        """
        result = await self.score(*args, **kwargs)
        if self.on_result is not None:
            self.on_result(result)
        if not result.ok:
            raise RewardFailedError(result, context=f"AsyncRewardWrapper({_describe(self.reward_fn)})")
        return result.value  # type: ignore[return-value]

    async def score(self, *args: Any, **kwargs: Any) -> RewardResult:
        """Like the call, but return the typed result (value, status, reason, components) instead of raising."""
        return await self.engine.ascore_one(areal_sample(args, kwargs, self._positional))

    @classmethod
    def close_all(cls) -> None:
        """Close the engines of every AReaL wrapper in this process (also done at exit)."""
        shared_engines.close_all(_ADAPTER)

    def __repr__(self) -> str:
        return (
            f"AsyncRewardWrapper({_describe(self.reward_fn)}, timeout_seconds={self.timeout_seconds}, "
            f"max_workers={self.max_workers}, max_retries={self.max_retries})"
        )


def positional_names(reward_fn: Any) -> tuple[str, ...]:
    """The names that positional arguments bind to: the function's own positional parameters, else AReaL's order.

    A plain function or callable object has a signature of its own; rewards called positionally by AReaL's agent
    workflows (``math_reward_fn(completions, answer)``) must see their arguments under their own names. A spec,
    a reward name or an import path string has no signature here and keeps AReaL's order.
    """
    if isinstance(reward_fn, (str, os.PathLike)) or not callable(reward_fn):
        return _POSITIONAL
    try:
        params = inspect.signature(reward_fn).parameters.values()
    except (TypeError, ValueError):  # builtins and some C callables have no signature
        return _POSITIONAL
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return _POSITIONAL
    names = tuple(p.name for p in params if p.kind in kinds)
    return names or _POSITIONAL


def areal_sample(args: tuple[Any, ...], kwargs: dict[str, Any], positional: tuple[str, ...] = _POSITIONAL) -> Sample:
    """Turn AReaL's call arguments into a :class:`Sample` that binds back to the reward's parameters unchanged.

    Positional arguments take the names in ``positional`` (the reward's own, see :func:`positional_names`) when
    there are no more of them than it has, else AReaL's ``prompt, completions, prompt_ids, completion_ids``: the
    RLVR workflow's four positionals reach a by-name reward such as ``exact(completion, answer)``, and an agent
    workflow's ``(completion_text, answer)`` reaches ``math_reward_fn(completions, answer)``. They are then
    treated as keywords: ``prompt``, ``prompt_ids``, ``completion_ids`` and the completion (``completions`` or
    another completion alias) become sample fields, so a reward parameter of that name receives exactly what
    AReaL passed. Every other name is a dataset column (``**data``).
    """
    names = positional if len(args) <= len(positional) else _POSITIONAL
    if len(args) > len(names):
        raise TypeError(f"AReaL rewards take at most {len(names)} positional arguments, got {len(args)}")
    row = dict(kwargs)
    for name, value in zip(names, args, strict=False):
        if name in row:
            raise TypeError(f"got multiple values for argument {name!r}")
        row[name] = value
    fields: dict[str, Any] = {}
    for name in ("prompt", "prompt_ids", "completion_ids"):
        if name in row:
            fields[name] = row.pop(name)
    given = [name for name in _COMPLETION_NAMES if name in row]
    if len(given) > 1:
        raise TypeError(f"got the completion more than once ({', '.join(given)})")
    if given:
        fields["completions"] = row.pop(given[0])
    group = row.get("group")  # stays a column too, so `**data` receives it unchanged
    prompt = fields.get("prompt")
    completion = fields.get("completions")
    return Sample(
        prompt="" if prompt is None else prompt,
        completion="" if completion is None else completion,
        prompt_ids=fields.get("prompt_ids"),
        completion_ids=fields.get("completion_ids"),
        group=None if group is None else str(group),
        row=row,
    )


def _check_picklable(engine: Engine) -> None:
    for comp in engine.components:
        if comp.reward.kind is not Kind.PROCESS:
            continue
        try:
            pickle.dumps(comp.reward.fn)
        except Exception as exc:
            raise ConfigError(
                f"reward {comp.name!r} cannot be sent to worker processes ({type(exc).__name__}: {exc}); "
                "define it as a module-level function, as AReaL requires"
            ) from exc


def _describe(reward_fn: Any) -> str:
    return getattr(reward_fn, "__qualname__", None) or getattr(reward_fn, "__name__", None) or repr(reward_fn)
