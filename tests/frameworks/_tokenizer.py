"""A tiny chat tokenizer built on the spot (no download), shaped like Qwen's: ChatML markers, ``<|im_end|>`` EOS.

Byte-level BPE, so ``decode(encode(text)) == text`` and special tokens decode back to their text, as they do in
the frameworks that decode without ``skip_special_tokens``. Used by the real-framework tests of AReaL and
OpenRLHF, in their own virtualenvs.
"""

from __future__ import annotations

from pathlib import Path

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
