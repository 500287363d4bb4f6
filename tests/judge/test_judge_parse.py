"""Reply parsing, from tables: each row names the trap it covers. An unreadable reply raises, never reads as 0."""

from __future__ import annotations

import json

import pytest

from rewardflow.errors import JudgeParseError
from rewardflow.judge import parse
from rewardflow.judge.testing import generate

SCORE_OK = [
    ("7", 7.0),  # bare number
    ("7.5", 7.5),  # decimals
    ('{"reason": "fine", "score": 7}', 7.0),  # the format the templates ask for
    ('{"score": "8"}', 8.0),  # number as a string inside JSON
    ('```json\n{"score": 3}\n```', 3.0),  # fenced JSON
    ('<think>maybe {"score": 2}</think>{"score": 9}', 9.0),  # reasoning block dropped, answer after it
    ('Looks right.\n{"score": 4}\nDone.', 4.0),  # JSON embedded in prose
    ("Score: 6/10", 6.0),  # labelled, out of the expected maximum
    ("**8**", 8.0),  # markdown emphasis
    ("The answer is decent. Rating: 5", 5.0),  # labelled at the end of prose
    ("10", 10.0),  # upper bound included
    ("0", 0.0),  # lower bound included: a legitimate zero
]

SCORE_BAD = [
    ("", "no score found"),  # empty reply
    ("I like it a lot", "no score found"),  # prose without a number
    ('{"score": 11}', "outside"),  # out of range is an error, not clamped to 10
    ("-1", "outside"),  # below range
    ('{"score": "high"}', "not a number"),  # word instead of number
    ('{"grade_letter": "B"}', "without a 'score'"),  # JSON without the field
    ("6/5", "out of 5"),  # a different scale than asked for
    ("7 or 8", "no score found"),  # hedging between two scores
    ("[7]", "no score found"),  # a list is not a score
]


@pytest.mark.parametrize(("text", "expected"), SCORE_OK)
def test_parse_score_reads(text: str, expected: float) -> None:
    value, _ = parse.parse_score(text, 0, 10)
    assert value == expected


@pytest.mark.parametrize(("text", "why"), SCORE_BAD)
def test_parse_score_rejects(text: str, why: str) -> None:
    with pytest.raises(JudgeParseError) as info:
        parse.parse_score(text, 0, 10)
    assert why in str(info.value)
    assert info.value.raw == text  # the raw reply is kept for the error result


def test_parse_score_keeps_reason() -> None:
    assert parse.parse_score('{"reason": "clear and right", "score": 9}', 0, 10) == (9.0, "clear and right")


VERDICT_OK = [
    ("correct", True),
    ("Incorrect.", False),  # capitalised, trailing period
    ("**CORRECT**", True),  # markdown
    ('{"verdict": "incorrect", "reason": "42 != 41"}', False),
    ('{"correct": true}', True),  # boolean field
    ("Verdict: correct", True),  # labelled
    ("Reasoning... final verdict: **incorrect**", False),  # labelled after prose
    ("yes", True),
    ("not correct", False),  # a two-word negative verdict
]

VERDICT_BAD = [
    "The answer is not correct because the units differ",  # trap: 'correct' inside a sentence must not count
    "correct or incorrect, hard to say",  # both words
    '{"verdict": "maybe"}',  # unknown word in JSON
    '{"answer": "42"}',  # JSON without a verdict
    "",  # empty
]


@pytest.mark.parametrize(("text", "expected"), VERDICT_OK)
def test_parse_verdict_reads(text: str, expected: bool) -> None:
    assert parse.parse_verdict(text)[0] is expected


@pytest.mark.parametrize("text", VERDICT_BAD)
def test_parse_verdict_rejects(text: str) -> None:
    with pytest.raises(JudgeParseError):
        parse.parse_verdict(text)


CRITERIA = [{"name": "accuracy", "min": 0, "max": 10}, {"name": "clarity", "min": 1, "max": 5}]


@pytest.mark.parametrize(
    "text",
    [
        '{"reason": "ok", "scores": {"accuracy": 8, "clarity": 3}}',  # the asked-for shape
        '{"accuracy": 8, "clarity": 3}',  # flat
        '{"scores": {"Accuracy": 8, "CLARITY": {"score": 3}}}',  # other case, nested score objects
    ],
)
def test_parse_criteria_reads(text: str) -> None:
    assert parse.parse_criteria(text, CRITERIA)[0] == {"accuracy": 8.0, "clarity": 3.0}


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('{"scores": {"accuracy": 8}}', "no numeric score for ['clarity']"),  # a criterion missing
        ('{"scores": {"accuracy": 8, "clarity": 0}}', "outside [1, 5]"),  # below that criterion's own minimum
        ("8", "expected a JSON object"),  # a bare number cannot cover two criteria
    ],
)
def test_parse_criteria_rejects(text: str, why: str) -> None:
    with pytest.raises(JudgeParseError) as info:
        parse.parse_criteria(text, CRITERIA)
    assert why in str(info.value)


def test_parse_criteria_single_criterion_accepts_bare_number() -> None:
    assert parse.parse_criteria("4", CRITERIA[:1])[0] == {"accuracy": 4.0}


def test_parse_group_scores() -> None:
    assert parse.parse_group_scores('{"scores": [1, 9, 5]}', 3, 0, 10)[0] == [1.0, 9.0, 5.0]
    assert parse.parse_group_scores("[1, 2]", 2, 0, 10)[0] == [1.0, 2.0]
    with pytest.raises(JudgeParseError, match="2 scores for 3 responses"):
        parse.parse_group_scores('{"scores": [1, 2]}', 3, 0, 10)  # one response left unscored
    with pytest.raises(JudgeParseError, match="not a number"):
        parse.parse_group_scores('{"scores": [1, "good"]}', 2, 0, 10)
    with pytest.raises(JudgeParseError, match="outside"):
        parse.parse_group_scores('{"scores": [1, 12]}', 2, 0, 10)


def test_parse_ranking() -> None:
    assert parse.parse_ranking('{"ranking": [2, 3, 1]}', 3)[0] == [2, 3, 1]
    with pytest.raises(JudgeParseError, match="not a permutation"):
        parse.parse_ranking('{"ranking": [2, 2, 1]}', 3)  # a response listed twice, one never
    with pytest.raises(JudgeParseError, match="not a permutation"):
        parse.parse_ranking('{"ranking": [0, 1, 2]}', 3)  # zero-based ids
    with pytest.raises(JudgeParseError, match="not an integer"):
        parse.parse_ranking('{"ranking": [1.5, 2, 1]}', 3)


def test_find_json_prefers_the_last_top_level_value() -> None:
    text = 'first {"score": 1, "detail": {"x": 2}} then {"score": 7}'
    assert parse.find_json(text) == {"score": 7}
    assert parse.find_json("no json here") is parse.NOTHING


@pytest.mark.parametrize(
    "schema",
    [
        parse.score_schema(0, 10),
        parse.verdict_schema(),
        parse.criteria_schema(CRITERIA),
        parse.group_scores_schema(4, 1, 5),
        parse.ranking_schema(4),
    ],
)
def test_schemas_are_strict_and_parseable_by_their_parser(schema: dict) -> None:
    """Every schema is OpenAI-strict (all properties required, no extras), and a conforming reply parses."""
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == set(schema["properties"])
    reply = json.dumps(generate(schema, {}, "seed"))
    if "score" in schema["properties"]:
        assert 0 <= parse.parse_score(reply, 0, 10)[0] <= 10
    elif "verdict" in schema["properties"]:
        assert parse.parse_verdict(reply)[0] in (True, False)
    elif "ranking" in schema["properties"]:
        assert sorted(parse.parse_ranking(reply, 4)[0]) == [1, 2, 3, 4]
    elif schema["properties"]["scores"]["type"] == "array":
        assert len(parse.parse_group_scores(reply, 4, 1, 5)[0]) == 4
    else:
        assert set(parse.parse_criteria(reply, CRITERIA)[0]) == {"accuracy", "clarity"}
