"""Rule-based rewards: pure functions of the completion and the row, run in worker processes.

``BUILTINS`` declares them for the registry by import path, so listing them imports nothing heavy.
"""

from __future__ import annotations

from rewardflow.registry import Entry

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
        "Math accuracy: anchored final answer is mathematically equal to the gold (math-verify, exact numbers).",
        datasets=(
            "hendrycks/competition_math",
            "lighteval/MATH",
            "DigitalLearningGmbH/MATH-lighteval",
            "HuggingFaceH4/MATH-500",
            "math500",
        ),
    ),
    Entry(
        "gsm8k_reward_fn",
        "rewardflow.rules.math:gsm8k_reward_fn",
        "AReaL drop-in: gsm8k_reward_fn(prompt, completions, prompt_ids, completion_ids, answer, **kwargs).",
    ),
]
