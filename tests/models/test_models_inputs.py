"""What the reward model reads: the eos policy (checked against OpenRLHF's own preprocessing), truncation that
keeps both ends, and the prefix-sharing fallback for bidirectional encoders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from rewardflow.errors import ConfigError, ModelError
from rewardflow.models import RewardModel
from rewardflow.models.truncation import COMPLETION, FIXED, PROMPT, keep_ends
from tests.models.conftest import (
    RM_TEMPLATE,
    build_llama,
    build_tokenizer,
    build_value_head_checkpoint,
    per_sample_reference,
    randomize,
)

# Qwen2.5's chat template, reduced to its shape: every turn ends with "<|im_end|>\n", so the text ends with "\n"
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
PROMPTS = ["what is two plus two?", "janet has sixteen eggs, eats three and bakes with four. how much is left?"]
COMPLETIONS = ["the answer is four.", "she sells 16 - 3 - 4 = 9 eggs."]


@pytest.fixture(scope="module")
def chatml_rm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An OpenRLHF-layout value-head reward model whose tokenizer uses a chatml template with EOS <|im_end|>."""
    root = tmp_path_factory.mktemp("chatml")
    tok = build_tokenizer(root / "tok", vocab_size=320, specials=["<|im_start|>", "<|im_end|>"], template=CHATML)
    tok.eos_token = "<|im_end|>"
    return build_value_head_checkpoint(root / "rm", tok, style="openrlhf")


def openrlhf_ids(tokenizer: object, prompt: str, completion: str) -> list[int]:
    """OpenRLHF's RewardDataset preprocessing (openrlhf/datasets/reward_dataset.py, Apache-2.0), as facts:
    render prompt + response with the chat template, ``rstrip("\\n")``, append ``" " + eos`` unless the text
    already ends with it, tokenize without special tokens."""
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
    text = tokenizer.apply_chat_template(messages, tokenize=False).rstrip("\n")  # type: ignore[attr-defined]
    if not text.endswith(tokenizer.eos_token):  # type: ignore[attr-defined]
        text += " " + tokenizer.eos_token  # type: ignore[attr-defined]
    return tokenizer(text, add_special_tokens=False)["input_ids"]  # type: ignore[operator]


def test_openrlhf_value_head_reads_at_im_end_like_openrlhf(chatml_rm: Path) -> None:
    auto = RewardModel(str(chatml_rm), head="value-head")  # eos="auto": an OpenRLHF head -> "append"
    tok = auto.tokenizer
    ids = auto.encode(PROMPTS, COMPLETIONS)
    assert ids == [openrlhf_ids(tok, p, c) for p, c in zip(PROMPTS, COMPLETIONS, strict=True)]
    assert all(seq[-1] == tok.convert_tokens_to_ids("<|im_end|>") for seq in ids)
    as_is = RewardModel(str(chatml_rm), head="value-head", eos="as-is")
    assert all(tok.decode(seq[-1:]) == "\n" for seq in as_is.encode(PROMPTS, COMPLETIONS))  # the template's "\n"
    strip = RewardModel(str(chatml_rm), head="value-head", eos="strip")
    stripped = strip.encode(PROMPTS, COMPLETIONS)
    assert all(tok.decode(seq).endswith(c) for seq, c in zip(stripped, COMPLETIONS, strict=True))
    # the read position moves the score: the three policies are three different readings
    scores = [rm(PROMPTS, COMPLETIONS) for rm in (auto, as_is, strip)]
    assert scores[0] != pytest.approx(scores[1], abs=1e-3) and scores[0] != pytest.approx(scores[2], abs=1e-3)


def test_eos_append_on_a_template_that_already_ends_with_eos(zoo: dict[str, Path]) -> None:
    rm = RewardModel(str(zoo["token_cls"]), head="token-cls", eos="append")  # the template ends with </s>
    plain = RewardModel(str(zoo["token_cls"]), head="token-cls")  # "auto" -> "as-is" for a token classifier
    assert rm.encode(PROMPTS, COMPLETIONS) == plain.encode(PROMPTS, COMPLETIONS)
    expected = [openrlhf_ids(rm.tokenizer, p, c) for p, c in zip(PROMPTS, COMPLETIONS, strict=True)]
    assert rm.encode(PROMPTS, COMPLETIONS) == expected


def test_eos_policy_on_text_pairs(zoo: dict[str, Path]) -> None:
    eos = RewardModel(str(zoo["plain_seq_cls"])).tokenizer.eos_token_id
    appended = RewardModel(str(zoo["plain_seq_cls"]), eos="append").encode(PROMPTS, COMPLETIONS)
    as_is = RewardModel(str(zoo["plain_seq_cls"])).encode(PROMPTS, COMPLETIONS)
    assert [seq[:-1] for seq in appended] == as_is and all(seq[-1] == eos for seq in appended)
    assert RewardModel(str(zoo["plain_seq_cls"]), eos="strip").encode(PROMPTS, COMPLETIONS) == as_is


# (labels, max_length, kept indices): each row names the trap it covers
TRUNCATION = [
    # fits: nothing cut
    ([FIXED, PROMPT, COMPLETION, FIXED], 4, [0, 1, 2, 3]),
    # the prompt's middle goes first; BOS/header (0) and the closing tokens (last) stay
    ([FIXED, PROMPT, PROMPT, PROMPT, PROMPT, FIXED, COMPLETION, COMPLETION, FIXED], 7, [0, 1, 4, 5, 6, 7, 8]),
    # the whole prompt content, then the completion's middle; its last token stays
    ([FIXED, PROMPT, PROMPT, FIXED, COMPLETION, COMPLETION, COMPLETION, COMPLETION, FIXED], 5, [0, 3, 4, 7, 8]),
    # odd cuts keep the extra token at the end (where the score is read)
    ([FIXED, COMPLETION, COMPLETION, COMPLETION, COMPLETION, FIXED], 4, [0, 1, 4, 5]),
    # template longer than max_length: head and tail of what is left
    ([FIXED] * 6, 4, [0, 1, 4, 5]),
]


@pytest.mark.parametrize(("labels", "max_length", "kept"), TRUNCATION)
def test_keep_ends_table(labels: list[int], max_length: int, kept: list[int]) -> None:
    assert keep_ends(labels, max_length) == kept


def test_truncation_keeps_bos_the_template_and_the_final_tokens(zoo: dict[str, Path]) -> None:
    long_prompt = "janet has sixteen eggs, eats three and bakes with four. " * 6
    long_completion = "the quick brown fox jumps over the lazy dog. " * 6 + "so the answer is 18."
    full = RewardModel(str(zoo["token_cls"]), head="token-cls").encode([long_prompt], [long_completion])[0]
    rm = RewardModel(str(zoo["token_cls"]), head="token-cls", max_length=40)
    cut = rm.encode([long_prompt], [long_completion])[0]
    tok = rm.tokenizer
    assert len(full) > 80 and len(cut) == 40
    assert cut[:3] == full[:3] and tok.decode(cut[:1]) == "<s>"  # BOS and the [INST] header
    assert cut[-12:] == full[-12:] and tok.decode(cut).endswith("the answer is 18.</s>")  # the end is read
    assert "[/INST]" in tok.decode(cut)  # the template between the turns survives
    rm([long_prompt], [long_completion])
    assert rm.last_report is not None and rm.last_report.truncated == 1


def test_bidirectional_encoder_falls_back_with_the_reason(zoo: dict[str, Path], tmp_path: Path) -> None:
    from transformers import AutoTokenizer, BertConfig, BertForTokenClassification

    tok = AutoTokenizer.from_pretrained(str(zoo["rm_tokenizer"]))
    config = BertConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=256, num_labels=1, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    randomize(BertForTokenClassification(config), 3).save_pretrained(tmp_path / "bert")
    tok.save_pretrained(tmp_path / "bert")
    prompt = "janet has sixteen eggs, eats three and bakes with four. how much does she make every day?"
    prompts, completions = [prompt] * 4, ["nine", "18 dollars", "she makes 18.", "the quick brown fox"]
    rm = RewardModel(str(tmp_path / "bert"), head="token-cls", token_budget=64)
    scores = rm(prompts, completions)
    report = rm.last_report
    assert report is not None and report.prefix_sharing.startswith("off: ") and "bidirectional" in report.prefix_sharing
    model = BertForTokenClassification.from_pretrained(str(tmp_path / "bert")).eval()
    with torch.no_grad():
        reference = [
            float(model(input_ids=torch.tensor([s])).logits[0, -1, 0]) for s in rm.encode(prompts, completions)
        ]
    assert scores == pytest.approx(reference, abs=1e-4)
    # a pooled [CLS] sequence classifier runs whole; the report still names the reason sharing is off
    from transformers import BertForSequenceClassification

    randomize(BertForSequenceClassification(config), 4).save_pretrained(tmp_path / "bert-seq")
    tok.save_pretrained(tmp_path / "bert-seq")
    seq = RewardModel(str(tmp_path / "bert-seq"))
    seq(prompts, completions)
    assert seq.last_report is not None and "bidirectional" in seq.last_report.prefix_sharing


def test_sharing_can_be_turned_off_and_says_so(zoo: dict[str, Path]) -> None:
    prompt = "janet has sixteen eggs, eats three and bakes with four. how much does she make every day?"
    rm = RewardModel(str(zoo["token_cls"]), head="token-cls", share_prefix=False)
    rm([prompt] * 3, ["nine", "18", "x"])
    assert rm.last_report is not None and rm.last_report.prefix_sharing == "off: disabled (share_prefix=False)"
    on = RewardModel(str(zoo["token_cls"]), head="token-cls")
    assert on([prompt] * 3, ["nine", "18", "x"]) == pytest.approx(rm([prompt] * 3, ["nine", "18", "x"]), abs=1e-5)
    assert on.last_report is not None and on.last_report.prefix_sharing == "on"
    assert on.last_report.shared_groups == 1 and on.last_report.shared_tokens > 2 * 16


def test_prefix_groups_stop_before_every_read_position() -> None:
    from rewardflow.models.prefix import MIN_SHARED, plan_groups

    shared = list(range(100, 100 + MIN_SHARED + 4))
    ids = [[*shared, 1, 2, 7], [*shared, 1, 2, 7, 7], [*shared, 5]]
    (group,) = plan_groups(ids, [len(shared)] * 3)
    assert group.rows == (0, 1, 2) and group.prefix == len(shared)  # the common prefix, one short of the shortest
    # a sequence classifier whose saved pad id is 7 reads row 0 at index len(shared) + 1: the prefix must stop there
    (group,) = plan_groups(ids[:2], [len(shared)] * 2, [len(shared) + 1, len(shared) + 1])
    assert group.prefix == len(shared) + 1
    (group,) = plan_groups(ids[:2], [len(shared)] * 2)
    assert group.prefix == len(shared) + 2  # without read positions: one short of the shortest (3 + prefix)
    assert plan_groups([[*shared[:5], 1], [*shared[:5], 2]], [5, 5]) == []  # under MIN_SHARED: not worth a pass


def test_bundles_fill_the_token_budget_by_prefix_length() -> None:
    from rewardflow.models.prefix import SharedGroup, bundle_groups

    groups = [SharedGroup(40, (0, 1)), SharedGroup(20, (2, 3)), SharedGroup(30, (4, 5)), SharedGroup(90, (6, 7))]
    assert bundle_groups(groups, 100, together=False) == [[g] for g in groups]  # the CPU: a pass per group
    bundles = bundle_groups(groups, 100, together=True)
    # sorted by prefix: 20, 30 (2 x 30 <= 100), 40 (3 x 40 > 100: a new pass), 90 (2 x 90 > 100: alone)
    assert [[g.prefix for g in b] for b in bundles] == [[20, 30], [40], [90]]
    assert bundle_groups(groups, 10, together=True) == [[g] for g in sorted(groups, key=lambda g: g.prefix)]
    assert [len(b) for b in bundle_groups(groups, 1000, together=True)] == [4]
    assert [len(b) for b in bundle_groups(groups, 1000, together=True, max_rows=3)] == [3, 1]  # max_batch_size


@pytest.mark.parametrize("max_batch_size", [1, 2, None])
def test_groups_together_score_as_groups_apart(zoo: dict[str, Path], max_batch_size: int | None) -> None:
    """Prompts of different lengths in one left-padded pass, groups of uneven size, a lone sample, duplicates."""
    prompts, completions = [], []
    for k, size in enumerate((1, 2, 5, 3)):
        prompt = "janet sells eggs at the market every day " * (k + 2)
        for j in range(size):
            prompts.append(prompt)
            completions.append(["18", "nine dollars", "she makes eighteen", "18", "x " * (j + 1)][j])
    options = {"head": "token-cls", "max_batch_size": max_batch_size, "token_budget": 512}
    apart = RewardModel(str(zoo["token_cls"]), groups_together=False, **options)
    together = RewardModel(str(zoo["token_cls"]), groups_together=True, **options)
    alone = RewardModel(str(zoo["token_cls"]), share_prefix=False, packing=False, **options)
    reference = alone(prompts, completions)
    assert apart(prompts, completions) == pytest.approx(reference, abs=1e-5)
    assert together(prompts, completions) == pytest.approx(reference, abs=1e-5)
    report = together.last_report
    assert report is not None and report.prefix_sharing == "on" and report.shared_groups == 3
    if max_batch_size == 1:  # one row per pass: nothing to run together
        assert report.micro_batches == apart.last_report.micro_batches
    else:
        assert report.micro_batches < apart.last_report.micro_batches


# ---------------------------------------------------------------------------------------------- text_format

HH_PROMPTS = ["\n\nHuman: what is two plus two?\n\nAssistant:", "\n\nHuman: how many eggs are left?\n\nAssistant:"]
HH_COMPLETIONS = [" the answer is four.", " she sells 16 - 3 - 4 = 9 eggs.\n"]


@pytest.fixture(scope="module")
def bos_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> object:
    """A Llama-style tokenizer: it adds BOS to every text it encodes, and it has a chat template."""
    from tokenizers import processors

    root = tmp_path_factory.mktemp("bos")
    tok = build_tokenizer(root / "tmp", vocab_size=320, specials=["[INST]", "[/INST]"], template=RM_TEMPLATE)
    bos = tok.bos_token_id  # type: ignore[attr-defined]
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(  # type: ignore[attr-defined]
        single="<s> $A", pair="<s> $A <s> $B:1", special_tokens=[("<s>", bos)]
    )
    assert tok("abc")["input_ids"][0] == bos  # type: ignore[operator]
    return tok


def test_plain_text_is_tokenized_as_areal_and_trl_tokenize_it(bos_tokenizer: object, tmp_path: Path) -> None:
    """AReaL's HH-RLHF reward datasets (areal/dataset/hhrlhf.py, Apache-2.0) and TRL's RewardTrainer on standard
    data (trl/trainer/reward_trainer.py, Apache-2.0) encode ``text + eos_token`` with the tokenizer's special
    tokens; the model reads the last token (AReaL's ``compute_rw_loss``: the terminal index of each sequence)."""
    tok: Any = bos_tokenizer
    path = build_llama(tmp_path / "rm", tok, head="token-cls")
    rm = RewardModel(str(path), head="token-cls", text_format="plain")  # eos="auto": "add"
    ids = rm.encode(HH_PROMPTS, HH_COMPLETIONS)
    expected = [tok.encode(p + c + tok.eos_token) for p, c in zip(HH_PROMPTS, HH_COMPLETIONS, strict=True)]
    assert ids == expected
    assert all(seq[0] == tok.bos_token_id and seq[-1] == tok.eos_token_id for seq in ids)
    assert rm.inputs(HH_PROMPTS, HH_COMPLETIONS) == [p + c for p, c in zip(HH_PROMPTS, HH_COMPLETIONS, strict=True)]
    scores = rm(HH_PROMPTS, HH_COMPLETIONS)
    assert scores == pytest.approx(per_sample_reference(path, "token-cls", ids, 0), abs=1e-5)
    # the chat rendering (the default with this tokenizer) and the plain text are two different readings
    chat = RewardModel(str(path), head="token-cls")
    assert chat.encode(HH_PROMPTS, HH_COMPLETIONS) != ids
    assert scores != pytest.approx(chat(HH_PROMPTS, HH_COMPLETIONS), abs=1e-3)
    as_is = RewardModel(str(path), head="token-cls", text_format="plain", eos="as-is")
    assert [[*seq, tok.eos_token_id] for seq in as_is.encode(HH_PROMPTS, HH_COMPLETIONS)] == ids
    # truncation keeps BOS and the text's end (the prompt's content goes first)
    cut = RewardModel(str(path), head="token-cls", text_format="plain", max_length=12)
    for a, b in zip(cut.encode(HH_PROMPTS, HH_COMPLETIONS), ids, strict=True):
        assert len(a) == 12 and a[0] == tok.bos_token_id and a[-4:] == b[-4:]


def test_plain_text_under_an_openrlhf_head_is_openrlhfs_recipe(bos_tokenizer: object, tmp_path: Path) -> None:
    """OpenRLHF's RewardDataset without a chat template (openrlhf/datasets/reward_dataset.py, Apache-2.0):
    ``(prompt + response).rstrip("\\n")``, then ``" " + eos``, tokenized without special tokens."""
    tok: Any = bos_tokenizer
    path = build_value_head_checkpoint(tmp_path / "rm", tok, style="openrlhf")
    rm = RewardModel(str(path), head="value-head", text_format="plain")
    texts = [(p + c).rstrip("\n") + " " + tok.eos_token for p, c in zip(HH_PROMPTS, HH_COMPLETIONS, strict=True)]
    assert rm.encode(HH_PROMPTS, HH_COMPLETIONS) == [tok(t, add_special_tokens=False)["input_ids"] for t in texts]


def test_text_format_auto_and_its_errors(bos_tokenizer: object, zoo: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="text_format"):
        RewardModel(str(tmp_path), text_format="markdown")
    chat = RewardModel(str(build_llama(tmp_path / "chat", bos_tokenizer, head="token-cls")), head="token-cls")
    assert chat.inputs(PROMPTS[:1], COMPLETIONS[:1])[0].startswith("<s>[INST]")  # auto: the template
    no_template = str(zoo["plain_seq_cls"])  # a classifier whose tokenizer has no chat template
    assert RewardModel(no_template).inputs(PROMPTS[:1], COMPLETIONS[:1]) == [(PROMPTS[0], COMPLETIONS[0])]  # a pair
    with pytest.raises(ModelError, match="needs a chat template"):
        RewardModel(no_template, text_format="chat")(PROMPTS, COMPLETIONS)
