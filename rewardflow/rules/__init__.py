"""Rule-based rewards: pure functions of the completion and the row, run in worker processes.

``BUILTINS`` declares them for the registry by import path, so listing them imports nothing heavy (sympy and
math-verify load on first use). Configurable rewards (``format``, ``length``, ``overlong``, ``repetition``,
``json``) are classes marked ``factory=True``: the registry builds one instance from the spec's ``params``, and
that instance pickles into the worker processes. See ``docs/en/builtin-rewards.md`` for what each one scores.
"""

from __future__ import annotations

from rewardflow._lazy import lazy_exports
from rewardflow.registry import Entry

# Public names, imported on first access so that listing the built-ins stays cheap.
_LAZY = {
    "Format": "rewardflow.rules.format",
    "JsonReward": "rewardflow.rules.json_output",
    "Length": "rewardflow.rules.length",
    "Overlong": "rewardflow.rules.length",
    "Repetition": "rewardflow.rules.length",
    "Verdict": "rewardflow.rules.sympy_compare",
    "clevr_count_70k_reward_fn": "rewardflow.rules.choice",
    "clevr_count_reward": "rewardflow.rules.choice",
    "exact_match_reward": "rewardflow.rules.text",
    "extract_final_answer": "rewardflow.rules.answer",
    "f1_reward": "rewardflow.rules.text",
    "geometry3k_reward": "rewardflow.rules.math",
    "geometry3k_reward_fn": "rewardflow.rules.math",
    "gsm8k_reward": "rewardflow.rules.math",
    "gsm8k_reward_fn": "rewardflow.rules.math",
    "math_equal": "rewardflow.rules.equivalence",
    "math_reward": "rewardflow.rules.math",
    "math_verify_equal": "rewardflow.rules.math",
    "multiple_choice_reward": "rewardflow.rules.choice",
}

__all__ = ["BUILTINS", *sorted(_LAZY)]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())


BUILTINS: list[Entry] = [
    Entry(
        "gsm8k",
        "rewardflow.rules.math:gsm8k_reward",
        "GSM8K accuracy: anchored final answer (####, \\boxed{}, 'the answer is', 'A:') equals the gold after ####.",
        datasets=("openai/gsm8k", "gsm8k", "grade-school-math"),
    ),
    Entry(
        "math",
        "rewardflow.rules.math:math_reward",
        "Math accuracy: anchored final answer equals the gold, exactly for exact numbers; hedges score 0.",
        datasets=(
            "hendrycks/competition_math",
            "lighteval/MATH",
            "DigitalLearningGmbH/MATH-lighteval",
            "HuggingFaceH4/MATH-500",
            "math500",
        ),
    ),
    Entry(
        "geometry3k",
        "rewardflow.rules.math:geometry3k_reward",
        "Geometry3K accuracy: the last \\boxed{} answer equals the gold (no last-number fallback).",
        datasets=("hiyouga/geometry3k", "geometry3k"),
    ),
    Entry(
        "clevr_count",
        "rewardflow.rules.choice:clevr_count_reward",
        "Object count: the anchored integer (\\boxed{N} or AReaL's [N]) equals the gold count; hedges score 0.",
        datasets=("BUAADreamer/clevr_count_70k", "clevr_count_70k"),
    ),
    Entry(
        "multiple_choice",
        "rewardflow.rules.choice:multiple_choice_reward",
        "Multiple choice: the anchored option label (\\boxed{B}, 'Answer: B', '(B)') equals the gold; 'A or B' is 0.",
        datasets=("cais/mmlu", "mmlu", "TIGER-Lab/MMLU-Pro", "allenai/ai2_arc"),
    ),
    Entry(
        "exact_match",
        "rewardflow.rules.text:exact_match_reward",
        "QA exact match after SQuAD normalisation (case, punctuation, articles); best over several golds.",
    ),
    Entry(
        "f1",
        "rewardflow.rules.text:f1_reward",
        "QA token F1 after SQuAD normalisation, in [0, 1]; best over several golds; hedges score 0.",
    ),
    Entry(
        "format",
        "rewardflow.rules.format:Format",
        "Layout: <think>/<answer> tags once each, in order, non-empty, nothing outside (or any regex).",
        factory=True,
    ),
    Entry(
        "length",
        "rewardflow.rules.length:Length",
        "Penalty in [-1, 0] for distance from a target length (tokens from completion_ids, or words/chars).",
        factory=True,
    ),
    Entry(
        "overlong",
        "rewardflow.rules.length:Overlong",
        "DAPO soft overlong penalty in [-1, 0] from the completion's token count (completion_ids).",
        factory=True,
    ),
    Entry(
        "repetition",
        "rewardflow.rules.length:Repetition",
        "Penalty in [-1, 0]: share of repeated n-grams (words by default).",
        factory=True,
    ),
    Entry(
        "json",
        "rewardflow.rules.json_output:JsonReward",
        "The completion holds one strict JSON document, optionally valid against a JSON Schema.",
        factory=True,
        extra="eval",
    ),
    Entry(
        "gsm8k_reward_fn",
        "rewardflow.rules.math:gsm8k_reward_fn",
        "AReaL drop-in: gsm8k_reward_fn(prompt, completions, prompt_ids, completion_ids, answer, **kwargs).",
    ),
    Entry(
        "geometry3k_reward_fn",
        "rewardflow.rules.math:geometry3k_reward_fn",
        "AReaL drop-in: geometry3k_reward_fn(prompt, completions, prompt_ids, completion_ids, answer, **kwargs).",
    ),
    Entry(
        "clevr_count_70k_reward_fn",
        "rewardflow.rules.choice:clevr_count_70k_reward_fn",
        "AReaL drop-in: clevr_count_70k_reward_fn(prompt, completions, prompt_ids, completion_ids, answer, ...).",
    ),
]
