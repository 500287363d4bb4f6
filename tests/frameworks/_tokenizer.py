"""A tiny chat tokenizer built on the spot (no download), shaped like Qwen's: ChatML markers, ``<|im_end|>`` EOS;
and the config of a tiny decoder to go with it.

Byte-level BPE, so ``decode(encode(text)) == text`` and special tokens decode back to their text, as they do in
the frameworks that decode without ``skip_special_tokens``. Used by the real-framework tests of AReaL, OpenRLHF
and TRL, in their own virtualenvs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_CORPUS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    "How many clips did Natalia sell altogether in April and May? The answer is 72. #### 72",
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting.",
    "Let me think step by step. 48 / 2 = 24 and 48 + 24 = 72. So the answer is 18. I am not sure.",
    "user assistant system Solve the problem. Put the final answer after ####. 0123456789 + - * / = .",
]


def build_tokenizer(directory: Path):
    """Train the tokenizer, save it with ``save_pretrained`` into ``directory``, and return it."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(_CORPUS * 4, vocab_size=400, min_frequency=1, special_tokens=SPECIALS)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    tok.chat_template = CHAT_TEMPLATE
    directory.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(directory))
    return tok


def tiny_config(config_class: Any, tokenizer: Any, **overrides: Any) -> Any:
    """A 2-layer, 64-wide decoder config of ``config_class`` (grouped KV heads) for ``tokenizer``'s vocabulary."""
    values = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    values.update(overrides)
    return config_class(**values)
