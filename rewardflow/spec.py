"""The spec file: one YAML file that declares rewards, weights, timeouts and workers.

The same spec drives the CLI (``rewardflow score --reward spec.yaml``), :meth:`Engine.from_spec` and every
integration. Example::

    workers: 2          # worker processes (or Ray actors) for sync rewards
    executor: process   # or `ray`: run them on a Ray cluster (ray_address: auto)
    timeout: 5          # default per-call timeout, seconds
    rewards:
      - reward: format  # a built-in name, a dataset name or an import path
        weight: 0.1
        gate: true      # a zero here zeroes the total
      - name: accuracy
        reward: gsm8k
        weight: 1.0
        timeout: 5

Validation is strict (unknown keys are errors) and every message names the offending field, e.g.
``spec.yaml: rewards.0.weight: Input should be a valid number``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rewardflow.errors import ConfigError

__all__ = ["RewardSpec", "Spec", "load_spec"]


class RayActorSpec(BaseModel):
    """A model reward's own Ray actor (:class:`~rewardflow.executors.ray_model.RayModel`): what it reserves."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_gpus: float = Field(default=1.0, ge=0, allow_inf_nan=False, description="GPUs the actor reserves.")
    num_cpus: float = Field(default=1.0, ge=0, allow_inf_nan=False, description="CPUs the actor reserves.")
    start_timeout: float = Field(
        default=900.0, gt=0, allow_inf_nan=False, description="Seconds to start the actor and build the model."
    )


class RewardSpec(BaseModel):
    """One component of the spec's ``rewards`` list."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reward: str = Field(description="Built-in name (`rewardflow list`), dataset name, or import path `pkg.mod:fn`.")
    name: str | None = Field(default=None, description="Component name in results; defaults to `reward`.")
    weight: float = Field(
        default=1.0, allow_inf_nan=False, description="Multiplier of this component in the total (finite)."
    )
    gate: bool = Field(default=False, description="If true, a value <= 0 here sets the total to 0.")
    kind: Literal["process", "inline", "async", "batch", "group"] | None = Field(
        default=None, description="How to run it; by default decided from the callable (async def -> async)."
    )
    timeout: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="Per-call timeout in seconds for this reward (finite)."
    )
    concurrency: int | None = Field(default=None, ge=1, description="Max in-flight calls (async/group rewards).")
    params: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments for the reward.")
    ray_actor: RayActorSpec | None = Field(
        default=None,
        description="Build this model reward (`reward_model`, `similarity`, a judge: a class built from `params`) "
        "in one Ray actor that reserves these resources; `timeout` then limits each batch, once the actor is up.",
    )

    @property
    def component_name(self) -> str:
        return self.name or self.reward


class Spec(BaseModel):
    """A whole spec file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rewards: list[RewardSpec] = Field(min_length=1, description="The reward components, at least one.")
    workers: int = Field(default=2, ge=1, description="Worker processes for sync (process-kind) rewards.")
    timeout: float | None = Field(
        default=10.0, gt=0, allow_inf_nan=False, description="Default per-call timeout in seconds (finite)."
    )
    concurrency: int = Field(default=64, ge=1, description="Default in-flight limit for async rewards.")
    retries: int = Field(default=1, ge=0, description="Retries of a sample whose worker process died.")
    worker_threads: int | None = Field(
        default=None, ge=0, description="OpenMP/BLAS/torch threads per worker; default cpus // workers, 0: no cap."
    )
    executor: Literal["process", "ray"] = Field(
        default="process",
        description="Where sync rewards run: `process` (worker processes here) or `ray` (`workers` Ray actors).",
    )
    ray_address: str | None = Field(
        default=None,
        description="Ray cluster for `executor: ray` (`auto`, `ray://host:10001`); unset: start a local one.",
    )
    ray_num_cpus: float = Field(default=1.0, ge=0, allow_inf_nan=False, description="CPUs each Ray actor reserves.")
    ray_num_gpus: float = Field(default=0.0, ge=0, allow_inf_nan=False, description="GPUs each Ray actor reserves.")
    ray_strategy: Literal["SPREAD", "DEFAULT", "placement_group"] = Field(
        default="SPREAD", description="How Ray places the actors: SPREAD over nodes, DEFAULT, or a placement group."
    )
    ray_runtime_env: dict[str, Any] | None = Field(
        default=None, description="Ray runtime environment for the actors (`py_modules`, `working_dir`, `pip`)."
    )
    url: str | list[str] | None = Field(
        default=None,
        description="Reward service URL(s) (`rewardflow serve`): the framework adapters then score there, not locally.",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> Spec:
        names = [r.component_name for r in self.rewards]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"component names must be unique; give `name:` to repeated rewards {dupes}")
        return self

    def ray_options(self) -> dict[str, Any]:
        """The :class:`~rewardflow.executors.ray_pool.RayPool` options this spec sets."""
        out: dict[str, Any] = {"num_cpus": self.ray_num_cpus, "num_gpus": self.ray_num_gpus}
        out["strategy"] = self.ray_strategy
        if self.ray_runtime_env is not None:
            out["runtime_env"] = self.ray_runtime_env
        return out

    def components(self) -> list[Any]:
        """Resolve every reward through the registry into engine components."""
        from rewardflow.engine import Component
        from rewardflow.registry import resolve
        from rewardflow.reward import Reward

        out = []
        for r in self.rewards:
            if r.ray_actor is not None:
                # RayModel carries its own limits (start, then per batch): the engine's only backs them up
                fn, timeout = self._ray_model(r, r.ray_actor), None
            else:
                fn, timeout = resolve(r.reward, r.params or None), r.timeout
            rw = Reward.wrap(fn, name=r.component_name, kind=r.kind, timeout=timeout, concurrency=r.concurrency)
            out.append(Component(r.component_name, rw, r.weight, r.gate))
        return out

    def _ray_model(self, r: RewardSpec, actor: RayActorSpec) -> Any:
        """The reward's class, named by import path, built in a Ray actor; refused for plain reward functions."""
        import inspect

        from rewardflow.executors.ray_model import RayModel
        from rewardflow.registry import default_registry, import_target

        entry = default_registry().lookup(r.reward)
        if entry is not None:
            target = entry.target if entry.factory and isinstance(entry.target, str) else None
        else:
            target = r.reward if ":" in r.reward or "." in r.reward else None
            if target is not None and not inspect.isclass(import_target(target)):
                target = None
        if target is None:
            raise ConfigError(
                f"reward {r.reward!r}: ray_actor applies to model rewards, classes built from params "
                "(reward_model, similarity, a judge, or pkg.mod:Class); run reward functions with `executor: ray`"
            )
        if ":" not in target:
            module, _, name = target.rpartition(".")
            target = f"{module}:{name}"
        return RayModel(
            target,
            num_gpus=actor.num_gpus,
            num_cpus=actor.num_cpus,
            address=self.ray_address,
            name=r.component_name,
            timeout=r.timeout,
            start_timeout=actor.start_timeout,
            runtime_env=self.ray_runtime_env,
            **r.params,
        )


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"{source}: {where}: {err['msg']}")
    return "\n".join(lines)


def parse_spec(data: Any, source: str = "spec") -> Spec:
    """Validate an already-loaded mapping as a :class:`Spec`, raising :class:`ConfigError` with clear lines."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a spec must be a mapping with a `rewards:` list, got {type(data).__name__}")
    try:
        return Spec.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from exc


def load_spec(path: str | Path) -> Spec:
    """Read and validate a YAML spec file."""
    import yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read spec file {str(p)!r}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
    return parse_spec(data, str(p))
