"""Batched scores equal the model's own per-sample scores: every architecture and head, both padding sides.

The reference is plain transformers, one unpadded sequence at a time, with the checkpoint exactly as saved (no
pad id added to its config): what the model computes when nothing can go wrong with padding. rewardflow scores
the same token ids (``RewardModel.encode``) in padded micro-batches (both padding sides), in packed rows (no
padding, :mod:`rewardflow.models.packing`), and GRPO groups through the shared-prefix path. The checkpoints are
random but seeded, generated per case: Llama, Mistral, Qwen2, Qwen3 (query/key norms), Phi-3 (fused QKV and
gate/up projections), Gemma 2 (soft-capped attention logits, alternating sliding windows) and Gemma 3 (sliding
windows, query/key norms), all with rotary positions and grouped KV heads; GPT-2 (absolute positions); BERT,
RoBERTa and DeBERTa-v2 (bidirectional encoders; RoBERTa numbers positions from its pad id + 1, DeBERTa-v2 has
relative positions in its own attention), with tokenizers that have no pad token (the case where transformers'
pad-id search reads one token early when the text ends with EOS).
Half the paths run the linear layers through oneDNN, half through torch's default kernel.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import torch

from rewardflow.models import RewardModel
from tests.models.conftest import RM_TEMPLATE, build_tokenizer, per_sample_reference, randomize

# (new architectures go at the end: a case's seed is its position)
ARCHS = ["llama", "mistral", "qwen2", "gpt2", "bert", "roberta", "qwen3", "phi3", "gemma2", "gemma3", "deberta-v2"]
ENCODERS = {"bert", "roberta", "deberta-v2"}
HEADS = ["seq-cls", "token-cls", "value-head"]
#: heads transformers has no class for (Gemma 3 has no token classifier)
NO_HEAD = {("gemma3", "token-cls")}
#: architectures that must keep padded micro-batches, and the reason the report must give: Gemma 2 soft-caps its
#: attention logits (transformers runs it eagerly), DeBERTa-v2 has its own disentangled attention, and these
#: Gemma 3 checkpoints have an 8-token sliding window, shorter than the sequences
UNPACKED = {"gemma2": "'eager'", "deberta-v2": "'eager'", "gemma3": "sliding window of 8 tokens"}
WORDS = "the quick brown fox jumps over lazy dog janet has sixteen eggs sells rest two dollars each".split()


@pytest.fixture(scope="module")
def tokenizers_dir(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("nopad-tok")
    specials = ["[INST]", "[/INST]"]
    build_tokenizer(root / "template", vocab_size=320, specials=specials, template=RM_TEMPLATE, pad=False)
    build_tokenizer(root / "plain", vocab_size=320, specials=specials, template=None, pad=False)
    return {"template": root / "template", "plain": root / "plain"}


def _config(arch: str, tokenizer: Any, rng: random.Random, pad_id: int | None) -> Any:
    import transformers

    hidden = rng.choice([16, 32, 48])
    common = {
        "vocab_size": len(tokenizer),
        "pad_token_id": pad_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "num_labels": rng.choice([1, 2]),
    }
    if arch == "gpt2":
        return transformers.GPT2Config(n_embd=hidden, n_layer=rng.choice([1, 2]), n_head=4, n_positions=256, **common)
    if arch in ENCODERS:  # bidirectional encoders; their sequence classifiers are run whole (first token)
        encoder = {"hidden_size": hidden, "intermediate_size": 2 * hidden, "num_attention_heads": 4}
        encoder["num_hidden_layers"] = rng.choice([1, 2])
        if arch == "bert":
            return transformers.BertConfig(max_position_embeddings=256, **encoder, **common)
        if arch == "deberta-v2":  # as OpenAssistant's DeBERTa-v3 reward models: relative positions only
            relative = {"relative_attention": True, "position_buckets": 32, "pos_att_type": ["p2c", "c2p"]}
            return transformers.DebertaV2Config(
                max_position_embeddings=256, position_biased_input=False, **relative, **encoder, **common
            )
        # RoBERTa numbers positions from its pad id + 1; its pad id is one the text never contains, as in the real
        # checkpoints (there the pad token exists; these tokenizers have none, so it is an extra id)
        vocab = len(tokenizer)
        common.update(vocab_size=vocab + 1, pad_token_id=vocab)
        return transformers.RobertaConfig(max_position_embeddings=vocab + 260, **encoder, **common)
    decoder: dict[str, Any] = {
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": rng.choice([1, 2]),
        "num_attention_heads": 4,
        "num_key_value_heads": rng.choice([1, 2, 4]),
        "max_position_embeddings": 256,
    }
    if arch in ("qwen3", "gemma2", "gemma3"):
        decoder["head_dim"] = hidden // 4
    if arch in ("gemma2", "gemma3"):
        decoder["sliding_window"] = 8
    cls = {
        "llama": "LlamaConfig",
        "mistral": "MistralConfig",
        "qwen2": "Qwen2Config",
        "qwen3": "Qwen3Config",
        "phi3": "Phi3Config",
        "gemma2": "Gemma2Config",
        "gemma3": "Gemma3TextConfig",
    }[arch]
    return getattr(transformers, cls)(**decoder, **common)


def build_checkpoint(directory: Path, tok_dir: Path, arch: str, head: str, seed: int, pad_id: int | None) -> Path:
    """A random tiny checkpoint of ``arch`` with ``head``; value heads are written the OpenRLHF way."""
    import transformers
    from safetensors.torch import save_file

    rng = random.Random(seed)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tok_dir))
    config = _config(arch, tokenizer, rng, pad_id)
    if head == "value-head":
        model = randomize(transformers.AutoModel.from_config(config), seed)
        prefix = model.base_model_prefix
        state = {f"{prefix}.{k}": v.contiguous() for k, v in model.state_dict().items()}
        hidden = config.hidden_size if arch != "gpt2" else config.n_embd
        state["value_head.weight"] = torch.randn(1, hidden, generator=torch.Generator().manual_seed(seed))
        directory.mkdir(parents=True)
        save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
        config.save_pretrained(directory)
    else:
        auto = {
            "seq-cls": transformers.AutoModelForSequenceClassification,
            "token-cls": transformers.AutoModelForTokenClassification,
        }
        randomize(auto[head].from_config(config), seed).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def grpo_batch(rng: random.Random, groups: int, size: int) -> tuple[list[str], list[str]]:
    """``groups`` prompts long enough to share (>= 16 tokens), ``size`` completions each, some of them empty."""
    prompts, completions = [], []
    for _ in range(groups):
        prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(12, 30)))
        for _ in range(size):
            prompts.append(prompt)
            completions.append(" ".join(rng.choice(WORDS) for _ in range(rng.choice([0, 1, 3, 9, 25]))))
    prompts.append("a lone prompt with no group")
    completions.append("and its completion")
    return prompts, completions


CASES = [
    (arch, head, templated, seed)
    for seed, (arch, head, templated) in enumerate(
        (a, h, t) for a in ARCHS for h in HEADS for t in (True, False) if (a, h) not in NO_HEAD
    )
]


@pytest.mark.parametrize(
    ("arch", "head", "templated", "seed"),
    CASES,
    ids=[f"{a}-{h}-{'template' if t else 'text'}" for a, h, t, _ in CASES],
)
def test_batched_equals_the_per_sample_loop(
    tmp_path: Path, tokenizers_dir: dict[str, Path], arch: str, head: str, templated: bool, seed: int
) -> None:
    rng = random.Random(1000 + seed)
    tok_dir = tokenizers_dir["template" if templated else "plain"]
    eos_id = int(__import__("transformers").AutoTokenizer.from_pretrained(str(tok_dir)).eos_token_id)
    # seq-cls: no pad id in the config (Llama-3/Mistral/GPT-2 style) or pad = EOS saved (TRL-trained checkpoints)
    pad_id = eos_id if head == "seq-cls" and rng.random() < 0.5 else None
    path = build_checkpoint(tmp_path / "ckpt", tok_dir, arch, head, seed, pad_id)
    prompts, completions = grpo_batch(rng, groups=2, size=rng.choice([3, 5]))
    num_labels = __import__("transformers").AutoConfig.from_pretrained(str(path)).num_labels
    index = num_labels - 1 if head != "value-head" else 0
    options: dict[str, Any] = {"score_index": index} if head != "value-head" else {}
    results = {}
    paths = [(side, share, False, False) for side in ("left", "right") for share in (True, False)]
    paths.append(("right", False, True, False))  # packed rows instead of padded micro-batches
    paths.append(("left", True, True, False))  # the CPU's defaults: sharing for groups, packed rows for the rest
    # an accelerator's sharing: both groups' prompts in one left-padded pass, completions of both in shared passes
    paths += [("left", True, False, True), ("right", True, True, True)]
    for side, share, packing, together in paths:
        # both linear kernels, alternating over the padded paths (rewardflow.models.kernels)
        kernel = "onednn" if share == (side == "left") else "torch"
        rm = RewardModel(
            str(path),
            head=head,
            padding_side=side,
            share_prefix=share,
            groups_together=together,
            packing=packing,
            token_budget=1024 if together else 160,  # together: both prompts fit one pass, all completions another
            cpu_linear=kernel,
            **options,
        )
        scores = rm(prompts, completions)
        if share and packing:  # again: sharing now runs under the packed attention implementation (as sdpa)
            assert rm(prompts, completions) == pytest.approx(scores, abs=1e-6)
        results[side, share, packing, together] = (scores, rm.last_report)
        assert rm.cpu_linear_used.startswith(kernel), rm.cpu_linear_used
        ids = rm.encode(prompts, completions)
    reference = per_sample_reference(path, head, ids, index)
    # groups that share: a prompt with two distinct completions at least (equal samples are scored once)
    sharing = sum(len({c for q, c in zip(prompts, completions, strict=True) if q == p}) > 1 for p in set(prompts))
    assert len({round(v, 4) for v in reference}) > 3  # distinct scores: a mix-up would show
    for (side, share, packing, together), (scores, report) in results.items():
        assert scores == pytest.approx(reference, abs=1e-4), (side, share, packing, together, report)
        assert report.micro_batches > 1 or (together and arch in ENCODERS)  # encoders: all in one budget
        if packing and arch in UNPACKED:  # refused with the reason, and the scores above still hold
            assert report.packing.startswith("off") and UNPACKED[arch] in report.packing, report.packing
        elif packing:  # every other architecture here passes the packing probe: no padding computed
            assert report.packing == "on", report.packing
            if not share or arch in ENCODERS:
                assert report.padded_tokens == report.real_tokens
        else:
            assert report.packing.startswith("off"), report.packing
        if share and arch not in ENCODERS:
            assert report.prefix_sharing == "on", report.prefix_sharing
            assert report.shared_groups == sharing and report.shared_tokens > 0
            if together:  # one pass for both prompts, one for every completion, one for the lone sample
                assert report.micro_batches == 3, report
    if templated:
        assert all(seq[-1] == eos_id for seq in ids)  # the template ends with EOS, and EOS is read


def test_pad_as_eos_checkpoint_is_read_where_transformers_reads_it_alone(
    tmp_path: Path, tokenizers_dir: dict[str, Path]
) -> None:
    # the bug this fixes: with pad id = EOS set only for batching, transformers reads one token early
    import transformers

    path = build_checkpoint(tmp_path / "ckpt", tokenizers_dir["template"], "llama", "seq-cls", 7, None)
    prompts, completions = grpo_batch(random.Random(7), groups=1, size=4)
    rm = RewardModel(str(path), head="seq-cls", score_index=0, padding_side="right", share_prefix=False)
    ids = rm.encode(prompts, completions)
    ours = rm(prompts, completions)
    reference = per_sample_reference(path, "seq-cls", ids, 0)
    assert ours == pytest.approx(reference, abs=1e-4)
    # what transformers' own batched pooling gives once the pad id is EOS (rewardflow's old behaviour)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(path)).eval()
    model.config.pad_token_id = rm.tokenizer.eos_token_id
    width = max(map(len, ids))
    batch = torch.tensor([seq + [rm.tokenizer.eos_token_id] * (width - len(seq)) for seq in ids])
    with torch.no_grad():
        pooled = model(input_ids=batch, attention_mask=(torch.arange(width) < torch.tensor([[len(s)] for s in ids])))
    wrong = pooled.logits[:, 0].tolist()
    assert max(abs(a - b) for a, b in zip(wrong, reference, strict=True)) > 1e-2  # the old read was off
