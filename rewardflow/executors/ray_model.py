"""Model rewards on Ray: a reward model or judge scored in batches inside one Ray actor that holds its GPU.

A learned reward model is a forward pass over the whole batch; on a cluster it belongs on a GPU node, loaded
once and kept there. :class:`RayModel` is a ``batch`` reward whose callable lives in a Ray actor reserving
``num_gpus`` GPUs (and ``num_cpus`` CPUs): the engine calls it once per batch, the call goes to the actor, and the
values come back with the id of the node that computed them in ``info["ray_node_id"]``.

* The model is built inside the actor, from ``factory(*args, **kwargs)`` (a class such as
  :class:`~rewardflow.models.RewardModel`, or an import path ``"pkg.mod:Name"``): weights are read on the node
  that runs it and never travel through the driver. The checkpoint path comes from this constructor, never from
  a row.
* A batch callable (``RewardModel``: ``(prompts, completions)``) gets the whole batch in one call; a per-sample
  callable (a judge: ``(prompt, completion)``, sync or async) is called for each sample inside the actor,
  concurrently when it is async.
* On the engine's timeout the call is abandoned and the actor is killed (a hung forward pass cannot be
  interrupted otherwise); the next batch starts a fresh actor. A dead actor (its node lost) fails that batch with
  ``error`` naming Ray's cause, and the next batch starts a fresh actor. :meth:`RayModel.close` kills the actor.

The GPU path is the CPU path with ``num_gpus=1``: Ray sets ``CUDA_VISIBLE_DEVICES`` in the actor, and a model
built with ``device="cuda"`` (or ``"auto"``) uses it. Tests run it with ``num_gpus=0``.
"""

from __future__ import annotations

import asyncio
import importlib
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rewardflow.errors import ModelError
from rewardflow.executors.ray_actor import NODE_KEY
from rewardflow.executors.ray_pool import connect, import_ray
from rewardflow.reward import Kind, Reward, RewardOptions, check_timeout
from rewardflow.types import Score

__all__ = ["RayModel"]


def _build(factory: Callable[..., Any] | str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
    if isinstance(factory, str):
        module, _, name = factory.partition(":")
        factory = getattr(importlib.import_module(module), name)
    return factory(*args, **kwargs)


class ModelActor:
    """The actor's side: builds the model once, scores batches."""

    def __init__(self, factory: Callable[..., Any] | str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        import ray

        self._model = _build(factory, args, kwargs)
        self._kind = Reward.wrap(self._model).kind
        self._node = ray.get_runtime_context().get_node_id()

    def node(self) -> str:
        return self._node

    def score(self, prompts: list[str], completions: list[str]) -> tuple[list[Any], str]:
        model = self._model
        if self._kind in (Kind.BATCH, Kind.GROUP):
            values = model(prompts, completions)
            if asyncio.iscoroutine(values):
                values = asyncio.run(values)
        elif self._kind is Kind.ASYNC:

            async def _all() -> list[Any]:
                return list(await asyncio.gather(*(model(p, c) for p, c in zip(prompts, completions, strict=True))))

            values = asyncio.run(_all())
        else:
            values = [model(p, c) for p, c in zip(prompts, completions, strict=True)]
        return list(values), self._node


class RayModel:
    """A batch reward whose model runs in one Ray actor with ``num_gpus`` GPUs; see the module docstring.

    Args:
        factory: the model's class or factory (or ``"pkg.mod:Name"``), called in the actor.
        *args, **kwargs: its arguments (a checkpoint path, ``device=``, ...).
        num_gpus / num_cpus: what the actor reserves.
        address: the Ray cluster, as for :class:`~rewardflow.executors.ray_pool.RayPool`.
        name: the component name.
        timeout: the per-batch scoring limit, counted once the actor is up (``None``: ``start_timeout`` serves as
            the hang guard). Starting the actor and building the model are not counted: loading a checkpoint can
            take minutes, and a limit that counted it would kill every fresh actor before its first batch.
        start_timeout: how long the actor may take to start and build the model.
        runtime_env: Ray runtime environment for the actor.
    """

    def __init__(
        self,
        factory: Callable[..., Any] | str,
        /,
        *args: Any,
        num_gpus: float = 0.0,
        num_cpus: float = 1.0,
        address: str | None = None,
        name: str = "ray_model",
        timeout: float | None = None,
        start_timeout: float = 900.0,
        runtime_env: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._ray = import_ray()
        self.factory, self.args, self.kwargs = factory, args, kwargs
        self.num_gpus, self.num_cpus, self.address = num_gpus, num_cpus, address
        self._runtime_env = dict(runtime_env) if runtime_env else None
        check_timeout(timeout, name)
        check_timeout(start_timeout, name)
        self.timeout, self.start_timeout = timeout, start_timeout
        # The engine's own limit only backs up the two below (it would otherwise count the model's loading).
        outer = start_timeout + (timeout if timeout is not None else start_timeout) + 30.0
        self.__rewardflow__ = RewardOptions(name=name, kind=Kind.BATCH, timeout=outer)
        self._lock = threading.Lock()
        self._actor: Any = None
        self._up: Any = None  # the actor that has answered once: its model is built, no need to ask again
        self.started = 0  # actors created so far (a replacement after a timeout or a death adds one)

    def _get_actor(self) -> Any:
        with self._lock:
            if self._actor is None:
                ray = self._ray
                if not ray.is_initialized():
                    connect(ray, self.address, self._runtime_env)
                options: dict[str, Any] = {"num_gpus": self.num_gpus, "num_cpus": self.num_cpus, "max_restarts": 0}
                if self._runtime_env and ray.is_initialized():
                    options["runtime_env"] = self._runtime_env
                cls = ray.remote(ModelActor).options(**options)
                self._actor = cls.remote(self.factory, self.args, self.kwargs)
                self.started += 1
            return self._actor

    async def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> list[Score]:
        actor = self._get_actor()
        try:
            if actor is not self._up:
                try:  # methods queue behind the actor's __init__, so this returns once the model is built
                    await asyncio.wait_for(actor.node.remote(), self.start_timeout)
                except asyncio.TimeoutError:
                    self._drop(actor)
                    raise ModelError(
                        f"the model's Ray actor did not start within {self.start_timeout:g}s (start_timeout)"
                    ) from None
                self._up = actor
            try:
                call = actor.score.remote(list(prompts), list(completions))
                values, node = await asyncio.wait_for(call, self.timeout)
            except asyncio.TimeoutError:  # a hung forward pass cannot be interrupted: kill the actor
                self._drop(actor)
                raise asyncio.TimeoutError(
                    f"timed out after {self.timeout:g}s (the model's Ray actor was killed; the next batch starts a "
                    "fresh one)"
                ) from None
        except asyncio.CancelledError:  # the caller gave up: a possibly hung model is killed
            self._drop(actor)
            raise
        except self._ray.exceptions.RayError as exc:
            self._drop(actor)
            from rewardflow.executors.ray_pool import describe_ray_error

            raise ModelError(f"the model's Ray actor failed: {describe_ray_error(exc)}") from exc
        out = []
        for v in values:
            if isinstance(v, Score):
                out.append(Score(v.value, v.reason, v.components, {**(v.info or {}), NODE_KEY: node}))
            else:
                out.append(Score(v, info={NODE_KEY: node}))
        return out

    def _drop(self, actor: Any) -> None:
        with self._lock:
            if self._actor is actor:
                self._actor = None
            if self._up is actor:
                self._up = None
        try:
            self._ray.kill(actor, no_restart=True)
        except Exception:  # already gone
            pass

    def close(self) -> None:
        """Kill the actor (the model's memory, GPU included, goes with it). Idempotent."""
        with self._lock:
            actor, self._actor = self._actor, None
        if actor is not None:
            self._drop(actor)

    async def aclose(self) -> None:
        self.close()
