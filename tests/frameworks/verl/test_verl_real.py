"""rewardflow inside a real, pinned verl (0.9.1), on CPU, without a GPU (and once under Ray).

* The command lines in docs/en/integrations-verl.md are composed with verl's own Hydra config (``ppo_trainer``)
  and handed to verl's own loaders: ``get_custom_reward_fn`` for ``compute_score``, and ``RewardLoopWorker``
  (the reward path of verl 0.8+) with a fake ``DataProto``. On rewardflow 0.1 the documented keys were the
  top-level ``custom_reward_function.*``, which main_ppo accepts and ignores: verl got no custom function.
* :class:`RewardflowRewardManager`, loaded through verl's ``reward.reward_manager.source=importlib``, scores a
  worker's whole chunk in one engine call: a batch reward sees the whole batch, a reward model scores it, and a
  hung sample is cut at its timeout; inside verl's RewardLoopManager it runs in a real Ray actor. rewardflow 0.1
  had no supported path for either in verl 0.8+.
"""

from __future__ import annotations

import re
import shlex
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import verl
from hydra import compose, initialize_config_dir
from verl import DataProto
from verl.experimental.reward_loop import RewardLoopWorker
from verl.trainer.ppo.reward import get_custom_reward_fn, resolve_reward_manager_cls

from rewardflow.errors import RewardFailedError

ROOT = Path(__file__).resolve().parents[3]
DOCS = ROOT / "docs" / "en"
VERL_VERSION = "0.9.1"
SPEC_PLACEHOLDER = "/abs/path/reward_spec.yaml"


@pytest.fixture(autouse=True)
def rewards_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reward workers import verl_test_rewards by name. Not as ``tests.frameworks.verl...``: verl's wheel installs
    a top-level ``tests`` package, which shadows this repository's ``tests`` namespace in a fresh process."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))


def documented_overrides() -> list[list[str]]:
    """The ``key=value`` arguments of every ``main_ppo`` command line in the English docs, one list per command."""
    commands = []
    for page in sorted(DOCS.glob("*.md")):
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(encoding="utf-8"), re.DOTALL):
            for command in block.replace("\\\n", " ").splitlines():
                if "verl.trainer.main_ppo" in command:
                    words = shlex.split(command.split("#")[0])
                    commands.append([w for w in words if "=" in w and not w.startswith("-")])
    return commands


def verl_config(overrides: list[str]):
    config_dir = Path(verl.__file__).parent / "trainer" / "config"
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        return compose(config_name="ppo_trainer", overrides=overrides)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny(tmp_path_factory.mktemp("tiny"))


def train_bpe(specials: list[str], vocab_size: int = 300) -> Any:
    """A byte-level BPE tokenizer trained here on one GSM8K-like line (no downloads)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(["Natalia sold 48 clips in April. user assistant #### 72 The answer is 70."], trainer)
    return bpe


def tiny_token_classifier(tokenizer: Any) -> Any:
    """A tiny token-classification Llama (seeded) for ``tokenizer``'s vocabulary: a reward model."""
    from transformers import LlamaConfig, LlamaForTokenClassification

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    return LlamaForTokenClassification(config)


def build_tiny(directory: Path) -> Path:
    """A policy tokenizer and a tiny token-classification Llama reward model, in one directory."""
    from transformers import PreTrainedTokenizerFast

    bpe = train_bpe(["<pad>", "<s>", "</s>"])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    tiny_token_classifier(tok).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def proto_batch(pad: int, prompts: list[list[int]], responses: list[list[int]], **fields: list[Any]) -> DataProto:
    """What the rollout hands the reward loop: left-padded prompts, right-padded responses, one attention mask,
    and the non-tensor ``fields`` (one value per row) as numpy object arrays."""
    plen, rlen = max(map(len, prompts)), max(map(len, responses)) + 2
    prompt_t = torch.tensor([[pad] * (plen - len(p)) + p for p in prompts])
    response_t = torch.tensor([r + [pad] * (rlen - len(r)) for r in responses])
    mask = torch.tensor(
        [
            [0] * (plen - len(p)) + [1] * len(p) + [1] * len(r) + [0] * (rlen - len(r))
            for p, r in zip(prompts, responses, strict=True)
        ]
    )
    non_tensors = {}
    for key, values in fields.items():
        column = np.empty(len(values), dtype=object)
        for i, value in enumerate(values):
            column[i] = value
        non_tensors[key] = column
    return DataProto.from_dict(
        tensors={
            "prompts": prompt_t,
            "responses": response_t,
            "attention_mask": mask,
            "input_ids": torch.cat([prompt_t, response_t], dim=1),
        },
        non_tensors=non_tensors,
    )


def gsm8k_fields(golds: list[str]) -> dict[str, list[Any]]:
    """verl's data_source / reward_model.ground_truth / extra_info for GSM8K rows."""
    return {
        "data_source": ["openai/gsm8k"] * len(golds),
        "reward_model": [{"ground_truth": gold, "style": "rule"} for gold in golds],
        "extra_info": [{"index": i} for i in range(len(golds))],
    }


def fake_batch(tokenizer_dir: Path, rows: list[tuple[str, str, str]]) -> DataProto:
    """Plain prompts (no chat template) and responses ending with EOS, for GSM8K rows ``(prompt, response, gold)``."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    prompts = [tok.encode(p) for p, _, _ in rows]
    responses = [[*tok.encode(r), tok.eos_token_id] for _, r, _ in rows]
    return proto_batch(tok.pad_token_id, prompts, responses, **gsm8k_fields([gold for _, _, gold in rows]))


ROWS = [
    ("Natalia sold 48 clips.", "48 + 24 = 72. #### 72", "72"),
    ("Natalia sold 48 clips.", "The answer is 70.", "72"),
    ("Natalia sold 48 clips.", "#### 72", "72"),
    ("Natalia sold 48 clips.", "I am not sure.", "72"),
]


def write_spec(tmp_path: Path, body: str) -> Path:
    spec = tmp_path / "reward_spec.yaml"
    spec.write_text(body)
    return spec


def documented_config(kind: str, spec: Path, tokenizer_dir: Path, **extra: str):
    """The documented command line for ``kind`` ("compute_score" or "manager"), composed by verl."""
    for overrides in documented_overrides():
        joined = " ".join(overrides)
        if (kind == "manager") == ("RewardflowRewardManager" in joined):
            overrides = [o.replace(SPEC_PLACEHOLDER, str(spec)) for o in overrides]
            overrides += [f"actor_rollout_ref.model.path={tokenizer_dir}", *(f"{k}={v}" for k, v in extra.items())]
            return verl_config(overrides)
    raise AssertionError(f"no main_ppo command for {kind} in {DOCS}")


def test_pinned_version() -> None:
    assert verl.__version__ == VERL_VERSION


def test_verl_ignores_the_old_top_level_keys(tmp_path: Path) -> None:
    # the finding behind the docs fix: main_ppo accepts these (legacy_reward_impl.yaml) but nothing reads them
    config = verl_config(["custom_reward_function.path=pkg://rewardflow.integrations.verl"])
    assert get_custom_reward_fn(config) is None


def test_every_documented_command_line_configures_rewardflow(tmp_path: Path, tokenizer_dir: Path) -> None:
    commands = documented_overrides()
    assert len(commands) >= 2, "the docs give a compute_score and a reward-manager command line"
    for overrides in commands:
        config = verl_config([o.replace(SPEC_PLACEHOLDER, str(tmp_path / "spec.yaml")) for o in overrides])
        sandbox = dict(o.split("=", 1) for o in overrides if o.startswith("reward.sandbox_fusion."))
        if sandbox:  # the `rewardflow serve` /run_code page: verl's own config must carry the URL where it reads it
            assert config.reward.sandbox_fusion.url == sandbox["reward.sandbox_fusion.url"], overrides
            assert config.reward.sandbox_fusion.url.endswith("/run_code")
        elif any("RewardflowRewardManager" in o for o in overrides):
            assert resolve_reward_manager_cls(config).__name__ == "RewardflowRewardManager"
        else:
            assert get_custom_reward_fn(config) is not None, f"verl ignores the documented keys: {overrides}"


def test_documented_keys_reach_verls_loader(tmp_path: Path, tokenizer_dir: Path, monkeypatch) -> None:
    spec = write_spec(tmp_path, "workers: 2\ntimeout: 10\nrewards:\n  - reward: gsm8k\n")
    monkeypatch.setenv("REWARDFLOW_SPEC", str(spec))
    config = documented_config("compute_score", spec, tokenizer_dir)
    fn = get_custom_reward_fn(config)
    assert fn is not None, "verl found no custom reward function under the documented keys"
    assert fn(data_source="openai/gsm8k", solution_str="#### 72", ground_truth="72", extra_info={}) == 1.0


def test_reward_loop_worker_with_compute_score(tmp_path: Path, tokenizer_dir: Path, monkeypatch) -> None:
    spec = write_spec(tmp_path, "workers: 2\ntimeout: 10\nrewards:\n  - reward: gsm8k\n")
    monkeypatch.setenv("REWARDFLOW_SPEC", str(spec))
    worker = RewardLoopWorker(documented_config("compute_score", spec, tokenizer_dir))
    # verl wraps the loaded function in functools.partial(_call_with_kwargs, raw_fn, reward_kwargs); without it,
    # verl's own gsm8k scorer would give the same numbers, silently
    assert worker.reward_manager.compute_score.args[0].__module__ == "rewardflow.integrations.verl"
    outputs = score_on_worker_loop(worker, fake_batch(tokenizer_dir, ROWS))
    assert [o["reward_score"] for o in outputs] == [1.0, 0.0, 1.0, 0.0]


def score_on_worker_loop(worker: RewardLoopWorker, data: DataProto) -> list[dict]:
    """Run ``compute_score_batch`` on the loop the worker's manager was built with (a Ray actor's own loop)."""
    return worker.loop.run_until_complete(worker.compute_score_batch(data))


def manager_worker(spec: Path, tokenizer_dir: Path, **extra: str) -> RewardLoopWorker:
    worker = RewardLoopWorker(documented_config("manager", spec, tokenizer_dir, **extra))
    assert type(worker.reward_manager).__name__ == "RewardflowRewardManager"
    return worker


def rm_scores(worker: RewardLoopWorker, data: DataProto, outputs: list[dict]) -> torch.Tensor:
    """What RewardLoopManager.compute_rm_score does with the outputs (verl's own classmethod, same-keys check)."""
    infos = [o["reward_extra_info"] for o in outputs]
    keys = list(infos[0])
    assert all(list(i) == keys for i in infos), "verl needs the same reward_extra_info keys for every sample"
    return type(worker.reward_manager).assemble_rm_scores(data, [o["reward_score"] for o in outputs])


def test_manager_scores_a_chunk_with_a_batch_reward_and_a_reward_model(tmp_path: Path, tokenizer_dir: Path) -> None:
    spec = write_spec(
        tmp_path,
        "workers: 2\ntimeout: 30\nrewards:\n"
        "  - name: acc\n    reward: gsm8k\n"
        "  - name: seen\n    reward: verl_test_rewards:batch_size_seen\n    weight: 0.0\n"
        f"  - name: rm\n    reward: reward_model\n    weight: 0.0\n    params:\n      path: {tokenizer_dir}\n"
        "      head: token-cls\n",
    )
    worker = manager_worker(spec, tokenizer_dir)
    data = fake_batch(tokenizer_dir, ROWS)
    outputs = score_on_worker_loop(worker, data)
    assert [o["reward_score"] for o in outputs] == [1.0, 0.0, 1.0, 0.0]
    assert worker.reward_manager.batcher.batch_sizes == [4]  # one engine call for the worker's chunk
    for o in outputs:
        info = o["reward_extra_info"]
        assert info["seen"] == 4.0  # the batch reward saw all 4 samples at once
        assert np.isfinite(info["rm"]) and info["rewardflow_failed"] == 0.0
    scores = rm_scores(worker, data, outputs)
    assert scores.shape == data.batch["responses"].shape and scores.sum().item() == 2.0


def test_manager_cuts_a_hung_sample(tmp_path: Path, tokenizer_dir: Path) -> None:
    spec = write_spec(tmp_path, "workers: 2\ntimeout: 2\nrewards:\n  - reward: verl_test_rewards:hang_on_gold\n")
    rows = [*ROWS[:3], ("Natalia sold 48 clips.", "#### 72", "hang")]
    data = fake_batch(tokenizer_dir, rows)
    # by default the step stops with the reason: verl has no "no reward" value
    worker = manager_worker(spec, tokenizer_dir)
    with pytest.raises(RewardFailedError, match="timed out after 2s"):
        score_on_worker_loop(worker, data)
    # an explicit failure score keeps training, flagged in reward_extra_info
    worker = manager_worker(spec, tokenizer_dir, **{"+reward.reward_kwargs.rewardflow_failure_score": "-1.0"})
    start = time.monotonic()
    outputs = score_on_worker_loop(worker, data)
    assert time.monotonic() - start < 60  # a 3600 s hang, cut at 2 s (generous bound for a loaded machine)
    assert [o["reward_score"] for o in outputs] == [1.0, 0.0, 1.0, -1.0]
    assert [o["reward_extra_info"]["rewardflow_failed"] for o in outputs] == [0.0, 0.0, 0.0, 1.0]
    rm_scores(worker, data, outputs)


def test_manager_inside_verls_ray_reward_loop_manager(tmp_path: Path, tokenizer_dir: Path) -> None:
    # what main_ppo runs: RewardLoopManager starts RewardLoopWorker Ray actors, splits the batch among them and
    # assembles rm_scores and reward_extra_info; the rewardflow manager runs inside the actor
    import ray
    from verl.experimental.reward_loop import RewardLoopManager

    spec = write_spec(
        tmp_path,
        "workers: 2\ntimeout: 30\nrewards:\n  - name: acc\n    reward: gsm8k\n"
        "  - name: seen\n    reward: verl_test_rewards:batch_size_seen\n    weight: 0.0\n",
    )
    here = str(Path(__file__).parent)
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": f"{here}:{ROOT}"}})
    try:
        manager = RewardLoopManager(documented_config("manager", spec, tokenizer_dir, **{"reward.num_workers": "1"}))
        data = fake_batch(tokenizer_dir, ROWS * 2)
        out = manager.compute_rm_score(data)
    finally:
        ray.shutdown()
    assert out.batch["rm_scores"].sum(-1).tolist() == [1.0, 0.0] * 4
    assert out.non_tensor_batch["seen"].tolist() == [8.0] * 8  # the actor's whole chunk in one engine call
    assert out.meta_info["reward_extra_keys"] == ["score", "rewardflow_failed", "acc", "seen"]


# ------------------------------------------------------------------------------------------ reward-model input

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LLAMA2 = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
    "{% else %} {{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
)


@pytest.fixture(scope="module")
def chat_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(policy, reward model)``: a policy tokenizer with a ChatML template, and a token-classification Llama
    whose tokenizer has another template (Llama-2 style) and adds BOS to what it encodes, as Llama's does."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("chat")
    bpe = train_bpe(["<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>", "[INST]", "[/INST]"], vocab_size=320)
    policy = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="<|im_end|>", pad_token="<pad>")
    policy.chat_template = CHATML
    model = tiny_token_classifier(policy)
    with torch.no_grad():
        model.score.weight.normal_(0.0, 1.0)
    model.save_pretrained(root / "policy")  # verl reads the policy's tokenizer (and config) from here
    policy.save_pretrained(root / "policy")
    rm_tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    rm_tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B:1", special_tokens=[("<s>", rm_tok.bos_token_id)]
    )
    rm_tok.chat_template = LLAMA2
    model.save_pretrained(root / "rm")
    rm_tok.save_pretrained(root / "rm")
    return root / "policy", root / "rm"


def chat_batch(policy_dir: Path, rows: list[tuple[list[dict], str]]) -> DataProto:
    """What verl 0.9's agent loop hands the reward loop for chat data: the prompt rendered by the policy's template
    (left-padded), the response ending with the policy's EOS, and the dataset's messages as ``raw_prompt``."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(policy_dir)
    texts = [tok.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m, _ in rows]
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    responses = [[*tok.encode(r, add_special_tokens=False), tok.eos_token_id] for _, r in rows]
    fields = gsm8k_fields(["72"] * len(rows))
    return proto_batch(tok.pad_token_id, prompts, responses, **fields, raw_prompt=[m for m, _ in rows])


def test_manager_reward_model_reads_what_verls_own_reward_model_path_reads(
    tmp_path: Path, chat_models: tuple[Path, Path]
) -> None:
    """verl's reward loop builds its reward model's input in ``RewardLoopWorker._preprocess_reward_inputs``:
    ``raw_prompt`` plus the decoded response (EOS removed) rendered with the reward model's template, then
    tokenized by the serving engine with the tokenizer's special tokens. The rewardflow manager's reward model
    must score exactly that. (rewardflow <= stop 21 handed reward models the prompt decoded without its special
    tokens, ``"user\\nQ\\nassistant\\n"``, and scored it as the question.)"""
    import asyncio
    import types

    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from rewardflow.models import RewardModel

    policy_dir, rm_dir = chat_models
    questions = ["Natalia sold 48 clips in April.", "The answer is 70. Natalia sold clips."]
    rows = [([{"role": "user", "content": q}], r) for q in questions for r in ("#### 72", "The answer is 70.")]
    data = chat_batch(policy_dir, rows)
    spec = write_spec(
        tmp_path,
        "workers: 1\ntimeout: 60\nrewards:\n  - name: acc\n    reward: gsm8k\n"
        f"  - name: rm\n    reward: reward_model\n    weight: 0.0\n    params:\n      path: {rm_dir}\n"
        "      head: token-cls\n",
    )
    worker = manager_worker(spec, policy_dir)
    ours = [o["reward_extra_info"]["rm"] for o in score_on_worker_loop(worker, data)]

    policy, rm_tok = AutoTokenizer.from_pretrained(policy_dir), AutoTokenizer.from_pretrained(rm_dir)
    verl_self = types.SimpleNamespace(input_tokenizer=policy, reward_model_tokenizer=rm_tok)
    critic = AutoModelForTokenClassification.from_pretrained(rm_dir).eval()
    theirs = []
    for i in range(len(rows)):
        text = asyncio.run(RewardLoopWorker._preprocess_reward_inputs(verl_self, data[i : i + 1]))
        ids = rm_tok(text)["input_ids"]  # the serving engine's tokenization: special tokens on (BOS back)
        assert ids[0] == rm_tok.bos_token_id and ids.count(rm_tok.bos_token_id) == 1
        with torch.no_grad():
            theirs.append(critic(input_ids=torch.tensor([ids])).logits[0, -1, 0].item())
    assert len({round(x, 4) for x in theirs}) == len(theirs)
    assert ours == pytest.approx(theirs, abs=1e-5)
    # the prompt text rewardflow used to hand over gives other scores
    stripped = [
        policy.decode(
            data.batch["prompts"][i][data.batch["attention_mask"][i][: data.batch["prompts"].shape[1]].bool()],
            skip_special_tokens=True,
        )
        for i in range(len(rows))
    ]
    old = RewardModel(str(rm_dir), head="token-cls")(stripped, [r for _, r in rows])
    assert all(abs(a - b) > 1e-3 for a, b in zip(old, theirs, strict=True))


def test_manager_prompt_a_reward_model_cannot_split_is_an_error_not_a_score(
    tmp_path: Path, chat_models: tuple[Path, Path]
) -> None:
    """A system prompt is no single user turn: the prompt is handed over as the policy rendered it, and a reward
    model refuses it instead of reading the markers as the question, told the policy's tokenizer or not."""
    policy_dir, rm_dir = chat_models
    messages = [{"role": "system", "content": "The answer is 70."}, {"role": "user", "content": "Natalia sold 48."}]
    data = chat_batch(policy_dir, [(messages, "#### 72")])
    for told in (f"      policy_tokenizer: {policy_dir}\n", ""):
        spec = write_spec(
            tmp_path,
            "workers: 1\ntimeout: 60\nrewards:\n"
            f"  - name: rm\n    reward: reward_model\n    params:\n      path: {rm_dir}\n      head: token-cls\n{told}",
        )
        worker = manager_worker(spec, policy_dir)
        with pytest.raises(RewardFailedError, match="chat-template tokens"):
            score_on_worker_loop(worker, data)
