"""Reading a verdict out of a judge's reply, and the JSON schemas that ask for it.

Each judge format has two sides kept together here: the schema sent as structured output (``*_schema``) and the
parser of the reply (``parse_*``). Parsers accept, in this order:

1. JSON: the whole reply, a fenced ```json block, or the last JSON value embedded in prose (after dropping a
   ``<think>...</think>`` block, as reasoning models emit);
2. a bare number (``7``, ``7/10``, ``**8**``) or a labelled one (``Score: 7``) for scores;
3. a bare verdict word (``correct``, ``Incorrect.``, ``yes``) or a labelled one (``Verdict: correct``).

Bounded output by construction: every free-text field of the schemas (``reason``) has a ``maxLength``
(:data:`REASON_MAX_CHARS`), numbers have a ``minimum`` and ``maximum``, arrays a ``maxItems``, so a server that
enforces the schema cannot let a small model loop inside a string until ``max_tokens``. :func:`schema_max_tokens`
turns a schema into a completion budget (used when ``max_tokens`` is not set).

Anything else raises :class:`~rewardflow.errors.JudgeParseError` with the raw reply, never a default value: an
unreadable verdict is a failure, not a 0. Out-of-range numbers are errors too, not clamped. Deliberately *not*
accepted: a verdict word somewhere inside a sentence ("the answer is not correct" must not read as "correct").
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from rewardflow.errors import JudgeParseError

__all__ = [
    "REASON_MAX_CHARS",
    "criteria_schema",
    "find_json",
    "group_scores_schema",
    "parse_criteria",
    "parse_group_scores",
    "parse_ranking",
    "parse_score",
    "parse_verdict",
    "ranking_schema",
    "schema_max_tokens",
    "score_schema",
    "verdict_schema",
]

NOTHING = object()  # find_json's "no JSON here" (JSON itself may be null)
_MAX_SCAN = 50_000  # characters of a reply searched for embedded JSON (the tail, where the answer is)
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"```(?:json|JSON)?\s*\n(.*?)```", re.DOTALL)
_NUM = r"[-+]?\d+(?:\.\d+)?"
_BARE_NUMBER = re.compile(rf"^[\s*_`#]*({_NUM})\s*(?:/\s*({_NUM}))?[\s*_`.]*$")
_LABELLED_NUMBER = re.compile(rf"\b(?:score|rating|grade)\b[\s*_`]*[:=][\s*_`]*({_NUM})(?:\s*/\s*({_NUM}))?", re.I)
_LABELLED_VERDICT = re.compile(r"\b(?:verdict|judgement|judgment|decision)\b[\s*_`]*[:=][\s*_`\"']*([a-z_]+)", re.I)
_REASON_KEYS = ("reason", "reasoning", "explanation", "rationale")

#: ``maxLength`` of the free-text ``reason`` field in every built-in schema. SmolLM2-135M under llama.cpp looped
#: inside an unbounded ``reason`` until ``max_tokens`` in 7 of 32 replies; with 160 it finished 32 of 32.
REASON_MAX_CHARS = 160
_REASON = {"type": "string", "maxLength": REASON_MAX_CHARS}

TRUE_WORDS = frozenset({"correct", "yes", "true", "right", "pass", "equivalent"})
FALSE_WORDS = frozenset({"incorrect", "no", "false", "wrong", "fail", "not_correct", "not_equivalent"})


def _fail(why: str, raw: str) -> JudgeParseError:
    shown = raw if len(raw) <= 300 else raw[:297] + "..."
    return JudgeParseError(f"unparseable judge reply ({why}): {shown!r}", raw=raw)


def strip_reasoning(text: str) -> str:
    """Drop ``<think>`` blocks; if only a closing tag is present, keep what follows the last one."""
    text = _THINK.sub("", text)
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    return text.strip()


def find_json(text: str) -> Any:
    """The JSON value the reply is, or the last one it contains; :data:`NOTHING` if there is none."""
    text = strip_reasoning(text)
    try:
        return json.loads(text)
    except ValueError:
        pass
    fenced = _FENCE.findall(text)
    for block in reversed(fenced):
        try:
            return json.loads(block)
        except ValueError:
            continue
    tail = text[-_MAX_SCAN:]
    decoder = json.JSONDecoder()
    found: Any = NOTHING
    end = 0
    for i, ch in enumerate(tail):
        if ch not in "{[" or i < end:
            continue
        try:
            value, stop = decoder.raw_decode(tail, i)
        except ValueError:
            continue
        if isinstance(value, (dict, list)):
            found, end = value, stop
    return found


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        match = re.fullmatch(rf"\s*({_NUM})\s*", value)
        return float(match.group(1)) if match else None
    return None


def _reason(obj: Any) -> str | None:
    if isinstance(obj, Mapping):
        for key in _REASON_KEYS:
            value = obj.get(key)
            if isinstance(value, str) and value.strip():
                text = " ".join(value.split())
                return text if len(text) <= 300 else text[:297] + "..."
    return None


def _max_chars(schema: Mapping[str, Any]) -> int | None:
    """Longest JSON text (compact) a value following ``schema`` can be; ``None`` if unbounded."""
    kind = schema.get("type")
    if "enum" in schema:
        return max(len(json.dumps(v)) for v in schema["enum"])
    if kind == "object":
        total = 2
        for key, sub in schema.get("properties", {}).items():
            inner = _max_chars(sub)
            if inner is None:
                return None
            total += len(json.dumps(key)) + 2 + inner  # "key": value,
        return total
    if kind == "array":
        count = schema.get("maxItems")
        inner = _max_chars(schema.get("items", {}))
        return None if count is None or inner is None else 2 + count * (inner + 2)
    if kind == "string":
        length = schema.get("maxLength")
        return None if length is None else 2 + int(length)
    if kind == "integer":
        lo, hi = schema.get("minimum"), schema.get("maximum")
        return None if lo is None or hi is None else max(len(str(int(lo))), len(str(int(hi))))
    if kind == "number":
        return 24  # a float written out in full (llama.cpp bounds neither digits nor decimals: the margin pays)
    if kind == "boolean":
        return 5
    return None


def schema_max_tokens(schema: Mapping[str, Any], *, margin: int = 64) -> int | None:
    """A completion budget for a reply that follows ``schema``: its longest compact form, one token per character.

    A token is at least one character, so a reply within the schema fits unless it spends extra characters the
    schema does not count: whitespace between JSON tokens (a grammar allows some) and ``\\uXXXX`` escapes inside
    strings (one character for ``maxLength``, six in the text). The ``margin`` (tokens) covers those and the end
    of turn; a reply that still runs over is a :class:`~rewardflow.errors.JudgeTruncatedError`, not a parse error.
    ``None`` when the schema bounds nothing (the caller keeps its default).
    """
    chars = _max_chars(schema)
    return None if chars is None else chars + margin


def _check_range(value: float, lo: float, hi: float, raw: str) -> float:
    if not lo <= value <= hi:
        raise _fail(f"score {value:g} is outside [{lo:g}, {hi:g}]", raw)
    return value


def _scaled(value: float, denominator: str | None, hi: float, raw: str) -> float:
    if denominator is not None and float(denominator) != hi:
        raise _fail(f"score given out of {denominator}, expected out of {hi:g}", raw)
    return value


def score_schema(lo: float, hi: float) -> dict[str, Any]:
    kind = "integer" if float(lo).is_integer() and float(hi).is_integer() else "number"
    return {
        "type": "object",
        "properties": {"reason": dict(_REASON), "score": {"type": kind, "minimum": lo, "maximum": hi}},
        "required": ["reason", "score"],
        "additionalProperties": False,
    }


def parse_score(text: str, lo: float, hi: float, key: str = "score") -> tuple[float, str | None]:
    """One score in ``[lo, hi]`` and the judge's reason, if it gave one."""
    obj = find_json(text)
    if isinstance(obj, Mapping):
        for k in (key, "score", "rating", "grade"):
            if k in obj:
                value = _number(obj[k])
                if value is None:
                    raise _fail(f"{k!r} is not a number", text)
                return _check_range(value, lo, hi, text), _reason(obj)
        raise _fail(f"JSON without a {key!r} field", text)
    value = _number(obj) if obj is not NOTHING else None
    if value is not None:
        return _check_range(value, lo, hi, text), None
    body = strip_reasoning(text)
    match = _BARE_NUMBER.match(body)
    if match is None:
        labelled = _LABELLED_NUMBER.findall(body)
        if not labelled:
            raise _fail("no score found", text)
        number, denominator = labelled[-1]
    else:
        number, denominator = match.group(1), match.group(2)
    value = _scaled(float(number), denominator or None, hi, text)
    return _check_range(value, lo, hi, text), None


def verdict_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"reason": dict(_REASON), "verdict": {"type": "string", "enum": ["correct", "incorrect"]}},
        "required": ["reason", "verdict"],
        "additionalProperties": False,
    }


def _word(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if not isinstance(value, str):
        return None
    word = re.sub(r"[\s*_`.!\"']+", " ", value).strip().lower().replace(" ", "_")
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    return None


def parse_verdict(text: str) -> tuple[bool, str | None]:
    """``True`` for correct, ``False`` for incorrect, and the judge's reason if it gave one."""
    obj = find_json(text)
    if isinstance(obj, Mapping):
        for key in ("verdict", "judgement", "judgment", "decision", "correct", "is_correct"):
            if key in obj:
                verdict = _word(obj[key])
                if verdict is None:
                    raise _fail(f"{key!r} is neither correct nor incorrect", text)
                return verdict, _reason(obj)
        raise _fail("JSON without a 'verdict' field", text)
    body = strip_reasoning(text)
    verdict = _word(body) if len(body) <= 40 else None
    if verdict is None:
        labelled = _LABELLED_VERDICT.findall(body)
        verdict = _word(labelled[-1]) if labelled else None
    if verdict is None:
        raise _fail("no verdict found", text)
    return verdict, None


def criteria_schema(criteria: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    props = {}
    for c in criteria:
        lo, hi = c["min"], c["max"]
        kind = "integer" if float(lo).is_integer() and float(hi).is_integer() else "number"
        props[c["name"]] = {"type": kind, "minimum": lo, "maximum": hi}
    scores = {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}
    return {
        "type": "object",
        "properties": {"reason": dict(_REASON), "scores": scores},
        "required": ["reason", "scores"],
        "additionalProperties": False,
    }


def _norm_key(key: str) -> str:
    return re.sub(r"[\s_-]+", "_", key.strip().lower())


def parse_criteria(text: str, criteria: Sequence[Mapping[str, Any]]) -> tuple[dict[str, float], str | None]:
    """One score per criterion (``{"scores": {name: n}}`` or flat ``{name: n}``), each within its range."""
    obj = find_json(text)
    names = [c["name"] for c in criteria]
    if not isinstance(obj, Mapping):
        if len(criteria) == 1:
            value, reason = parse_score(text, criteria[0]["min"], criteria[0]["max"])
            return {names[0]: value}, reason
        raise _fail(f"expected a JSON object with scores for {names}", text)
    table = obj.get("scores") if isinstance(obj.get("scores"), Mapping) else obj
    lookup = {_norm_key(str(k)): v for k, v in table.items()}
    out: dict[str, float] = {}
    missing = []
    for c in criteria:
        raw_value = table.get(c["name"], lookup.get(_norm_key(c["name"])))
        if isinstance(raw_value, Mapping):
            raw_value = raw_value.get("score")
        value = _number(raw_value)
        if value is None:
            missing.append(c["name"])
            continue
        if not c["min"] <= value <= c["max"]:
            raise _fail(f"criterion {c['name']!r}: {value:g} is outside [{c['min']:g}, {c['max']:g}]", text)
        out[c["name"]] = value
    if missing:
        raise _fail(f"no numeric score for {missing}", text)
    return out, _reason(obj)


def group_scores_schema(n: int, lo: float, hi: float) -> dict[str, Any]:
    kind = "integer" if float(lo).is_integer() and float(hi).is_integer() else "number"
    return {
        "type": "object",
        "properties": {
            "reason": dict(_REASON),
            "scores": {
                "type": "array",
                "items": {"type": kind, "minimum": lo, "maximum": hi},
                "minItems": n,
                "maxItems": n,
            },
        },
        "required": ["reason", "scores"],
        "additionalProperties": False,
    }


def _list_field(obj: Any, keys: Sequence[str]) -> Any:
    if isinstance(obj, list):
        return obj
    if isinstance(obj, Mapping):
        for key in keys:
            if key in obj:
                value = obj[key]
                return value if isinstance(value, list) else [value]
    return None


def parse_group_scores(text: str, n: int, lo: float, hi: float) -> tuple[list[float], str | None]:
    """Exactly ``n`` scores in ``[lo, hi]``, in the order the responses were shown."""
    obj = find_json(text)
    items = _list_field(obj, ("scores", "score"))
    if items is None:
        raise _fail(f"expected a JSON list of {n} scores", text)
    if len(items) != n:
        raise _fail(f"{len(items)} scores for {n} responses", text)
    values = [_number(v) for v in items]
    if any(v is None for v in values):
        raise _fail("a score is not a number", text)
    return [_check_range(v, lo, hi, text) for v in values], _reason(obj)  # type: ignore[arg-type]


def ranking_schema(n: int) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "reason": dict(_REASON),
            "ranking": {
                "type": "array",
                "items": {"type": "integer", "minimum": 1, "maximum": n},
                "minItems": n,
                "maxItems": n,
                "uniqueItems": True,
            },
        },
        "required": ["reason", "ranking"],
        "additionalProperties": False,
    }


def parse_ranking(text: str, n: int) -> tuple[list[int], str | None]:
    """A ranking, best first, of the response ids ``1..n``: a permutation, each id exactly once."""
    obj = find_json(text)
    items = _list_field(obj, ("ranking", "rank", "order"))
    if items is None:
        raise _fail(f"expected a JSON ranking of {n} response ids", text)
    ids = [_number(v) for v in items]
    if any(v is None or not float(v).is_integer() for v in ids):
        raise _fail("a ranking entry is not an integer id", text)
    ranking = [int(v) for v in ids]  # type: ignore[arg-type]
    if sorted(ranking) != list(range(1, n + 1)):
        raise _fail(f"ranking {ranking} is not a permutation of 1..{n}", text)
    return ranking, _reason(obj)
