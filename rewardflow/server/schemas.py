"""Request and response bodies of the three dialects, as pydantic models (they are also the OpenAPI schema).

* native ``POST /v1/score``: :class:`ScoreRequest` -> :class:`ScoreResponse` (one typed result per sample);
* OpenRLHF ``POST /get_reward``: :class:`OpenRLHFRequest` -> :class:`OpenRLHFResponse`, the format of
  ``SingleTurnAgentExecutor._fetch_rewards_via_http`` in ``openrlhf/utils/agent.py`` and of ``serve_rm.py``;
* slime ``POST /rm``: :class:`SlimeRequest` -> a bare number, or :class:`SlimeDictResponse` with ``?format=dict``
  (``slime/rollout/rm_hub/__init__.py``: ``remote_rm`` posts ``{"prompt", "response", "label"}`` and uses the
  JSON reply as the reward, read with ``--reward-key`` when it is a dict).

Rows keep every extra key: for the native dialect they become row columns (``answer`` ...), as in the CLI.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, model_validator

__all__ = [
    "ComponentOut",
    "ComponentsResponse",
    "ErrorResponse",
    "FailedSample",
    "OpenRLHFRequest",
    "OpenRLHFResponse",
    "ResultOut",
    "SampleIn",
    "ScoreRequest",
    "ScoreResponse",
    "SlimeDictResponse",
    "SlimeRequest",
]


class SampleIn(BaseModel):
    """One rollout; every key other than the named ones is a row column the rewards may read (``answer``)."""

    model_config = ConfigDict(extra="allow")

    completion: str = Field(description="The generated text to score.")
    prompt: str = Field(default="", description="The prompt it answers.")
    prompt_ids: list[StrictInt] | None = Field(default=None, description="Prompt token ids, if a reward needs them.")
    completion_ids: list[StrictInt] | None = Field(default=None, description="Completion token ids.")
    group: str | None = Field(default=None, description="Group id for group rewards (default: same prompt).")


class ScoreRequest(BaseModel):
    """A batch of samples; the reply holds one result per sample, in order."""

    model_config = ConfigDict(extra="forbid")

    samples: list[SampleIn] = Field(description="Rollouts to score; may be empty.")
    timeout: StrictFloat | None = Field(  # strict: JSON `true` is not a deadline of 1 s
        default=None, gt=0, description="Deadline for this request in seconds (at most the server's)."
    )


class ResultOut(BaseModel):
    """The typed result of one sample: a failure is never a score."""

    reward: float | None = Field(description="The value; null unless status is ok.")
    status: Literal["ok", "error", "timeout"]
    reason: str | None = Field(default=None, description="Why it failed (or why an ok value is 0).")
    components: dict[str, float | None] = Field(default_factory=dict, description="Per-component values.")
    latency_ms: float = Field(description="Wall time of the reward calls, queueing excluded.")
    info: dict[str, Any] | None = Field(default=None, description="Accounting such as judge token usage.")


class ComponentOut(BaseModel):
    """One reward of the service's spec: its key in ``components`` and how it is combined into the total."""

    name: str = Field(description="The component's name: its key in every result's `components`.")
    weight: float = Field(description="Weight in the total (`sum(weight * value)`).")
    gate: bool = Field(description="A value <= 0 here sets the total to 0.")
    kind: Literal["process", "inline", "async", "batch", "group"] = Field(description="How the reward runs.")


class ComponentsResponse(BaseModel):
    """``GET /v1/components``: the rewards behind ``/v1/score``, in the spec's order."""

    components: list[ComponentOut]


class ScoreResponse(BaseModel):
    results: list[ResultOut]
    components: list[ComponentOut] = Field(
        default_factory=list,
        description="The service's components (as `GET /v1/components`), listed only when the request has an "
        "`X-Rewardflow-Components` header.",
    )


class OpenRLHFRequest(BaseModel):
    """OpenRLHF's ``--remote_rm_url`` body. Lists may be empty (the other servers' shard of one sample)."""

    model_config = ConfigDict(extra="allow")

    query: list[str] = Field(description="Prompt + response, decoded with special tokens.")
    prompts: list[str] | None = Field(default=None, description="The prompts (removed from the front of query).")
    labels: list[Any] | None = Field(default=None, description="The `--label_key` column; reaches the rewards.")

    @model_validator(mode="after")
    def _same_lengths(self) -> OpenRLHFRequest:
        n = len(self.query)
        for name in ("prompts", "labels"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"`{name}` has {len(value)} items for {n} in `query`")
        return self


class OpenRLHFResponse(BaseModel):
    """What OpenRLHF reads: ``rewards``, ``scores`` and ``extra_logs`` (one list per logged name)."""

    rewards: list[float]
    scores: list[float]
    extra_logs: dict[str, list[float]] = Field(
        description="`rewardflow/<component>` per component, and `rewardflow/failed` (1.0 where "
        "`failure_value` replaced a failed sample)."
    )


class SlimeRequest(BaseModel):
    """slime's ``--rm-url`` body; extra keys (``metadata`` ...) become row columns."""

    model_config = ConfigDict(extra="allow")

    prompt: str | list[Any] | None = Field(default="", description="The prompt (chat lists are rendered as JSON).")
    response: str = Field(description="The generated response.")
    label: Any = Field(default=None, description="The reference answer; reaches the rewards as the label column.")


class SlimeDictResponse(BaseModel):
    reward: float
    status: Literal["ok", "error", "timeout"]
    reason: str | None = None
    components: dict[str, float | None] = Field(default_factory=dict)
    latency_ms: float
    failed: bool = Field(description="True when `failure_value` stands in for a failed sample.")


class FailedSample(BaseModel):
    index: int
    status: Literal["error", "timeout"]
    reason: str | None


class ErrorResponse(BaseModel):
    """Every non-2xx reply but 422: a one-line ``error``; 424 also lists the failed samples."""

    error: str
    failed: list[FailedSample] | None = None
