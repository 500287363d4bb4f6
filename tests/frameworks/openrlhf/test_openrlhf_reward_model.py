"""rewardflow's ``head="value-head"`` against OpenRLHF 0.11.2's own reward model and reward dataset.

The claims checked here were first written from reading OpenRLHF's code (docs/en/reward-models.md): an OpenRLHF
reward model is read at the last token of ``prompt + chosen`` as its ``RewardDataset`` builds the text (the chat
template's rendering, trailing newlines stripped, EOS appended unless it is there: ``eos="append"``, rewardflow's
default for these heads), and ``normalize=True`` applies the ``mean``/``std`` saved in config.json as
``--normalize_reward`` does. Here OpenRLHF's own code builds the token ids and the scores:

* ``RewardDataset`` (``openrlhf/datasets/reward_dataset.py``) on a ``datasets.Dataset`` of chat messages, with
  ``apply_chat_template`` on, as ``openrlhf.cli.train_rm`` runs it, and its ``collate_fn`` (left padding);
* ``get_llm_for_sequence_regression(path, "reward", normalize_reward=True)`` (``openrlhf/models/model.py``): the
  checkpoint is written by OpenRLHF's own reward-model class (``_get_reward_model``) with ``save_pretrained``, as
  its trainer saves one, and scored by that class's ``forward``.

OpenRLHF loads reward models in bf16 or fp16 only; the weights are rounded to bf16 before they are saved, so its
bf16 load is exact, and its model is then run in float32 (``.float()``) to compare at float32 tolerance.

Faked: ``deepspeed``, ``flash_attn`` and ``peft``, as empty modules. ``openrlhf/models/model.py`` imports them at
module level, but the path driven here (no ZeRO-3 config, no LoRA, no 4-bit, no packed samples) never calls them;
flash-attn cannot be built on a CPU-only machine. The package ``openrlhf.models`` is entered without running its
``__init__`` (which imports the actor and its training losses).
"""

from __future__ import annotations

import importlib
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

openrlhf = pytest.importorskip("openrlhf")
datasets = pytest.importorskip("datasets")

import torch  # noqa: E402

from rewardflow.models import RewardModel  # noqa: E402
from tests.frameworks._fakes import modules_replaced, stub  # noqa: E402
from tests.frameworks._tokenizer import build_tokenizer, tiny_config  # noqa: E402

PKG = Path(openrlhf.__file__).parent
MEAN, STD = 0.25, 1.75
QUESTIONS = [
    "Natalia sold clips to 48 of her friends in April. How many clips did Natalia sell?",
    "Weng earns $12 an hour for babysitting. How much did she earn?",
    "How many clips did Natalia sell altogether in April and May?",
]
ANSWERS = [
    ("48 / 2 = 24 and 48 + 24 = 72. The answer is 72. #### 72", "The answer is 18."),
    ("She earns 12 / 60 * 50 = 10. #### 10", "I am not sure."),
    ("Let me think step by step. 48 + 24 = 72\n\n", "72"),  # trailing newlines: OpenRLHF strips them
]


@pytest.fixture(scope="module")
def openrlhf_model() -> Iterator[Any]:
    """``openrlhf.models.model``, imported with the unused GPU/training imports faked (module docstring)."""
    unused = object()
    stubs = {
        "deepspeed": stub("deepspeed"),
        "flash_attn": stub("flash_attn"),
        "flash_attn.bert_padding": stub(
            "flash_attn.bert_padding", index_first_axis=unused, pad_input=unused, rearrange=unused, unpad_input=unused
        ),
        "flash_attn.utils": stub("flash_attn.utils"),
        "flash_attn.utils.distributed": stub("flash_attn.utils.distributed", all_gather=unused),
        "peft": stub("peft", LoraConfig=unused, get_peft_model=unused, TaskType=unused),
        "peft.tuners": stub("peft.tuners"),
        "peft.tuners.lora": stub("peft.tuners.lora", LoraLayer=unused),
        "openrlhf.models": stub("openrlhf.models", __path__=[str(PKG / "models")]),
    }
    loaded = ("openrlhf.models.model", "openrlhf.models.ring_attn_utils", "openrlhf.models.utils")
    with modules_replaced(stubs, imported=loaded):
        yield importlib.import_module("openrlhf.models.model")


@pytest.fixture(scope="module")
def checkpoint(openrlhf_model: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Qwen2 reward model saved by OpenRLHF's own class, with ``mean``/``std`` in its config."""
    from transformers import Qwen2Config, Qwen2Model
    from transformers.models.qwen2.modeling_qwen2 import Qwen2PreTrainedModel

    directory = tmp_path_factory.mktemp("openrlhf-rm")
    tokenizer = build_tokenizer(directory)
    config = tiny_config(Qwen2Config, tokenizer)
    config.normalize_reward = False
    cls = openrlhf_model._get_reward_model(Qwen2PreTrainedModel, Qwen2Model, "score")
    torch.manual_seed(0)
    model = cls(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
            p.copy_(p.to(torch.bfloat16).float())  # exact under OpenRLHF's bf16 load
    model.config.mean, model.config.std = MEAN, STD  # what train_rm writes with --normalize_reward
    model.save_pretrained(directory)
    return directory


def _openrlhf_batch(tokenizer: Any, max_length: int, chat: bool = True) -> tuple[Any, Any, Any, Any]:
    """``(chosen_ids, chosen_mask, reject_ids, reject_mask)`` from OpenRLHF's RewardDataset and collate_fn.

    ``chat``: chat messages with ``apply_chat_template`` on; else plain strings (HH-RLHF style prompts)."""
    from openrlhf.datasets.reward_dataset import RewardDataset

    if chat:
        rows = [
            {
                "prompt": [{"role": "user", "content": q}],
                "chosen": [{"role": "assistant", "content": good}],
                "rejected": [{"role": "assistant", "content": bad}],
            }
            for q, (good, bad) in zip(QUESTIONS, ANSWERS, strict=True)
        ]
    else:
        rows = [
            {"prompt": _plain_prompt(q), "chosen": f" {good}", "rejected": f" {bad}"}
            for q, (good, bad) in zip(QUESTIONS, ANSWERS, strict=True)
        ]
    data = types.SimpleNamespace(prompt_key="prompt", chosen_key="chosen", rejected_key="rejected")
    data.apply_chat_template = chat
    strategy = types.SimpleNamespace(args=types.SimpleNamespace(data=data))
    dataset = RewardDataset(datasets.Dataset.from_list(rows), tokenizer, max_length, strategy, num_processors=1)
    chosen_ids, chosen_mask, reject_ids, reject_mask, _ = dataset.collate_fn([dataset[i] for i in range(len(rows))])
    return chosen_ids, chosen_mask, reject_ids, reject_mask


def _plain_prompt(question: str) -> str:
    return f"\n\nHuman: {question}\n\nAssistant:"


def _unpad(ids: Any, mask: Any) -> list[list[int]]:
    return [row[m.bool()].tolist() for row, m in zip(ids, mask, strict=True)]


def _texts() -> tuple[list[str], list[str]]:
    prompts = [q for q in QUESTIONS for _ in range(2)]
    completions = [a for pair in ANSWERS for a in pair]
    return prompts, completions


def test_openrlhf_reward_dataset_builds_the_ids_rewardflow_reads(checkpoint: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
    chosen_ids, chosen_mask, reject_ids, reject_mask = _openrlhf_batch(tokenizer, max_length=512)
    pairs = zip(_unpad(chosen_ids, chosen_mask), _unpad(reject_ids, reject_mask), strict=True)
    theirs = [x for pair in pairs for x in pair]
    rm = RewardModel(str(checkpoint), head="value-head")  # eos="auto": "append" for an OpenRLHF head
    ours = rm.encode(*_texts())
    assert ours == theirs
    eos = tokenizer.eos_token_id
    # the read is at <|im_end|>, the template's EOS, not at the newline the template writes after it
    assert all(seq[-1] == eos and seq[-2] != eos for seq in ours)
    as_is = RewardModel(str(checkpoint), head="value-head", eos="as-is").encode(*_texts())
    assert all(a[:-1] == b for a, b in zip(as_is, ours, strict=True))  # "as-is" reads one token later: "\n"


def test_openrlhf_reward_model_scores_equal_rewardflows(openrlhf_model: Any, checkpoint: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
    chosen_ids, chosen_mask, reject_ids, reject_mask = _openrlhf_batch(tokenizer, max_length=512)
    model = openrlhf_model.get_llm_for_sequence_regression(
        str(checkpoint), "reward", param_dtype="bf16", attn_implementation="sdpa", normalize_reward=True
    )
    model = model.float().eval()
    # OpenRLHF 0.11.2 under its pinned transformers 5.15 loses the mean/std it copies from config.json into
    # non-persistent buffers: from_pretrained leaves them as uninitialized memory (upstream, open fix:
    # OpenRLHF/OpenRLHF#1343). They are set here to the saved values, as that fix restores them, so that
    # OpenRLHF's own forward normalizes as it means to.
    assert (model.config.mean, model.config.std) == (MEAN, STD)
    with torch.no_grad():
        model.mean.fill_(MEAN)
        model.std.fill_(STD)
        chosen = model(chosen_ids, attention_mask=chosen_mask).tolist()  # eval mode: normalized, as evaluate()
        rejected = model(reject_ids, attention_mask=reject_mask).tolist()
        model.normalize_reward = False
        raw = model(chosen_ids, attention_mask=chosen_mask).tolist()
    theirs = [x for pair in zip(chosen, rejected, strict=True) for x in pair]
    assert len({round(x, 3) for x in theirs}) == len(theirs)  # distinct: a mix-up of rows would show
    assert [(x - MEAN) / STD for x in raw] == pytest.approx(chosen, abs=1e-6)

    for packing in (True, False):
        rm = RewardModel(str(checkpoint), head="value-head", normalize=True, packing=packing, share_prefix=False)
        assert rm(*_texts()) == pytest.approx(theirs, abs=1e-5)
    shared = RewardModel(str(checkpoint), head="value-head", normalize=True)  # pairs share their prompt
    assert shared(*_texts()) == pytest.approx(theirs, abs=1e-5)
    assert shared.last_report is not None and shared.last_report.prefix_sharing == "on"
    plain = RewardModel(str(checkpoint), head="value-head")  # normalize=False: OpenRLHF's raw value
    assert plain(*_texts())[::2] == pytest.approx(raw, abs=1e-5)


def test_openrlhf_right_cut_is_rewardflows_right_cut_with_eos_written_last(checkpoint: Path) -> None:
    """Past ``max_length`` OpenRLHF cuts the right end and overwrites the last id with EOS; rewardflow's
    ``truncation_side="right"`` is the same cut without the overwrite, and its default keeps both ends."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
    limit = 24
    chosen_ids, chosen_mask, _, _ = _openrlhf_batch(tokenizer, max_length=limit)
    theirs = _unpad(chosen_ids, chosen_mask)
    prompts, completions = QUESTIONS, [good for good, _ in ANSWERS]
    right = RewardModel(str(checkpoint), head="value-head", max_length=limit, truncation_side="right")
    ours = right.encode(prompts, completions)
    full = RewardModel(str(checkpoint), head="value-head").encode(prompts, completions)
    assert all(len(seq) > limit for seq in full)  # every sample was cut
    eos = tokenizer.eos_token_id
    for a, b, whole in zip(ours, theirs, full, strict=True):
        assert len(a) == len(b) == limit and a[:-1] == b[:-1] == whole[: limit - 1]
        assert b[-1] == eos and a[-1] == whole[limit - 1] != eos
    ends = RewardModel(str(checkpoint), head="value-head", max_length=limit).encode(prompts, completions)
    assert all(seq[0] == whole[0] and seq[-3:] == whole[-3:] for seq, whole in zip(ends, full, strict=True))


def test_openrlhf_plain_text_is_rewardflows_plain_text_under_its_head(checkpoint: Path) -> None:
    """Without ``apply_chat_template``, OpenRLHF joins prompt and response as they are; ``text_format="plain"``
    under an OpenRLHF head reads the same ids (no special tokens, ``eos="append"``)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
    chosen_ids, chosen_mask, reject_ids, reject_mask = _openrlhf_batch(tokenizer, max_length=512, chat=False)
    pairs = zip(_unpad(chosen_ids, chosen_mask), _unpad(reject_ids, reject_mask), strict=True)
    theirs = [x for pair in pairs for x in pair]
    prompts = [_plain_prompt(q) for q in QUESTIONS for _ in range(2)]
    completions = [f" {a}" for pair in ANSWERS for a in pair]
    rm = RewardModel(str(checkpoint), head="value-head", text_format="plain")
    assert rm.encode(prompts, completions) == theirs
    assert RewardModel(str(checkpoint), head="value-head").encode(prompts, completions) != theirs
