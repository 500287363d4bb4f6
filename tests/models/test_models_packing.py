"""Packed rows (rewardflow.models.packing): no padding, attention per sequence, and a probe that keeps it honest.

Every score is compared with plain transformers run on one unpadded sequence at a time. The architectures are
real transformers classes (random, seeded weights) plus the real all-MiniLM-L6-v2 encoder on GSM8K solutions;
the fallbacks are driven by real model features (Mistral's sliding window, DeBERTa-v2's own attention, an
``eager`` attention implementation) except one, which shifts the token read to show that the probe compares scores.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from rewardflow.data import gsm8k_examples
from rewardflow.models import RewardModel
from rewardflow.models.batching import pack_micro_batches, plan_micro_batches
from rewardflow.models.packing import NAME, pack_rows, packed_pass, register
from tests.models.conftest import classifier_one_by_one, per_sample_reference, tiny_checkpoint

WORDS = "the quick brown fox jumps over lazy dog janet has sixteen eggs sells rest two dollars each".split()


def texts(rng: random.Random, n: int, longest: int = 30) -> tuple[list[str], list[str]]:
    prompts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 12))) for _ in range(n)]
    completions = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, longest))) for _ in range(n)]
    return prompts, completions


def test_pack_micro_batches_counts_real_tokens_only() -> None:
    lengths = [5, 40, 17, 17, 3, 60, 1]
    plan = pack_micro_batches(lengths, token_budget=64, max_batch_size=3)
    assert sorted(i for batch in plan.batches for i in batch) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= 64 for b in plan.batches)
    assert all(len(b) <= 3 for b in plan.batches)
    assert plan.real_tokens == plan.padded_tokens == sum(lengths)
    padded = plan_micro_batches(lengths, token_budget=64, max_batch_size=3)
    assert padded.padded_tokens > plan.padded_tokens  # what padding costs on the same lengths
    alone = pack_micro_batches([100, 2], token_budget=64)  # a sequence over the budget still gets a batch
    assert alone.batches == ((0,), (1,))


def test_pack_rows_restarts_positions() -> None:
    flat, positions, starts = pack_rows([[7, 8, 9], [4], [5, 6]])
    assert flat == [7, 8, 9, 4, 5, 6]
    assert positions == [0, 1, 2, 0, 0, 1]
    assert starts == [0, 3, 4]


def test_outside_a_packed_pass_the_functions_are_sdpa_exactly() -> None:
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    assert register() is None
    attention, mask = AttentionInterface._global_mapping[NAME], AttentionMaskInterface._global_mapping[NAME]
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 9, 8, generator=gen) for _ in range(3))
    padding = torch.ones(2, 9, dtype=torch.bool)
    padding[1, :3] = False
    module = torch.nn.Module()
    module.is_causal = False
    want_mask = sdpa_mask(batch_size=2, q_length=9, kv_length=9, attention_mask=padding)
    got_mask = mask(batch_size=2, q_length=9, kv_length=9, attention_mask=padding)
    assert torch.equal(got_mask, want_mask)
    want, _ = sdpa_attention_forward(module, q, k, v, want_mask, scaling=0.3)
    got, _ = attention(module, q, k, v, got_mask, scaling=0.3)
    assert torch.equal(got, want)  # bit for bit: the padded path and prefix sharing are untouched
    with packed_pass([4, 5]) as spans:  # inside a pass: no mask, each span attends to itself only
        assert mask(batch_size=1, q_length=9, kv_length=9, attention_mask=None) is None
        packed, _ = attention(module, q[:1], k[:1], v[:1], None, scaling=0.3)
    assert spans.calls == 1
    for start, end in ((0, 4), (4, 9)):
        alone = torch.nn.functional.scaled_dot_product_attention(
            q[:1, :, start:end], k[:1, :, start:end], v[:1, :, start:end], scale=0.3
        )
        assert torch.allclose(packed[0, start:end], alone[0].transpose(0, 1), atol=1e-6)


def test_minilm_on_gsm8k_packed_equals_padded_and_per_sample() -> None:
    """The real all-MiniLM-L6-v2 (BERT) as a sequence classifier on 48 GSM8K model solutions."""
    from rewardflow.models.similarity import default_encoder_path

    path = default_encoder_path()
    rows = list(gsm8k_examples(48))
    prompts, completions = [r["prompt"] for r in rows], [r["completion"] for r in rows]
    scores, reports = {}, {}
    for packing in (True, False):
        torch.manual_seed(0)  # the same random classifier head for both
        rm = RewardModel(str(path), num_labels=1, allow_missing_weights=True, packing=packing, token_budget=1024)
        scores[packing], reports[packing] = rm(prompts, completions), rm.last_report
    assert reports[True].packing == "on"
    assert reports[True].padded_tokens == reports[True].real_tokens
    assert reports[False].padded_tokens > reports[False].real_tokens
    assert scores[True] == pytest.approx(scores[False], abs=1e-5)
    alone = classifier_one_by_one(path, prompts[:8], completions[:8])
    assert scores[True][:8] == pytest.approx(alone, abs=1e-5)
    assert len({round(s, 5) for s in scores[True]}) > 20


@pytest.mark.parametrize(
    ("arch", "packs"),
    [("DistilBert", True), ("Electra", True), ("XLMRoberta", True), ("Albert", True), ("DebertaV2", False)],
)
def test_encoder_families_match_the_model_packed_or_not(
    zoo: dict[str, Path], tmp_path: Path, arch: str, packs: bool
) -> None:
    """Other encoders' sequence classifiers: XLM-R numbers positions from its pad id + 1, DistilBERT and ALBERT
    have their own layouts, DeBERTa-v2 has its own (eager) attention and keeps padded batches."""
    extra: dict[str, object] = {"embedding_size": 16} if arch == "Albert" else {}
    if arch == "DistilBert":
        extra = {"dim": 32, "hidden_dim": 64, "n_layers": 2, "n_heads": 4}
    path = tiny_checkpoint(zoo, tmp_path / arch, arch, 5, **extra)
    rm = RewardModel(str(path), token_budget=64)
    prompts, completions = texts(random.Random(6), 10)
    scores = rm(prompts, completions)
    assert rm.last_report is not None
    if packs:
        assert rm.last_report.packing == "on"
    else:
        assert rm.last_report.packing.startswith("off: the model's attention implementation is 'eager'")
    assert scores == pytest.approx(per_sample_reference(path, "seq-cls", rm.encode(prompts, completions), 0), abs=1e-4)


def test_a_head_reading_another_token_fails_the_probe(
    zoo: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe compares scores, not structure: a packed pass that reads the wrong token is caught and dropped."""
    from rewardflow.models import reward_model

    real = reward_model._first_tokens
    monkeypatch.setattr(reward_model, "_first_tokens", lambda starts: real(starts + 1))  # one token too late
    path = tiny_checkpoint(zoo, tmp_path / "bert", "Bert", 7)
    rm = RewardModel(str(path))
    prompts, completions = texts(random.Random(7), 8)
    scores = rm(prompts, completions)
    assert rm.last_report is not None
    assert rm.last_report.packing.startswith("off: packed scores differ from padded ones by"), rm.last_report.packing
    assert scores == pytest.approx(per_sample_reference(path, "seq-cls", rm.encode(prompts, completions), 0), abs=1e-4)


def test_sliding_window_refuses_packing_where_it_would_matter(zoo: dict[str, Path], tmp_path: Path) -> None:
    """Mistral with a 24-token window: short calls pack; a call with a longer sequence runs that batch padded."""
    path = tiny_checkpoint(zoo, tmp_path / "m", "Mistral", 4, num_key_value_heads=2, sliding_window=24)
    rm = RewardModel(str(path), token_budget=96, share_prefix=False)
    rng = random.Random(2)
    short = ([" ".join(rng.choice(WORDS) for _ in range(2)) for _ in range(6)], ["four" for _ in range(6)])
    scores = rm(*short)
    assert rm.last_report is not None and rm.last_report.packing == "on"
    assert max(len(s) for s in rm.encode(*short)) <= 24
    assert scores == pytest.approx(per_sample_reference(path, "seq-cls", rm.encode(*short), 0), abs=1e-4)
    prompts, completions = texts(rng, 10, longest=40)
    prompts[0] = " ".join(WORDS)  # some sequence longer than the window
    scores = rm(prompts, completions)
    report = rm.last_report
    assert report is not None and report.packing.startswith("partly:"), report.packing
    assert "sliding window of 24 tokens" in report.packing
    assert scores == pytest.approx(per_sample_reference(path, "seq-cls", rm.encode(prompts, completions), 0), abs=1e-4)


def test_eager_attention_is_left_alone(zoo: dict[str, Path]) -> None:
    rm = RewardModel(str(zoo["seq_cls"]), score_index=1, share_prefix=False)
    rm.load()
    rm._model.set_attn_implementation("eager")
    prompts, completions = texts(random.Random(3), 6)
    scores = rm(prompts, completions)
    assert rm.last_report is not None
    assert (
        rm.last_report.packing == "off: the model's attention implementation is 'eager' (packing stands in for 'sdpa')"
    )
    assert scores == pytest.approx(
        per_sample_reference(zoo["seq_cls"], "seq-cls", rm.encode(prompts, completions), 1), abs=1e-4
    )


def test_packing_off_on_request_and_on_accelerators_by_reason(zoo: dict[str, Path]) -> None:
    prompts, completions = texts(random.Random(4), 4)
    rm = RewardModel(str(zoo["seq_cls"]), score_index=1, packing=False)
    rm(prompts, completions)
    assert rm.last_report is not None and rm.last_report.packing == "off: disabled (packing=False)"
    meta = RewardModel(str(zoo["seq_cls"]), score_index=1, device="meta")
    assert meta._packing_off(None, [0], None) == "packing is for the CPU; on meta padded micro-batches run"  # type: ignore[arg-type]


def test_bf16_packs_with_a_16_bit_tolerance(zoo: dict[str, Path]) -> None:
    """bf16 rounds every op to 3 digits, so packed and padded differ by ~1e-3; the probe allows 1e-2 there."""
    prompts, completions = texts(random.Random(5), 10)
    scores = {}
    for packing in (True, False):
        rm = RewardModel(str(zoo["seq_cls"]), score_index=1, dtype="bf16", share_prefix=False, packing=packing)
        scores[packing] = rm(prompts, completions)
        assert rm.last_report is not None
        assert rm.last_report.packing == ("on" if packing else "off: disabled (packing=False)")
    assert scores[True] == pytest.approx(scores[False], abs=2e-2)
    assert scores[True] == pytest.approx(
        per_sample_reference(zoo["seq_cls"], "seq-cls", rm.encode(prompts, completions), 1), abs=5e-2
    )


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_similarity_packs_its_embeddings(pooling: str) -> None:
    """SimilarityReward pools each packed sequence's own span: the same cosines as padded batches."""
    from rewardflow.models.similarity import SimilarityReward

    rows = list(gsm8k_examples(40))
    completions = [r["completion"].strip().splitlines()[-1] for r in rows[:20]] + [r["completion"] for r in rows[20:]]
    references = [r["answer"].split("####")[-1].strip() for r in rows[:20]] + [r["answer"] for r in rows[20:]]
    scores, reports = {}, {}
    for packing in (True, False):
        model = SimilarityReward(pooling=pooling, packing=packing, token_budget=512)
        scores[packing], reports[packing] = model.score_texts(completions, references), model.last_report
    assert reports[True].packing == "on" and reports[True].padded_tokens == reports[True].real_tokens
    assert reports[False].padding_waste > 0.05  # short and long texts mixed: padding the packed rows avoid
    assert scores[True] == pytest.approx(scores[False], abs=1e-5)
    assert len({round(s, 4) for s in scores[True]}) > 20


def test_a_transformers_that_cannot_switch_attention_keeps_padding(zoo: dict[str, Path]) -> None:
    rm = RewardModel(str(zoo["seq_cls"]), score_index=1, share_prefix=False)
    rm.load()
    rm._model.set_attn_implementation = None  # as in a transformers without the method
    prompts, completions = texts(random.Random(8), 5)
    scores = rm(prompts, completions)
    assert rm.last_report is not None
    assert rm.last_report.packing == "off: this transformers cannot switch a loaded model's attention implementation"
    assert scores == pytest.approx(
        per_sample_reference(zoo["seq_cls"], "seq-cls", rm.encode(prompts, completions), 1), abs=1e-4
    )
