"""A TRL training script as users write one: top-level imports of torch and trl, a GRPOTrainer with rewardflow's
TRL adapter, 2 steps on a tiny random Llama built here (no downloads).

Run by tests/frameworks/trl/test_trl_real.py and bench/integrations_trl.py::

    python tests/frameworks/trl/grpo_script.py --mode {sync,async,inline,plain} --workdir DIR --out result.json

It writes the trainer's log history, the wall time of every reward call, and TRL's own version to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import trl
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository, for tests.frameworks.trl._rewards

from rewardflow.integrations.trl import trl_reward
from tests.frameworks.trl import _rewards as R


def build_model(directory: Path) -> Path:
    """A tiny random Llama and a byte-level BPE tokenizer trained here, saved as a checkpoint directory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    if (directory / "config.json").exists():
        return directory
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<pad>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(["What is 2 + 3? The answer is 5.", "Natalia sold 48 clips in April. #### 72"], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=fast.pad_token_id,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory


def timed(fn, calls: list[float]):
    """The reward function as TRL sees it (same name, sync or async), recording each call's wall time."""
    if getattr(fn, "_is_async", False):

        async def wrapper(*args, **kwargs):
            start = time.monotonic()
            try:
                return await fn(*args, **kwargs)
            finally:
                calls.append(time.monotonic() - start)

    else:

        def wrapper(*args, **kwargs):
            start = time.monotonic()
            try:
                return fn(*args, **kwargs)
            finally:
                calls.append(time.monotonic() - start)

    wrapper.__name__ = fn.__name__
    return wrapper


def rf(prompts, completions, hang, **_):
    """The same length and digit scores as a plain TRL reward function (no timeout: a hung row stalls the step)."""
    return [R.hang_or_length(c, h) + R.digits(c) for c, h in zip(completions, hang, strict=True)]


plain_reward = rf


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["sync", "async", "inline", "plain"], default="sync")
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--no-hang", action="store_true", help="no hung row (the inline mode cannot cut one)")
    parser.add_argument("--gsm8k", action="store_true", help="add the built-in gsm8k reward (math-verify, sympy)")
    args = parser.parse_args()

    model_dir = build_model(args.workdir / "tiny-llama")
    hang = [False, False, False, False] if args.no_hang or args.mode == "inline" else [False, False, False, True]
    dataset = Dataset.from_dict(
        {
            "prompt": ["What is 2 + 3?", "What is 4 + 4?", "Natalia sold 48 clips.", "What is 7 - 2?"],
            "answer": ["#### 5", "#### 8", "#### 72", "#### 5"],
            "hang": hang,
        }
    )
    rewards = {"length": R.hang_or_length, "digits": R.digits, "trl_in_worker": R.trl_in_worker}
    if args.gsm8k:
        rewards["gsm8k"] = "gsm8k"
    if args.mode == "plain":  # TRL's own path, no rewardflow: a sync function looping over the batch
        reward = plain_reward
    elif args.mode == "inline":
        reward = trl_reward(rewards, name="rf", kind="inline")
    else:
        reward = trl_reward(rewards, name="rf", kind="process", workers=2, timeout=2, asynchronous=args.mode == "async")
    if args.mode != "plain":
        reward._is_async = args.mode == "async"
    calls: list[float] = []
    config = GRPOConfig(
        output_dir=str(args.workdir / "out"),
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=8,
        max_steps=args.steps,
        logging_steps=1,
        learning_rate=1e-4,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        bf16=False,
        seed=0,
        dataloader_num_workers=0,
    )
    trainer = GRPOTrainer(model=str(model_dir), reward_funcs=[timed(reward, calls)], args=config, train_dataset=dataset)
    start = time.monotonic()
    trainer.train()
    wall = time.monotonic() - start
    if args.mode != "plain":
        reward.close()
    result = {"trl": trl.__version__, "mode": args.mode, "reward_calls": calls, "train_s": wall}
    result["log_history"] = trainer.state.log_history
    args.out.write_text(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
