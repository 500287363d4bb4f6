"""RewardModel scoring: batching, last-token reads, labels, re-templating, truncation, engine/spec integration."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from rewardflow import Engine, Kind, ModelError, RewardSpec, Spec, reward
from rewardflow.errors import ConfigError, InputError
from rewardflow.models import RewardModel

QUESTIONS = [
    "what is two plus two?",
    "janet has sixteen eggs, eats three and bakes with four. how much does she make?",
    "say something about the fox",
    "what is two plus two?",
    "the lazy dog?",
    "how many eggs?",
]
COMPLETIONS = [
    "four.",
    "she sells 16 - 3 - 4 = 9 eggs for two dollars each, so she makes 18 dollars.",
    "the quick brown fox jumps over the lazy dog. " * 3,
    "the answer is four.",
    "",
    "nine",
]


def unbatched(rm: RewardModel, prompts: list[str], completions: list[str]) -> list[float]:
    return [rm([p], [c])[0] for p, c in zip(prompts, completions, strict=True)]


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("head", ["token-cls", "seq-cls"])
def test_batched_scores_equal_unbatched_in_input_order(zoo: dict[str, Path], head: str, side: str) -> None:
    path = zoo["token_cls"] if head == "token-cls" else zoo["seq_cls"]
    index = 1 if head == "seq-cls" else None
    rm = RewardModel(str(path), head=head, score_index=index, token_budget=96, padding_side=side)
    batched = rm(QUESTIONS, COMPLETIONS)
    report = rm.last_report
    assert report is not None and report.samples == len(QUESTIONS)
    assert report.micro_batches > 1  # the small budget forces several micro-batches, out of input order
    assert batched == pytest.approx(unbatched(rm, QUESTIONS, COMPLETIONS), abs=1e-5)
    assert len({round(s, 4) for s in batched}) > 3  # distinct scores, so an order mix-up would show


def value_head_reference(path: Path, rm: RewardModel, prompts: list[str], completions: list[str]) -> list[float]:
    """Each sample alone, computed by hand: the base model's last hidden state at the last token, times the head."""
    from safetensors import safe_open
    from transformers import AutoTokenizer, LlamaModel

    base = LlamaModel.from_pretrained(str(path)).eval()
    tok = AutoTokenizer.from_pretrained(str(path))
    with safe_open(str(path / "model.safetensors"), framework="pt") as f:
        name = "value_head" if "value_head.weight" in f.keys() else "v_head.summary"
        weight = f.get_tensor(f"{name}.weight")[0]
        bias = f.get_tensor(f"{name}.bias")[0] if f"{name}.bias" in f.keys() else 0.0
    out = []
    for text in rm.inputs(prompts, completions):
        ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            hidden = base(input_ids=ids).last_hidden_state[0, -1]
        out.append(float(hidden @ weight + bias))
    return out


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("style", ["openrlhf_rm", "trl_value_head"])
def test_value_head_checkpoints_of_openrlhf_and_trl(zoo: dict[str, Path], style: str, side: str) -> None:
    rm = RewardModel(str(zoo[style]), head="value-head", padding_side=side, token_budget=96)
    scores = rm(QUESTIONS, COMPLETIONS)
    assert rm.last_report is not None and rm.last_report.micro_batches > 1
    assert scores == pytest.approx(value_head_reference(zoo[style], rm, QUESTIONS, COMPLETIONS), abs=1e-5)
    assert len({round(s, 4) for s in scores}) > 3


def test_value_head_follows_the_models_dtype(zoo: dict[str, Path]) -> None:
    fp32 = RewardModel(str(zoo["trl_value_head"]), head="value-head")(QUESTIONS, COMPLETIONS)
    bf16 = RewardModel(str(zoo["trl_value_head"]), head="value-head", dtype="bfloat16")
    assert bf16(QUESTIONS, COMPLETIONS) == pytest.approx(fp32, abs=0.1)  # bf16 arithmetic, same model
    assert bf16._head.weight.dtype == torch.bfloat16
    auto = RewardModel(str(zoo["trl_value_head"]), head="value-head", dtype="auto")
    assert auto(QUESTIONS, COMPLETIONS) == pytest.approx(fp32, abs=1e-5)  # the checkpoint is fp32


def test_value_head_normalization_and_errors(zoo: dict[str, Path]) -> None:
    raw = RewardModel(str(zoo["openrlhf_rm"]), head="value-head")(QUESTIONS, COMPLETIONS)
    normalized = RewardModel(str(zoo["openrlhf_rm"]), head="value-head", normalize=True)(QUESTIONS, COMPLETIONS)
    assert normalized == pytest.approx([(r - 0.5) / 2.0 for r in raw], abs=1e-6)  # the config's mean and std
    with pytest.raises(ModelError, match="needs numeric 'mean'"):
        RewardModel(str(zoo["trl_value_head"]), head="value-head", normalize=True)(QUESTIONS, COMPLETIONS)
    with pytest.raises(ModelError, match="no value head"):
        RewardModel(str(zoo["base"]), head="value-head")(QUESTIONS, COMPLETIONS)
    with pytest.raises(ModelError, match="no value head"):
        RewardModel(str(zoo["openrlhf_rm"]), head="value-head", value_head="critic")(QUESTIONS, COMPLETIONS)
    with pytest.raises(ConfigError, match="'seq-cls', 'token-cls' or 'value-head'"):
        RewardModel(str(zoo["token_cls"]), head="critic")
    with pytest.raises(ConfigError, match="head='value-head' only"):
        RewardModel(str(zoo["token_cls"]), head="token-cls", normalize=True)


def test_value_head_is_released_and_restored_from_the_file(zoo: dict[str, Path]) -> None:
    rm = RewardModel(str(zoo["trl_value_head"]), head="value-head", offload="release")
    first = rm(QUESTIONS, COMPLETIONS)
    in_file = {name for slot in rm.weights._slots if slot.file is not None for name in slot.names}
    assert {"v_head.summary.weight", "v_head.summary.bias"} <= in_file  # dropped on offload like the rest
    assert rm(QUESTIONS, COMPLETIONS) == first  # reloaded from model.safetensors, bit for bit


def test_identical_samples_are_computed_once(zoo: dict[str, Path]) -> None:
    # a GRPO group: the same prompt, several identical completions
    # padded rows, so that each forward pass's batch size counts sequences (packed rows are counted in test_packing)
    rm = RewardModel(str(zoo["token_cls"]), head="token-cls", token_budget=10_000, packing=False)
    rows: list[int] = []
    rm.load()
    hook = rm._base.register_forward_hook(  # the base model runs; the linear head reads one position per row
        lambda _m, _args, kwargs, _out: rows.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    prompts = [QUESTIONS[0]] * 6 + [QUESTIONS[1]]
    completions = [COMPLETIONS[0], COMPLETIONS[1], COMPLETIONS[0], COMPLETIONS[0], COMPLETIONS[1], "x", "x"]
    scores = rm(prompts, completions)
    hook.remove()
    assert rm.last_report is not None and rm.last_report.duplicates == 3
    assert sum(rows) == 4  # four distinct (prompt, completion) pairs went through the model
    assert scores == pytest.approx(unbatched(rm, prompts, completions), abs=1e-5)
    assert scores[0] == scores[2] == scores[3] and scores[1] == scores[4]
    assert scores[5] != pytest.approx(scores[6])  # same completion, another prompt: not a duplicate


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("model", ["token_cls", "gpt2_token_cls"])  # rotary vs absolute position embeddings
def test_last_token_read_with_either_padding_side(zoo: dict[str, Path], side: str, model: str) -> None:
    rm = RewardModel(str(zoo[model]), head="token-cls", padding_side=side, token_budget=10_000, packing=False)
    batched = rm(QUESTIONS, COMPLETIONS)
    assert rm.last_report is not None and rm.last_report.micro_batches == 1  # one padded batch, lengths differ
    assert rm.last_report.padding_waste > 0.2
    assert batched == pytest.approx(unbatched(rm, QUESTIONS, COMPLETIONS), abs=1e-5)


def test_score_label_index_and_transforms(zoo: dict[str, Path]) -> None:
    path = str(zoo["seq_cls"])
    by_label = RewardModel(path, score_label="good")(QUESTIONS, COMPLETIONS)
    assert by_label == RewardModel(path, score_index=1)(QUESTIONS, COMPLETIONS)
    assert by_label != pytest.approx(RewardModel(path, score_label="bad")(QUESTIONS, COMPLETIONS))
    good = RewardModel(path, score_label="good", transform="softmax")(QUESTIONS, COMPLETIONS)
    bad = RewardModel(path, score_label="bad", transform="softmax")(QUESTIONS, COMPLETIONS)
    assert [g + b for g, b in zip(good, bad, strict=True)] == pytest.approx([1.0] * len(QUESTIONS))
    assert all(0.0 < g < 1.0 for g in good)
    with pytest.raises(ModelError, match="score_index or score_label"):
        RewardModel(path)(QUESTIONS, COMPLETIONS)  # two outputs and no choice: refuse to guess
    with pytest.raises(ModelError, match="not in the model's labels"):
        RewardModel(path, score_label="great")(QUESTIONS, COMPLETIONS)


def test_retemplating_when_policy_tokenizer_differs(zoo: dict[str, Path]) -> None:
    from transformers import AutoTokenizer

    policy = AutoTokenizer.from_pretrained(str(zoo["policy_tokenizer"]))
    rendered = [
        policy.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        for q in QUESTIONS
    ]
    assert all(r.startswith("<|user|>") for r in rendered)
    plain = RewardModel(str(zoo["token_cls"]), head="token-cls")
    retemplating = RewardModel(str(zoo["token_cls"]), head="token-cls", policy_tokenizer=str(zoo["policy_tokenizer"]))
    assert retemplating.retemplates and not plain.retemplates
    texts = retemplating.inputs(rendered, COMPLETIONS)
    assert all(t.startswith("<s>[INST] ") and "<|user|>" not in t and "<|end|>" not in t for t in texts)
    assert texts == plain.inputs(QUESTIONS, COMPLETIONS)  # same conversation as from the plain question
    assert retemplating(rendered, COMPLETIONS) == pytest.approx(plain(QUESTIONS, COMPLETIONS), abs=1e-6)
    # without the policy tokenizer the policy's markers would reach the reward model as text: refused, not scored
    with pytest.raises(ModelError, match="policy template the reward model was not given"):
        plain(rendered, COMPLETIONS)


def test_prompt_rendered_with_the_models_own_template_is_not_doubled(zoo: dict[str, Path]) -> None:
    rm = RewardModel(str(zoo["token_cls"]), head="token-cls", policy_tokenizer=str(zoo["rm_tokenizer"]))
    assert not rm.retemplates  # same template: nothing to switch
    own = [rm.tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False) for q in QUESTIONS]
    assert rm.inputs(own, COMPLETIONS) == rm.inputs(QUESTIONS, COMPLETIONS)


def test_multi_turn_prompt_is_refused_not_scored(zoo: dict[str, Path]) -> None:
    from transformers import AutoTokenizer

    policy = AutoTokenizer.from_pretrained(str(zoo["policy_tokenizer"]))
    turns = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "what is two plus two?"},
    ]
    prompt = policy.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    rm = RewardModel(str(zoo["token_cls"]), head="token-cls", policy_tokenizer=str(zoo["policy_tokenizer"]))
    with pytest.raises(ModelError, match="multi-turn"):
        rm([prompt], ["four"])


def test_text_pairs_without_chat_template(zoo: dict[str, Path]) -> None:
    rm = RewardModel(str(zoo["plain_seq_cls"]), token_budget=64)
    assert rm.inputs(QUESTIONS[:1], COMPLETIONS[:1]) == [(QUESTIONS[0], COMPLETIONS[0])]
    assert rm(QUESTIONS, COMPLETIONS) == pytest.approx(unbatched(rm, QUESTIONS, COMPLETIONS), abs=1e-5)


def test_truncation_side_keeps_the_configured_end(zoo: dict[str, Path]) -> None:
    long = "the quick brown fox jumps over the lazy dog. " * 4
    prompts = ["what is two plus two?", "janet has sixteen eggs"]
    left = RewardModel(str(zoo["token_cls"]), head="token-cls", max_length=12, truncation_side="left")
    scores = left(prompts, [long, long])
    assert left.last_report is not None and left.last_report.truncated == 2
    assert scores[0] == pytest.approx(scores[1], abs=1e-6)  # same last 12 tokens, same score
    right = RewardModel(str(zoo["token_cls"]), head="token-cls", max_length=12, truncation_side="right")
    scores = right(prompts, [long, long])
    assert scores[0] != pytest.approx(scores[1], abs=1e-4)  # the kept beginnings differ


def test_engine_composes_model_and_rule_rewards(zoo: dict[str, Path]) -> None:
    rm = RewardModel(str(zoo["token_cls"]), head="token-cls")
    expected = rm(QUESTIONS, COMPLETIONS)

    @reward(kind="inline")
    def brevity(completion: str) -> float:
        return -len(completion) / 100

    rows = [{"prompt": q, "completion": c} for q, c in zip(QUESTIONS, COMPLETIONS, strict=True)]
    with Engine({"rm": (rm, 0.5), "brevity": brevity}) as engine:
        assert engine.components[0].reward.kind is Kind.BATCH
        results = engine.score(rows)
    for result, rm_value, completion in zip(results, expected, COMPLETIONS, strict=True):
        assert result.ok, result.reason
        assert result.components["rm"] == pytest.approx(rm_value, abs=1e-6)
        assert result.value == pytest.approx(0.5 * rm_value - len(completion) / 100, abs=1e-6)


def test_built_from_a_spec_through_the_registry(zoo: dict[str, Path]) -> None:
    params = {"path": str(zoo["token_cls"]), "head": "token-cls", "token_budget": 128, "offload": "release"}
    spec = Spec(rewards=[RewardSpec(reward="reward_model", name="rm", params=params)])
    rows = [{"prompt": q, "completion": c} for q, c in zip(QUESTIONS, COMPLETIONS, strict=True)]
    with Engine(spec) as engine:
        (component,) = engine.components
        assert isinstance(component.reward.fn, RewardModel) and component.reward.kind is Kind.BATCH
        values = [r.value for r in engine.score(rows)]
    assert values == pytest.approx(RewardModel(str(zoo["token_cls"]), head="token-cls")(QUESTIONS, COMPLETIONS))


def test_a_model_path_in_a_data_row_is_ignored(zoo: dict[str, Path]) -> None:
    rm = RewardModel(str(zoo["token_cls"]), head="token-cls")
    clean = [{"prompt": q, "completion": c} for q, c in zip(QUESTIONS, COMPLETIONS, strict=True)]
    hostile = [
        {**row, "path": str(zoo["pickle_only"]), "model_path": str(zoo["wide"]), "policy_tokenizer": "/etc"}
        for row in clean
    ]
    with Engine({"rm": rm}) as engine:
        reference = [r.value for r in engine.score(clean)]
        results = engine.score(hostile)
    assert all(r.ok for r in results)
    assert [r.value for r in results] == reference
    assert rm.checkpoint.directory == zoo["token_cls"] and rm.load_count == 1


def test_pickle_checkpoint_refused_before_loading(zoo: dict[str, Path]) -> None:
    assert (zoo["pickle_only"] / "pytorch_model.bin").is_file()
    with pytest.raises(ModelError, match="pickle"):
        RewardModel(str(zoo["pickle_only"]), head="token-cls")
    spec = Spec(rewards=[RewardSpec(reward="reward_model", params={"path": str(zoo["pickle_only"])})])
    with pytest.raises(ModelError, match="safetensors only"):
        Engine(spec)


def test_missing_directory_and_missing_weights(zoo: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        RewardModel(str(tmp_path / "nope"))
    headless = RewardModel(str(zoo["base"]), head="token-cls")  # a base model: the score head would be random
    with pytest.raises(ModelError, match="lacks weights"):
        headless(["q"], ["a"])
    allowed = RewardModel(str(zoo["base"]), head="token-cls", allow_missing_weights=True)
    assert len(allowed(["q"], ["a"])) == 1


def test_remote_code_is_not_run_by_default(zoo: dict[str, Path], tmp_path: Path) -> None:
    import json
    import shutil

    directory = tmp_path / "remote"
    shutil.copytree(zoo["token_cls"], directory)
    marker = tmp_path / "code-ran"
    (directory / "configuration_evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import PretrainedConfig\n\n\n"
        "class EvilConfig(PretrainedConfig):\n    model_type = 'rewardflow-evil'\n"
    )
    config = json.loads((directory / "config.json").read_text())
    config.update(model_type="rewardflow-evil", auto_map={"AutoConfig": "configuration_evil.EvilConfig"})
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="custom code"):
        RewardModel(str(directory), head="token-cls")(["q"], ["a"])
    assert not marker.exists()


def test_inputs_are_validated_and_empty_batches_do_not_load(zoo: dict[str, Path]) -> None:
    rm = RewardModel(str(zoo["token_cls"]), head="token-cls")
    assert rm([], []) == []
    assert rm.state.value == "unloaded"
    with pytest.raises(InputError):
        rm(["a", "b"], ["c"])
    with pytest.raises(InputError):
        rm(["a"], [None])  # type: ignore[list-item]
    assert rm.score([("what is two plus two?", "four.")]) == rm(["what is two plus two?"], ["four."])


def test_the_model_never_leaves_its_process(zoo: dict[str, Path]) -> None:
    rm = RewardModel(str(zoo["token_cls"]), head="token-cls")
    with pytest.raises(ModelError, match="stays in the process"):
        pickle.dumps(rm)
