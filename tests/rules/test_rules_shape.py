"""``format``, ``length``, ``overlong``, ``repetition`` and ``json``: configurable rewards built by factories."""

from __future__ import annotations

import pickle

import pytest

from rewardflow import ConfigError, InputError
from rewardflow.rules.format import Format
from rewardflow.rules.json_output import JsonReward
from rewardflow.rules.length import Length, Overlong, Repetition

FORMAT = [
    # (completion, params, expected, trap)
    ("<think>a</think><answer>b</answer>", {}, 1.0, "the R1 layout"),
    ("<think>\na\n</think>\n\n<answer> b </answer>\n", {}, 1.0, "whitespace between and around tags"),
    ("<think></think><answer>b</answer>", {}, 0.0, "empty think: a free format bonus"),
    ("<think> </think><answer>b</answer>", {}, 0.0, "whitespace-only think"),
    ("<answer>b</answer><think>a</think>", {}, 0.0, "wrong order"),
    ("<think>a</think><answer>b</answer><answer>c</answer>", {}, 0.0, "two answers: a hedge"),
    ("<think>a<answer>b</answer></think>", {}, 0.0, "answer nested in think"),
    ("<think>a</think>junk<answer>b</answer>", {}, 0.0, "text between the tags"),
    ("<think>a</think><answer>b</answer> trailing", {}, 0.0, "text after the last tag"),
    ("<think>a</think><answer>b", {}, 0.0, "unclosed answer"),
    ("<think>a</think>junk<answer>b</answer>", {"strict": False}, 1.0, "non-strict allows text outside"),
    ("<think></think><answer>b</answer>", {"allow_empty": True}, 1.0, "empty allowed on request"),
    ("a</think><answer>b</answer>", {"prefilled": True}, 1.0, "<think> was in the prompt"),
    ("<think>a</think><answer>b</answer>", {"prefilled": True}, 0.0, "prefilled tag repeated"),
    ("<think>a</think><answer>\\boxed{3}</answer>", {"require_boxed": True}, 1.0, "boxed required and present"),
    ("<think>a</think><answer>3</answer>", {"require_boxed": True}, 0.0, "boxed required, missing"),
    ("<reasoning>a</reasoning><solution>b</solution>", {"tags": ["reasoning", "solution"]}, 1.0, "custom tags"),
    ("Final: 42", {"pattern": r"Final: \d+"}, 1.0, "regex mode"),
    ("Final: 42 and more", {"pattern": r"Final: \d+"}, 0.0, "regex must match the whole completion"),
]


@pytest.mark.parametrize(("completion", "params", "expected", "trap"), FORMAT, ids=[c[3] for c in FORMAT])
def test_format(completion: str, params: dict, expected: float, trap: str) -> None:
    result = Format(**params)(completion)
    assert result.value == expected, result.reason
    if expected == 0.0:
        assert result.reason


def test_format_config_errors_and_pickling() -> None:
    with pytest.raises(ConfigError, match="invalid pattern"):
        Format(pattern="(unclosed")
    with pytest.raises(ConfigError, match="valid tag name"):
        Format(tags=["a b"])
    with pytest.raises(ConfigError, match="distinct"):
        Format(tags=["x", "x"])
    fmt = Format(pattern=r"\d+")
    assert fmt("12").value == 1.0  # compiled now
    clone = pickle.loads(pickle.dumps(fmt))
    assert clone._compiled is None and clone("12").value == 1.0


def test_length_penalty() -> None:
    length = Length(target=100, tolerance=10, scale=50)
    assert length("", completion_ids=list(range(105))).value == 0.0
    assert length("", completion_ids=list(range(135))).value == pytest.approx(-0.5)
    assert length("", completion_ids=list(range(65))).value == pytest.approx(-0.5)
    assert length("", completion_ids=list(range(1000))).value == -1.0
    capped = Length(target=100, only_longer=True)
    assert capped("", completion_ids=[1]).value == 0.0
    assert Length(target=3, unit="words")("one two three four").value == pytest.approx(-1 / 3)


def test_token_units_need_token_ids() -> None:
    with pytest.raises(InputError, match="completion_ids"):
        Length(target=10)("some text")
    with pytest.raises(InputError, match="completion_ids"):
        Overlong(max_length=10, cache=2)("some text")
    with pytest.raises(InputError, match="completion_ids"):
        Repetition(unit="tokens")("some text")


def test_overlong_is_dapo() -> None:
    over = Overlong(max_length=100, cache=20)
    assert over("", completion_ids=[0] * 80).value == 0.0
    assert over("", completion_ids=[0] * 90).value == pytest.approx(-0.5)
    assert over("", completion_ids=[0] * 100).value == pytest.approx(-1.0)
    assert over("", completion_ids=[0] * 101).value == -1.0
    assert Overlong(max_length=10, cache=5, penalty=0.5, unit="chars")("x" * 20).value == -0.5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_length": 10, "cache": 20}, "must not exceed"),
        ({"max_length": 0, "cache": 0}, "positive"),
        ({"max_length": 10, "cache": 2, "unit": "bytes"}, "unit"),
    ],
)
def test_overlong_config_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Overlong(**kwargs)


def test_repetition() -> None:
    rep = Repetition(ngram=2)
    assert rep("a b c d e").value == 0.0
    assert rep("go go go go go go go go").value == pytest.approx(-6 / 7)
    assert rep("short").value == 0.0
    assert Repetition(ngram=2, unit="tokens")("", completion_ids=[1, 2, 1, 2, 1, 2]).value == pytest.approx(-3 / 5)
    assert Repetition(ngram=3, unit="chars", penalty=0.5)("abcabcabc").value == pytest.approx(-0.5 * 4 / 7)
    with pytest.raises(ConfigError):
        Repetition(ngram=0)


SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "integer"}, "unit": {"type": "string"}},
    "required": ["answer"],
    "additionalProperties": False,
}

JSON = [
    # (completion, params, expected, trap)
    ('{"answer": 3}', {}, 1.0, "bare JSON"),
    ('Here:\n```json\n{"answer": 3}\n```\nDone.', {}, 1.0, "fenced block"),
    ('<answer>{"answer": 3}</answer>', {}, 1.0, "answer tag"),
    ('<answer>\n```json\n{"answer": 3}\n```\n</answer>', {}, 1.0, "fenced inside the answer tag"),
    ('{"answer": 3', {}, 0.0, "truncated"),
    ('{"answer": NaN}', {}, 0.0, "NaN is not JSON"),
    ('{"answer": "A", "answer": "B"}', {}, 0.0, "duplicate keys: a hedge"),
    ("[" * 10_000 + "]" * 10_000, {}, 0.0, "10k nested brackets"),
    ('{"answer": 3}', {"schema": SCHEMA}, 1.0, "valid against the schema"),
    ('{"answer": "3"}', {"schema": SCHEMA}, 0.0, "wrong type"),
    ('{"answer": 3, "extra": 1}', {"schema": SCHEMA}, 0.0, "additional property"),
    ('{"unit": "cm"}', {"schema": SCHEMA}, 0.0, "missing required key"),
    ('Text {"answer": 3}', {"extract": "whole"}, 0.0, "whole mode: surrounding text is invalid"),
    ('{"answer": 3}', {"extract": "fenced"}, 0.0, "fenced mode without a fence"),
    ('{"a": ' + "1" * 5000 + "}", {}, 0.0, "integer beyond Python's digit limit"),
]


@pytest.mark.parametrize(("completion", "params", "expected", "trap"), JSON, ids=[c[3] for c in JSON])
def test_json(completion: str, params: dict, expected: float, trap: str) -> None:
    result = JsonReward(**params)(completion)
    assert result.value == expected, result.reason
    if expected == 0.0:
        assert result.reason


def test_json_config_errors_and_pickling() -> None:
    with pytest.raises(ConfigError, match="invalid JSON Schema"):
        JsonReward(schema={"type": "nonsense"})
    with pytest.raises(ConfigError, match="extract"):
        JsonReward(extract="xml")  # type: ignore[arg-type]
    reward = JsonReward(schema=SCHEMA)
    clone = pickle.loads(pickle.dumps(reward))
    assert clone._validator is None
    assert clone('{"answer": 1}').value == 1.0 and clone('{"answer": 1.5}').value == 0.0
