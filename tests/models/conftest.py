"""Tiny checkpoints generated on the fly: tokenizers built with ``tokenizers``, models saved with ``save_pretrained``.

Nothing is downloaded; the only real pretrained model used (all-MiniLM-L6-v2) ships inside an installed package.
Two tokenizers with different vocabularies and chat templates stand for a policy and a reward model.
"""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

CORPUS = [
    "what is two plus two? the answer is four.",
    "janet has sixteen eggs, eats three and bakes with four; she sells the rest for two dollars each.",
    "the quick brown fox jumps over the lazy dog. 16 - 3 - 4 = 9 and 9 * 2 = 18.",
    "a paraphrase says the same thing with other words; an unrelated answer talks about something else.",
]

# The reward model's template (Llama-2 style) and the policy's (a chatml-like one): deliberately different.
RM_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
    "{% else %} {{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
)
POLICY_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def build_tokenizer(
    directory: Path, *, vocab_size: int, specials: list[str], template: str | None, pad: bool = True
) -> object:
    """A byte-level BPE tokenizer trained on CORPUS (deterministic), saved with its chat template.

    ``pad=False``: no pad token, as Llama-3, Mistral and GPT-2 tokenizers ship.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<s>", "</s>", *specials],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", **({"pad_token": "<pad>"} if pad else {})
    )
    if template is not None:
        fast.chat_template = template
    fast.save_pretrained(directory)
    return fast


def tiny_llama_config(tokenizer: object, *, wide: bool = False, **extra: object) -> object:
    """A 2-layer Llama config sized for tests (``wide``: big enough for memory to be measurable)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=256 if wide else 32,
        intermediate_size=8192 if wide else 64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **extra,
    )


def randomize(model: object, seed: int) -> object:
    """Seeded weights with a visible spread of scores, not values all near zero."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model


def build_llama(directory: Path, tokenizer: object, *, head: str, num_labels: int = 1, wide: bool = False, **extra):
    """A tiny Llama with a classification head, random but seeded, saved as safetensors next to its tokenizer."""
    from transformers import LlamaForSequenceClassification, LlamaForTokenClassification, LlamaModel

    config = tiny_llama_config(tokenizer, wide=wide, num_labels=num_labels, **extra)
    classes = {"token-cls": LlamaForTokenClassification, "seq-cls": LlamaForSequenceClassification, "base": LlamaModel}
    model = randomize(classes[head](config), seed=0)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def build_gpt2(directory: Path, tokenizer: object) -> Path:
    """A tiny GPT-2 token classifier: absolute position embeddings, so left padding needs explicit positions."""
    from transformers import GPT2Config, GPT2ForTokenClassification

    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=512,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = randomize(GPT2ForTokenClassification(config), seed=0)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def build_value_head_checkpoint(directory: Path, tokenizer: object, *, style: str) -> Path:
    """A tiny Llama saved the way trainers with value heads save reward models, written with safetensors directly.

    ``openrlhf``: the base model under ``model.`` plus ``value_head.weight`` (no bias), and the reward ``mean`` and
    ``std`` in config.json. ``trl``: a causal LM (``lm_head`` included) plus ``v_head.summary.weight`` and ``.bias``.
    """
    from safetensors.torch import save_file
    from transformers import LlamaForCausalLM, LlamaModel

    extra = {"mean": 0.5, "std": 2.0, "normalize_reward": True} if style == "openrlhf" else {}
    config = tiny_llama_config(tokenizer, **extra)
    model = randomize(LlamaModel(config) if style == "openrlhf" else LlamaForCausalLM(config), seed=1)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if style == "openrlhf":
        state = {f"model.{k}": v for k, v in state.items()}
        state["value_head.weight"] = torch.randn(1, 32)
    else:
        state["v_head.summary.weight"] = torch.randn(1, 32)
        state["v_head.summary.bias"] = torch.tensor([0.25])
    directory.mkdir(parents=True)
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def per_sample_reference(path: Path, head: str, ids: list[list[int]], index: int) -> list[float]:
    """Plain transformers, one unpadded sequence at a time, the checkpoint's config untouched."""
    import transformers
    from safetensors import safe_open

    out = []
    if head == "value-head":
        base = transformers.AutoModel.from_pretrained(str(path)).eval()
        with safe_open(str(path / "model.safetensors"), framework="pt") as f:
            weight = f.get_tensor("value_head.weight")[0]
        with torch.no_grad():
            for seq in ids:
                out.append(float(base(input_ids=torch.tensor([seq])).last_hidden_state[0, -1] @ weight))
        return out
    auto = {
        "seq-cls": transformers.AutoModelForSequenceClassification,
        "token-cls": transformers.AutoModelForTokenClassification,
    }
    model = auto[head].from_pretrained(str(path)).eval()
    with torch.no_grad():
        for seq in ids:
            logits = model(input_ids=torch.tensor([seq])).logits
            out.append(float(logits[0, -1, index] if head == "token-cls" else logits[0, index]))
    return out


def classifier_one_by_one(path: Path, prompts: list[str], completions: list[str]) -> list[float]:
    """Plain transformers: a 1-label sequence classifier (head seeded with 0) on each (prompt, completion) pair
    alone, unpadded, as the reference a batched or packed path must equal."""
    torch.manual_seed(0)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=1).eval()
    tok = transformers.AutoTokenizer.from_pretrained(str(path))
    with torch.no_grad():
        return [
            float(model(**tok(p, c, return_tensors="pt")).logits[0, 0])
            for p, c in zip(prompts, completions, strict=True)
        ]


def tiny_checkpoint(
    zoo: dict[str, Path], directory: Path, arch: str, seed: int, *, cls: str = "ForSequenceClassification", **extra
) -> Path:
    """A random, seeded 2-layer ``<arch><cls>`` (one output for classifiers), next to the RM tokenizer."""
    tok = transformers.AutoTokenizer.from_pretrained(str(zoo["rm_tokenizer"]))
    config = getattr(transformers, f"{arch}Config")(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        pad_token_id=tok.pad_token_id,
        num_labels=1,
        **extra,
    )
    randomize(getattr(transformers, f"{arch}{cls}")(config), seed).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every generated checkpoint, by role."""
    root = tmp_path_factory.mktemp("zoo")
    rm_tok = build_tokenizer(root / "rm-tok", vocab_size=320, specials=["[INST]", "[/INST]"], template=RM_TEMPLATE)
    build_tokenizer(
        root / "policy-tok", vocab_size=290, specials=["<|user|>", "<|assistant|>", "<|end|>"], template=POLICY_TEMPLATE
    )
    plain_tok = build_tokenizer(root / "plain-tok", vocab_size=300, specials=[], template=None)
    zoo = {
        "gpt2_token_cls": build_gpt2(root / "gpt2-token-cls", rm_tok),
        "rm_tokenizer": root / "rm-tok",
        "policy_tokenizer": root / "policy-tok",
        "token_cls": build_llama(root / "token-cls", rm_tok, head="token-cls"),
        "seq_cls": build_llama(
            root / "seq-cls",
            rm_tok,
            head="seq-cls",
            num_labels=2,
            id2label={0: "bad", 1: "good"},
            label2id={"bad": 0, "good": 1},
        ),
        "plain_seq_cls": build_llama(root / "plain-seq-cls", plain_tok, head="seq-cls"),
        "base": build_llama(root / "base", rm_tok, head="base"),
        "wide": build_llama(root / "wide", rm_tok, head="token-cls", wide=True),
        "openrlhf_rm": build_value_head_checkpoint(root / "openrlhf-rm", rm_tok, style="openrlhf"),
        "trl_value_head": build_value_head_checkpoint(root / "trl-value-head", rm_tok, style="trl"),
    }
    pickled = root / "pickle-only"
    pickled.mkdir()
    model = transformers.AutoModelForTokenClassification.from_pretrained(zoo["token_cls"])
    model.config.save_pretrained(pickled)
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    rm_tok.save_pretrained(pickled)
    zoo["pickle_only"] = pickled
    return zoo
