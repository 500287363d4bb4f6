"""rewardflow's ``text_format="plain"`` against AReaL 1.0.4's own reward-model data and loss.

AReaL trains reward models (``RWTrainer``) on plain text: ``get_hhrlhf_rw_dataset`` (``areal/dataset/hhrlhf.py``)
encodes each HH-RLHF conversation as ``tokenizer.encode(text + tokenizer.eos_token)``, BOS included where the
tokenizer adds one, and ``compute_rw_loss`` (``areal/trainer/rw/rw_engine.py``) reads the critic's per-token output
at each sequence's terminal token of the packed batch. Driven here: that dataset function, on a local JSON-lines
dataset, and that loss, on the per-token scores of a tiny token-classification Llama (AReaL's critic class),
computed one unpadded sequence at a time and laid end to end as AReaL's packed batches are.

rewardflow, given the same conversations split into prompt and completion, must build the same ids with
``text_format="plain"`` (``eos="auto"`` is ``"add"`` there), and its scores must give the loss AReaL computes.

Entered without their ``__init__``: ``areal.trainer`` (it imports every trainer, and through them the experiment
trackers, none installed here), and the gateway controller that ``rw_engine.py`` subclasses for its HTTP service
(faked as an empty base class). ``compute_rw_loss`` itself runs unchanged.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

areal = pytest.importorskip("areal")
datasets = pytest.importorskip("datasets")

import torch  # noqa: E402

from rewardflow.models import RewardModel  # noqa: E402
from tests.frameworks._fakes import modules_replaced, stub  # noqa: E402
from tests.frameworks._tokenizer import build_tokenizer, tiny_config  # noqa: E402

PAIRS = [
    ("Natalia sold clips to 48 of her friends in April. How many clips?", "48 + 24 = 72. #### 72", "18"),
    ("Weng earns $12 an hour for babysitting. How much did she earn?", "12 / 60 * 50 = 10. #### 10", "I am not sure."),
    ("How many clips did Natalia sell altogether in April and May?", "The answer is 72.", "72 / 2 = 36"),
]


@pytest.fixture(scope="module")
def compute_rw_loss() -> Iterator[Any]:
    """``areal.trainer.rw.rw_engine.compute_rw_loss``, imported as the module docstring says."""
    gateway = "areal.experimental.training_service"
    stubs = {
        "areal.trainer": stub("areal.trainer", __path__=[str(Path(areal.__file__).parent / "trainer")]),
        gateway: stub(gateway),
        f"{gateway}.controller": stub(f"{gateway}.controller"),
        f"{gateway}.controller.controller": stub(f"{gateway}.controller.controller", GatewayTrainController=object),
    }
    with modules_replaced(stubs, imported=("areal.trainer.rw.rw_engine", "areal.trainer.rw")):
        yield importlib.import_module("areal.trainer.rw.rw_engine").compute_rw_loss


def _prompt(question: str) -> str:
    return f"\n\nHuman: {question}\n\nAssistant:"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, Path]:
    """``(checkpoint, tokenizer, dataset directory)``: a token-cls Llama whose tokenizer adds BOS, HH-RLHF rows."""
    from tokenizers import processors
    from transformers import LlamaConfig, LlamaForTokenClassification

    root = tmp_path_factory.mktemp("areal-rm")
    tokenizer = build_tokenizer(root / "tok")
    tokenizer.bos_token = "<|endoftext|>"  # a Llama-style tokenizer: BOS in front of every text it encodes
    bos = tokenizer.bos_token_id
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<|endoftext|> $A", pair="<|endoftext|> $A <|endoftext|> $B:1", special_tokens=[("<|endoftext|>", bos)]
    )
    config = tiny_config(LlamaConfig, tokenizer, num_labels=1, bos_token_id=bos)
    torch.manual_seed(0)
    model = LlamaForTokenClassification(config)
    with torch.no_grad():
        model.score.weight.normal_(0.0, 1.0)
    checkpoint = root / "rm"
    model.save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)
    data = root / "hh"
    data.mkdir()
    with (data / "train.jsonl").open("w") as f:
        for question, good, bad in PAIRS:
            f.write(json.dumps({"chosen": f"{_prompt(question)} {good}", "rejected": f"{_prompt(question)} {bad}"}))
            f.write("\n")
    return checkpoint, tokenizer, data


def _texts() -> tuple[list[str], list[str]]:
    prompts = [_prompt(q) for q, _, _ in PAIRS for _ in range(2)]
    completions = [f" {a}" for _, good, bad in PAIRS for a in (good, bad)]
    return prompts, completions


def test_areal_hhrlhf_dataset_builds_the_ids_rewardflow_reads(setup: tuple[Path, Any, Path]) -> None:
    from areal.dataset.hhrlhf import get_hhrlhf_rw_dataset

    checkpoint, tokenizer, data = setup
    dataset = get_hhrlhf_rw_dataset(str(data), "train", tokenizer)
    theirs = [ids for row in dataset for ids in (row["chosen_ids"], row["rejected_ids"])]
    rm = RewardModel(str(checkpoint), head="token-cls", text_format="plain")
    assert rm.encode(*_texts()) == theirs
    assert all(seq[0] == tokenizer.bos_token_id and seq[-1] == tokenizer.eos_token_id for seq in theirs)
    # the default reading renders the tokenizer's chat template: not the text AReaL trained on
    assert RewardModel(str(checkpoint), head="token-cls").encode(*_texts()) != theirs


def test_areal_rw_loss_on_the_critics_outputs_equals_rewardflows(
    setup: tuple[Path, Any, Path], compute_rw_loss: Any
) -> None:
    from areal.dataset.hhrlhf import get_hhrlhf_rw_dataset
    from transformers import AutoModelForTokenClassification

    checkpoint, tokenizer, data = setup
    dataset = get_hhrlhf_rw_dataset(str(data), "train", tokenizer)
    sequences = [ids for row in dataset for ids in (row["chosen_ids"], row["rejected_ids"])]
    critic = AutoModelForTokenClassification.from_pretrained(str(checkpoint)).eval()
    with torch.no_grad():  # per-token outputs, sequences laid end to end: AReaL's packed batch
        per_token = torch.cat([critic(input_ids=torch.tensor([ids])).logits[0, :, 0] for ids in sequences])
    lengths = torch.tensor([len(ids) for ids in sequences])
    cu_seqlens = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    theirs = float(compute_rw_loss(per_token, {"cu_seqlens": cu_seqlens}))

    for packing in (True, False):
        rm = RewardModel(str(checkpoint), head="token-cls", text_format="plain", packing=packing)
        scores = torch.tensor(rm(*_texts())).view(-1, 2)
        ours = float(-torch.nn.functional.logsigmoid(scores[:, 0] - scores[:, 1]).mean())
        assert ours == pytest.approx(theirs, abs=1e-5)
        # and each score is the critic's output at the sequence's terminal token
        terminal = per_token[cu_seqlens[1:] - 1]
        assert scores.flatten().tolist() == pytest.approx(terminal.tolist(), abs=1e-5)
