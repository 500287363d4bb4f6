"""rewardflow's ``head="seq-cls"`` against TRL 1.16's own ``RewardTrainer``: the ids it trains on, the scores it sees.

docs/en/reward-models.md says, from reading TRL's code, that ``eos="as-is"`` (rewardflow's default for sequence
classifiers) reads what TRL's ``RewardTrainer`` trains on conversational data: the chat template's rendering,
tokenized as it is. And a checkpoint without a pad token is the case where transformers' batched pad-id search
reads one token early. Both meet here, driven by TRL itself:

* a tiny Llama sequence classifier whose tokenizer has no pad token and whose template ends every turn with EOS
  (Llama-3 style), so TRL sets ``pad_token = eos`` and writes that pad id into the model's config;
* ``RewardTrainer`` builds and tokenizes the dataset, trains one step, and ``save_model`` writes the checkpoint;
* TRL's ``compute_loss`` on its own collated batch gives the rewards it trains with (``outputs.logits``).

rewardflow then loads the saved checkpoint and must build the same ids from the same messages and give the same
scores, packed or padded, with either padding side, with prefix sharing or without.

The same again on standard (plain-text) data, where TRL adds ``eos_token`` to each text before tokenizing it:
rewardflow's ``text_format="plain"`` (``eos="auto"`` is ``"add"`` there).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

trl = pytest.importorskip("trl")

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402

from rewardflow.models import RewardModel  # noqa: E402
from tests.frameworks._tokenizer import CHAT_TEMPLATE, build_tokenizer, tiny_config  # noqa: E402

QUESTIONS = [
    "Natalia sold clips to 48 of her friends in April. How many clips did Natalia sell?",
    "Weng earns $12 an hour for babysitting. How much did she earn?",
    "How many clips did Natalia sell altogether in April and May?",
    "Weng earns $12 an hour. Yesterday, she just did 50 minutes of babysitting.",
]
ANSWERS = [
    ("48 / 2 = 24 and 48 + 24 = 72. The answer is 72. #### 72", "The answer is 18."),
    ("She earns 12 / 60 * 50 = 10. #### 10", "I am not sure."),
    ("Let me think step by step. 48 + 24 = 72", "72"),
    ("12 / 60 = 0.2 and 0.2 * 50 = 10. #### 10", "Weng earns $12."),
]


def _train(root: Path, rows: list[dict[str, Any]]) -> tuple[Path, Any, Any]:
    """Train one step with TRL's RewardTrainer; ``(checkpoint saved by TRL, the trainer, its batch of every pair)``."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    tokenizer = build_tokenizer(root / "tok")
    tokenizer.pad_token = None  # Llama-3 style: no pad token; TRL falls back to EOS
    tokenizer.chat_template = CHAT_TEMPLATE.replace("<|im_end|>\n", "<|im_end|>")  # each turn ends with EOS
    config = tiny_config(LlamaConfig, tokenizer, num_labels=1, pad_token_id=None)
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(config)
    with torch.no_grad():
        model.score.weight.normal_(0.0, 1.0)  # a spread of scores, so a token read wrong shows
    args = trl.RewardConfig(
        output_dir=str(root / "out"),
        max_steps=1,
        per_device_train_batch_size=len(rows),
        learning_rate=1e-3,
        report_to="none",
        use_cpu=True,
        bf16=False,  # TRL's default trains under bf16 autocast; fp32 here, to compare at fp32 tolerance
        save_strategy="no",
        logging_steps=1,
        seed=0,
    )
    trainer = trl.RewardTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer
    )
    trainer.train()
    checkpoint = root / "rm"
    trainer.save_model(str(checkpoint))
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
    return checkpoint, trainer, batch


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, Any]:
    """Conversational data: chat messages, rendered by the tokenizer's template."""
    rows = [
        {
            "prompt": [{"role": "user", "content": q}],
            "chosen": [{"role": "assistant", "content": good}],
            "rejected": [{"role": "assistant", "content": bad}],
        }
        for q, (good, bad) in zip(QUESTIONS, ANSWERS, strict=True)
    ]
    return _train(tmp_path_factory.mktemp("trl-rm"), rows)


@pytest.fixture(scope="module")
def trained_plain(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, Any]:
    """Standard data: plain strings, the prompt with its own separators (HH-RLHF style)."""
    rows = [
        {"prompt": f"\n\nHuman: {q}\n\nAssistant:", "chosen": f" {good}", "rejected": f" {bad}"}
        for q, (good, bad) in zip(QUESTIONS, ANSWERS, strict=True)
    ]
    return _train(tmp_path_factory.mktemp("trl-rm-plain"), rows)


def _trl_scores(trainer: Any, batch: Any) -> list[float]:
    """The rewards TRL's compute_loss computes on its collated batch (chosen first, then rejected)."""
    trainer.model.eval()
    with torch.no_grad():
        _, outputs = trainer.compute_loss(trainer.model, dict(batch), return_outputs=True)
    return outputs.logits.squeeze(-1).tolist()


def _texts() -> tuple[list[str], list[str]]:
    return QUESTIONS * 2, [good for good, _ in ANSWERS] + [bad for _, bad in ANSWERS]


def test_trl_wrote_eos_as_the_pad_id_and_rewardflow_reads_its_ids(trained: tuple[Path, Any, Any]) -> None:
    checkpoint, trainer, _ = trained
    from transformers import AutoConfig

    eos = trainer.processing_class.eos_token_id
    assert AutoConfig.from_pretrained(str(checkpoint)).pad_token_id == eos  # the case that misreads batches
    data = trainer.train_dataset
    theirs = list(data["chosen_ids"]) + list(data["rejected_ids"])
    ours = RewardModel(str(checkpoint)).encode(*_texts())  # seq-cls, eos="auto": "as-is"
    assert ours == theirs
    assert all(seq[-1] == eos for seq in ours)


def test_trl_reward_trainer_scores_equal_rewardflows(trained: tuple[Path, Any, Any]) -> None:
    checkpoint, trainer, batch = trained
    theirs = _trl_scores(trainer, batch)
    assert len({round(x, 3) for x in theirs}) == len(theirs)  # distinct: a row or token read wrong would show
    # the read position matters here: the same model read at the final EOS (where a pad-free search would read)
    # gives other scores than TRL trained with (its pad id is EOS, so it reads the token before)
    from transformers import AutoModelForSequenceClassification

    at_eos = AutoModelForSequenceClassification.from_pretrained(str(checkpoint)).eval()
    at_eos.config.pad_token_id = None
    with torch.no_grad():
        misread = [
            at_eos(torch.tensor([ids])).logits[0, 0].item() for ids in RewardModel(str(checkpoint)).encode(*_texts())
        ]
    assert all(abs(a - b) > 1e-2 for a, b in zip(misread, theirs, strict=True))
    for side in ("left", "right"):
        for packing in (True, False):
            for share in (True, False):
                rm = RewardModel(str(checkpoint), padding_side=side, packing=packing, share_prefix=share)
                assert rm(*_texts()) == pytest.approx(theirs, abs=1e-5), (side, packing, share, rm.last_report)
                if share:
                    assert rm.last_report is not None and rm.last_report.prefix_sharing == "on"


def test_trl_standard_data_is_rewardflows_plain_text(trained_plain: tuple[Path, Any, Any]) -> None:
    checkpoint, trainer, batch = trained_plain
    data = trainer.train_dataset
    theirs_ids = list(data["chosen_ids"]) + list(data["rejected_ids"])
    prompts = [f"\n\nHuman: {q}\n\nAssistant:" for q in QUESTIONS] * 2
    completions = [f" {good}" for good, _ in ANSWERS] + [f" {bad}" for _, bad in ANSWERS]
    eos = trainer.processing_class.eos_token_id
    rm = RewardModel(str(checkpoint), text_format="plain")  # eos="auto": "add", as TRL's add_eos
    assert rm.encode(prompts, completions) == theirs_ids
    assert all(seq[-1] == eos for seq in theirs_ids)
    theirs = _trl_scores(trainer, batch)
    assert len({round(x, 3) for x in theirs}) == len(theirs)
    for packing in (True, False):
        assert RewardModel(str(checkpoint), text_format="plain", packing=packing)(prompts, completions) == (
            pytest.approx(theirs, abs=1e-5)
        )
    # the default reading (the tokenizer's chat template) is not what this model was trained on
    assert RewardModel(str(checkpoint)).encode(prompts, completions) != theirs_ids
