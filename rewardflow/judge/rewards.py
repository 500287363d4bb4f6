"""The judge rewards: pointwise score, reference check, weighted rubric and group comparison.

Each is a callable object with an ``async def __call__`` built by a factory (``judge_score(**params)``, ...) that
the registry calls with a spec's ``params``. The objects carry ``__rewardflow__`` options, so the engine awaits
them natively (kind ``async``, or ``group`` for :class:`JudgeGroup`) with a concurrency limit equal to the judge's
and a wall-clock timeout that covers the judge's own retries (:attr:`ClientConfig.call_budget` + 30 s).

What they return: a :class:`~rewardflow.types.Score` in [0, 1] with the judge's reason, per-criterion
``components`` (rubric) and ``info={"judge": {...usage...}}``. What they raise: a
:class:`~rewardflow.errors.JudgeError` subclass carrying the same ``info`` (the engine turns it into an error
result that keeps the usage); an unparseable reply is a :class:`~rewardflow.errors.JudgeParseError` whose message
quotes the raw reply, which is also kept in ``info["judge"]["raw"]``. Never a 0 for a failure.

Not covered: pairwise comparison against a fixed baseline, multi-turn conversations as input (flatten them into
``prompt`` first), and judges that need images.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rewardflow.errors import ConfigError, InputError, JudgeError, JudgeParseError
from rewardflow.judge import parse
from rewardflow.judge.client import JudgeClient, JudgeRequest, shared_client
from rewardflow.judge.config import ClientConfig
from rewardflow.judge.templates import Template, load_template
from rewardflow.reward import Kind, RewardOptions
from rewardflow.types import Score

__all__ = [
    "JudgeGroup",
    "JudgeParams",
    "JudgeReference",
    "JudgeRubric",
    "JudgeScore",
    "judge_group",
    "judge_reference",
    "judge_rubric",
    "judge_score",
]

REFERENCE_COLUMNS = ("reference", "answer")
_RAW_LIMIT = 2000  # characters of an unparseable reply kept in info


class JudgeParams(BaseModel):
    """Parameters shared by every judge reward (the spec's ``params``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str = Field(description="API root of an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1.")
    model: str = Field(description="Model name as the server knows it (vLLM: the served model name).")
    api_key: str | None = Field(default=None, repr=False, description="API key; prefer api_key_env.")
    api_key_env: str | None = Field(default=None, description="Environment variable holding the API key.")
    template: str | None = Field(default=None, description="builtin:<name>, a template file path, or inline text.")
    template_format: Literal["auto", "jinja", "format"] = Field(default="auto", description="Template syntax.")
    system: str | None = Field(default=None, description="Optional system message sent before the prompt.")
    temperature: float = Field(default=0.0, ge=0, description="Sampling temperature of the judge.")
    max_tokens: int | None = Field(
        default=None,
        ge=1,
        description="Completion budget per call; default: the longest reply the output schema allows plus 64 "
        "(1024 when the schema is not sent). Set it for judges that reason before answering.",
    )
    structured: Literal["auto"] | bool = Field(
        default="auto", description="Send a JSON schema as response_format; auto: drop it if the server says 400."
    )
    extra_body: dict[str, Any] = Field(default_factory=dict, description="Extra request fields (vLLM/SGLang).")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra HTTP headers.")
    concurrency: int = Field(default=64, ge=1, description="Max requests in flight to this endpoint.")
    adaptive: bool = Field(
        default=True,
        description="Adapt the in-flight limit (up to concurrency) to the server: AIMD on timeouts, "
        "429/503 and latency.",
    )
    server: Literal["unknown", "vllm", "sglang", "llama.cpp", "openai"] = Field(
        default="unknown", description="What serves the judge; decides whether a timed-out attempt is retried."
    )
    retry_timeouts: bool | None = Field(
        default=None,
        description="Retry an attempt that timed out; default: only for servers that abort abandoned requests "
        "(vllm, sglang, openai).",
    )
    rpm: float | None = Field(default=None, gt=0, description="Requests-per-minute limit (token bucket).")
    tpm: float | None = Field(default=None, gt=0, description="Tokens-per-minute limit (estimated, then actual).")
    timeout: float = Field(default=30.0, gt=0, description="Seconds per HTTP attempt.")
    max_retries: int = Field(default=3, ge=0, le=20, description="Retries on connection errors, 429 and 5xx.")
    backoff: float = Field(default=0.5, ge=0, description="First retry delay in seconds (doubles, with jitter).")
    backoff_max: float = Field(default=8.0, ge=0, description="Cap on one retry delay.")
    max_retry_after: float = Field(default=30.0, ge=0, description="Cap on a server's Retry-After.")
    cache: bool | str = Field(default=True, description="Cache identical requests: true, false, or a SQLite path.")
    cache_size: int = Field(default=10_000, ge=1, description="Entries kept in the in-memory cache.")
    http_backend: Literal["aiohttp", "httpx"] = Field(
        default="aiohttp", description="HTTP client library: aiohttp (faster under load) or httpx (MockTransport)."
    )
    reward_timeout: float | None = Field(
        default=None, gt=0, description="Engine timeout for one reward call; default: the retry budget + 30 s."
    )
    reference_key: str | None = Field(default=None, description="Row column with the reference answer.")
    prompt_price: float | None = Field(default=None, ge=0, description="USD per million prompt tokens.")
    completion_price: float | None = Field(default=None, ge=0, description="USD per million completion tokens.")

    def client_config(self) -> ClientConfig:
        api_key = self.api_key
        if api_key is None and self.api_key_env:
            api_key = os.environ.get(self.api_key_env)
            if not api_key:
                raise ConfigError(f"judge: environment variable {self.api_key_env!r} (api_key_env) is not set")
        return ClientConfig(
            base_url=self.base_url,
            api_key=api_key,
            concurrency=self.concurrency,
            rpm=self.rpm,
            tpm=self.tpm,
            timeout=self.timeout,
            max_retries=self.max_retries,
            backoff=self.backoff,
            backoff_max=self.backoff_max,
            max_retry_after=self.max_retry_after,
            headers=tuple(sorted(self.headers.items())),
            cache=self.cache is not False,
            cache_size=self.cache_size,
            cache_path=self.cache if isinstance(self.cache, str) else None,
            http_backend=self.http_backend,
            adaptive=self.adaptive,
            server=self.server,
            retry_timeouts=self.retry_timeouts,
        )


class ScoreParams(JudgeParams):
    min_score: float = Field(default=0.0, description="Lowest score the judge may give.")
    max_score: float = Field(default=10.0, description="Highest score the judge may give.")
    instructions: str | None = Field(default=None, description="What the judge should look for.")


class Criterion(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Identifier, used as the JSON key.")
    description: str = Field(description="What this criterion measures, shown to the judge.")
    weight: float = Field(default=1.0, gt=0, description="Weight in the total.")
    min: float = Field(default=0.0, description="Lowest score.")
    max: float = Field(default=10.0, description="Highest score.")


class RubricParams(JudgeParams):
    criteria: list[Criterion] = Field(min_length=1, description="Weighted criteria, each scored separately.")


class GroupParams(ScoreParams):
    mode: Literal["score", "rank"] = Field(default="score", description="Score every response, or rank them.")
    shuffle: bool = Field(default=False, description="Show responses in a content-seeded random order.")


def _validate(model: type[BaseModel], params: Mapping[str, Any], label: str) -> Any:
    try:
        return model.model_validate(dict(params))
    except ValidationError as exc:
        lines = [f"{label}: {'.'.join(str(p) for p in e['loc']) or 'params'}: {e['msg']}" for e in exc.errors()]
        raise ConfigError("\n".join(lines)) from exc


def _num(x: float) -> int | float:
    return int(x) if float(x).is_integer() else x


class _JudgeReward:
    """What every judge reward shares: params, the shared client, the template, the request and its accounting."""

    kind = Kind.ASYNC
    template_name = "score"

    def __init__(self, params: JudgeParams, name: str) -> None:
        self.params = params
        self.__name__ = name
        self.client: JudgeClient = shared_client(params.client_config())
        self.template: Template = load_template(params.template, self.template_name, params.template_format)
        timeout = params.reward_timeout or self.client.config.call_budget + 30.0
        self.__rewardflow__ = RewardOptions(name=name, kind=self.kind, timeout=timeout, concurrency=params.concurrency)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.params.model!r}, base_url={self.params.base_url!r})"

    def _prices(self) -> tuple[float, float] | None:
        p = self.params
        if p.prompt_price is None and p.completion_price is None:
            return None
        return (p.prompt_price or 0.0, p.completion_price or 0.0)

    def _reference(self, row: Mapping[str, Any], required: bool) -> str | None:
        keys = (self.params.reference_key,) if self.params.reference_key else REFERENCE_COLUMNS
        for key in keys:
            value = row.get(key)
            if value is not None:
                return str(value)
        if required:
            raise InputError(f"{self.__name__}: no reference answer (row column {' or '.join(map(repr, keys))})")
        return None

    def _request(self, content: str, schema: dict[str, Any], schema_name: str) -> JudgeRequest:
        p = self.params
        messages: list[dict[str, str]] = []
        if p.system:
            messages.append({"role": "system", "content": p.system})
        messages.append({"role": "user", "content": content})
        return JudgeRequest(
            model=p.model,
            messages=tuple(messages),
            temperature=p.temperature,
            max_tokens=p.max_tokens,
            schema=schema,
            schema_name=schema_name,
            structured=p.structured,
            extra_body=p.extra_body,
            prices=self._prices(),
        )

    async def _ask(self, variables: dict[str, Any], schema: dict[str, Any], parser: Any, *args: Any) -> Any:
        """Render, send, parse. Returns ``(parsed, reply)``; a parse failure keeps usage and the raw text."""
        request = self._request(self.template.render(**variables), schema, self.__name__)
        reply = await self.client.complete(request)
        try:
            return parser(reply.text, *args), reply
        except JudgeParseError as exc:
            self.client.forget(request)  # do not serve an unreadable reply from the cache next time
            exc.info = {"judge": {**reply.info(), "raw": reply.text[:_RAW_LIMIT]}}
            raise

    def usage(self) -> dict[str, Any]:
        """Totals of the shared client (every reward on this endpoint config)."""
        return self.client.usage()

    async def aclose(self) -> None:
        await self.client.aclose()

    def close(self) -> None:
        self.client.close()


class JudgeScore(_JudgeReward):
    """Pointwise score in ``[min_score, max_score]``, normalised to [0, 1]."""

    def __init__(self, params: ScoreParams, name: str = "judge_score") -> None:
        if params.max_score <= params.min_score:
            raise ConfigError(f"{name}: max_score must be greater than min_score")
        super().__init__(params, name)
        self.schema = parse.score_schema(_num(params.min_score), _num(params.max_score))

    async def __call__(
        self, prompt: str, completion: str, prompt_ids: Any = None, completion_ids: Any = None, **row: Any
    ) -> Score:
        p: ScoreParams = self.params  # type: ignore[assignment]
        variables = {
            **row,
            "prompt": prompt,
            "completion": completion,
            "reference": self._reference(row, required=False),
            "instructions": p.instructions,
            "min_score": _num(p.min_score),
            "max_score": _num(p.max_score),
        }
        (raw, reason), reply = await self._ask(variables, self.schema, parse.parse_score, p.min_score, p.max_score)
        value = (raw - p.min_score) / (p.max_score - p.min_score)
        return Score(value, reason=reason, info={"judge": {**reply.info(), "score": raw}})


class JudgeReference(_JudgeReward):
    """1.0 if the judge finds the final answer equivalent to the reference, else 0.0 (tongyi-style judge)."""

    template_name = "reference"

    def __init__(self, params: JudgeParams, name: str = "judge_reference") -> None:
        super().__init__(params, name)
        self.schema = parse.verdict_schema()

    async def __call__(
        self, prompt: str, completion: str, prompt_ids: Any = None, completion_ids: Any = None, **row: Any
    ) -> Score:
        reference = self._reference(row, required=True)
        variables = {**row, "prompt": prompt, "completion": completion, "reference": reference}
        (correct, reason), reply = await self._ask(variables, self.schema, parse.parse_verdict)
        verdict = "correct" if correct else "incorrect"
        return Score(
            1.0 if correct else 0.0,
            reason=f"judge: {verdict}" + (f" ({reason})" if reason else ""),
            info={"judge": {**reply.info(), "verdict": verdict}},
        )


class JudgeRubric(_JudgeReward):
    """Weighted mean of per-criterion scores, each normalised to [0, 1]; each one is also a component."""

    template_name = "rubric"

    def __init__(self, params: RubricParams, name: str = "judge_rubric") -> None:
        names = [c.name for c in params.criteria]
        if len(set(names)) != len(names):
            raise ConfigError(f"{name}: criterion names must be unique, got {names}")
        for c in params.criteria:
            if c.max <= c.min:
                raise ConfigError(f"{name}: criterion {c.name!r}: max must be greater than min")
        super().__init__(params, name)
        self.criteria = [{**c.model_dump(), "min": _num(c.min), "max": _num(c.max)} for c in params.criteria]
        self.schema = parse.criteria_schema(self.criteria)

    async def __call__(
        self, prompt: str, completion: str, prompt_ids: Any = None, completion_ids: Any = None, **row: Any
    ) -> Score:
        variables = {
            **row,
            "prompt": prompt,
            "completion": completion,
            "reference": self._reference(row, required=False),
            "criteria": self.criteria,
        }
        (scores, reason), reply = await self._ask(variables, self.schema, parse.parse_criteria, self.criteria)
        components = {c["name"]: (scores[c["name"]] - c["min"]) / (c["max"] - c["min"]) for c in self.criteria}
        total_weight = sum(c["weight"] for c in self.criteria)
        value = sum(c["weight"] * components[c["name"]] for c in self.criteria) / total_weight
        info = {"judge": {**reply.info(), "scores": scores, "criteria": components}}
        return Score(value, reason=reason, components=components, info=info)


class JudgeGroup(_JudgeReward):
    """One judge call per group (the completions of one prompt): scores or a ranking, each normalised to [0, 1].

    ``mode="score"``: each response gets ``(s - min) / (max - min)``. ``mode="rank"``: the best gets 1.0, the worst
    0.0, evenly spaced between; a group of one cannot be ranked and is an error. The whole call's usage is put on
    the group's first sample (``group_index`` 0); the others show ``requests: 0`` so sums are not inflated. The
    same holds when the call fails: every sample gets the error, the usage is on sample 0 only (``sample_info``).
    """

    kind = Kind.GROUP

    def __init__(self, params: GroupParams, name: str = "judge_group") -> None:
        if params.max_score <= params.min_score:
            raise ConfigError(f"{name}: max_score must be greater than min_score")
        self.template_name = "group_rank" if params.mode == "rank" else "group_score"
        super().__init__(params, name)

    async def __call__(self, prompts: Sequence[str], completions: Sequence[str], **columns: Any) -> list[Score]:
        p: GroupParams = self.params  # type: ignore[assignment]
        n = len(completions)
        if n == 0:
            return []
        if p.mode == "rank" and n < 2:
            raise InputError(f"{self.__name__}: rank mode needs at least 2 completions per group, got 1")
        order = _shuffled(completions) if p.shuffle else list(range(n))
        first_row = {k: v[0] for k, v in columns.items() if isinstance(v, list) and v}
        variables = {
            **first_row,
            "prompt": prompts[0],
            "completions": [completions[i] for i in order],
            "n": n,
            "reference": self._reference(first_row, required=False),
            "instructions": p.instructions,
            "min_score": _num(p.min_score),
            "max_score": _num(p.max_score),
        }
        try:
            return await self._judge(variables, order, n)
        except JudgeError as exc:
            # the engine gives every sample of the group this error: book the call's usage once, on sample 0
            exc.sample_info = [{"judge": self._share(exc.info.get("judge", {}), i, n)} for i in range(n)]
            raise

    def _share(self, usage: Mapping[str, Any], index: int, n: int) -> dict[str, Any]:
        """One sample's part of the group call's usage: all of it on sample 0, none on the others."""
        info = dict(usage)
        if index != 0:
            info.update(requests=0, retries=0, prompt_tokens=0, completion_tokens=0)
            if "cost_usd" in info:
                info["cost_usd"] = 0.0
        info.update(group_size=n, group_index=index)
        return info

    async def _judge(self, variables: dict[str, Any], order: list[int], n: int) -> list[Score]:
        p: GroupParams = self.params  # type: ignore[assignment]
        lo, hi = p.min_score, p.max_score
        if p.mode == "rank":
            (ranking, reason), reply = await self._ask(variables, parse.ranking_schema(n), parse.parse_ranking, n)
            position = {shown: place for place, shown in enumerate(ranking)}  # shown id (1-based) -> 0 = best
            shown_values = [1.0 - position[i + 1] / (n - 1) for i in range(n)]
            detail = "rank"
            shown_raw: list[float] = [float(position[i + 1] + 1) for i in range(n)]
        else:
            schema = parse.group_scores_schema(n, _num(lo), _num(hi))
            (shown_raw, reason), reply = await self._ask(variables, schema, parse.parse_group_scores, n, lo, hi)
            shown_values = [(s - lo) / (hi - lo) for s in shown_raw]
            detail = "score"
        out: list[Score | None] = [None] * n
        base = reply.info()
        for shown, original in enumerate(order):
            info = self._share(base, original, n)  # the call's usage is counted once, on the first sample
            info[detail] = shown_raw[shown]
            out[original] = Score(shown_values[shown], reason=reason, info={"judge": info})
        return out  # type: ignore[return-value]


def _shuffled(completions: Sequence[str]) -> list[int]:
    """A permutation seeded by the group's content: stable across runs, different across groups."""
    seed = hashlib.sha256("\x1f".join(completions).encode("utf-8")).digest()
    keys = [hashlib.sha256(seed + i.to_bytes(4, "little")).digest() for i in range(len(completions))]
    return sorted(range(len(completions)), key=lambda i: keys[i])


def judge_score(**params: Any) -> JudgeScore:
    """Factory for ``judge_score`` (pointwise score); see :class:`ScoreParams` for the params."""
    return JudgeScore(_validate(ScoreParams, params, "judge_score"))


def judge_reference(**params: Any) -> JudgeReference:
    """Factory for ``judge_reference`` (correct/incorrect against the row's reference answer)."""
    return JudgeReference(_validate(JudgeParams, params, "judge_reference"))


def judge_rubric(**params: Any) -> JudgeRubric:
    """Factory for ``judge_rubric`` (weighted criteria); ``criteria`` is required."""
    return JudgeRubric(_validate(RubricParams, params, "judge_rubric"))


def judge_group(**params: Any) -> JudgeGroup:
    """Factory for ``judge_group`` (one call per group; ``mode: score`` or ``rank``)."""
    return JudgeGroup(_validate(GroupParams, params, "judge_group"))
