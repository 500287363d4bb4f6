"""The ``json`` reward: the completion carries one valid JSON document, optionally matching a JSON Schema.

Where the JSON is looked for (``extract``):

* ``"auto"`` (default): the content of the last ``<answer>...</answer>``, else the last fenced code block
  (```` ```json ... ``` ```` or a bare ```` ``` ````), else the whole completion;
* ``"whole"``: the whole completion (surrounding whitespace allowed), nothing else;
* ``"fenced"`` / ``"answer"``: only a fenced block / only the ``<answer>`` tag.

Stricter than ``json.loads`` on purpose: ``NaN``/``Infinity`` are rejected (not JSON), an object with a
duplicate key is rejected (``{"answer": "A", "answer": "B"}`` is a hedge that a consumer would read either way),
nesting deeper than ``max_depth`` (at most 500) is rejected before parsing (a linear scan, so 10,000 nested
brackets cannot hit the recursion limit), and so is an integer literal longer than Python's 4,300-digit limit.

The schema (``schema=`` in the spec's ``params``) is checked once at construction (an invalid schema is a
:class:`~rewardflow.errors.ConfigError`); ``jsonschema`` is imported only then (``pip install
'rewardflow[eval]'``). Format assertions (``"format": "email"``) are not enforced.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from rewardflow.errors import ConfigError, MissingDependencyError
from rewardflow.rules.answer import find_tag
from rewardflow.types import Score

__all__ = ["JsonReward", "extract_json_text"]

Extract = Literal["auto", "whole", "fenced", "answer"]
_FENCE_RE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\n(.*?)```", re.DOTALL)


class _Rejected(ValueError):
    pass


def extract_json_text(completion: str, extract: str = "auto") -> str | None:
    """The text that should hold the JSON document, or ``None`` if the requested place is absent."""
    if extract in ("auto", "answer"):
        tagged = find_tag(completion, "answer")
        if tagged is not None:
            return extract_json_text(tagged, "fenced") or tagged if "```" in tagged else tagged
        if extract == "answer":
            return None
    if extract in ("auto", "fenced"):
        start = completion.rfind("```", 0, completion.rfind("```"))
        if start >= 0:
            m = _FENCE_RE.match(completion, start)
            if m:
                return m.group(1)
        if extract == "fenced":
            return None
    return completion


def _depth(text: str, limit: int) -> int:
    """Maximum bracket nesting outside strings (linear scan), stopping early past ``limit``."""
    depth = best = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > best:
                best = depth
                if best > limit:
                    return best
        elif ch in "]}":
            depth -= 1
    return best


def _no_constants(name: str) -> Any:
    raise _Rejected(f"{name} is not valid JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Rejected(f"duplicate key {key!r}")
        out[key] = value
    return out


class JsonReward:
    """JSON reward: 1.0 when the extracted text parses as strict JSON (and validates against ``schema``), else 0.0.

    Parameters: ``schema`` (a JSON Schema dict, optional), ``extract`` (see the module docstring),
    ``max_depth`` (default 100).
    """

    def __init__(
        self, *, schema: dict[str, Any] | None = None, extract: Extract = "auto", max_depth: int = 100
    ) -> None:
        if extract not in ("auto", "whole", "fenced", "answer"):
            raise ConfigError(f"json: extract must be auto, whole, fenced or answer, got {extract!r}")
        if isinstance(max_depth, bool) or not isinstance(max_depth, int) or not 1 <= max_depth <= 500:
            raise ConfigError(f"json: max_depth must be an integer from 1 to 500, got {max_depth!r}")
        if schema is not None and not isinstance(schema, dict):
            raise ConfigError(f"json: schema must be a mapping (a JSON Schema), got {type(schema).__name__}")
        self.schema = schema
        self.extract = extract
        self.max_depth = max_depth
        self._validator: Any = None
        if schema is not None:
            self._get_validator()  # fail at configuration time, not on the first sample

    def _get_validator(self) -> Any:
        if self._validator is None and self.schema is not None:
            try:
                import jsonschema
            except ImportError as exc:
                raise MissingDependencyError("jsonschema", "eval") from exc
            cls = jsonschema.validators.validator_for(self.schema)
            try:
                cls.check_schema(self.schema)
            except jsonschema.SchemaError as exc:
                raise ConfigError(f"json: invalid JSON Schema: {exc.message}") from exc
            self._validator = cls(self.schema)
        return self._validator

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_validator"] = None  # rebuilt lazily in the worker
        return state

    def __repr__(self) -> str:
        return f"JsonReward(extract={self.extract!r}, schema={'yes' if self.schema is not None else 'no'})"

    def __call__(self, completion: str) -> Score:
        text = extract_json_text(completion, self.extract)
        if text is None:
            return Score(0.0, reason=f"no JSON found ({self.extract})")
        if _depth(text, self.max_depth) > self.max_depth:
            return Score(0.0, reason=f"JSON nested deeper than {self.max_depth}")
        try:
            document = json.loads(text, parse_constant=_no_constants, object_pairs_hook=_no_duplicates)
        except _Rejected as exc:
            return Score(0.0, reason=f"invalid JSON: {exc}")
        except json.JSONDecodeError as exc:
            return Score(0.0, reason=f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
        except ValueError as exc:  # an integer literal beyond Python's int_max_str_digits
            return Score(0.0, reason=f"rejected JSON: {str(exc)[:120]}")
        validator = self._get_validator()
        if validator is not None:
            error = next(iter(validator.iter_errors(document)), None)
            if error is not None:
                where = "/".join(str(p) for p in error.absolute_path) or "(root)"
                return Score(0.0, reason=f"schema violation at {where}: {error.message[:200]}")
        return Score(1.0)
