"""The 16-bit guard: bf16 asked for on the CPU is kept only if it ranks the first call's samples as float32 does.

Why it exists: bf16 on the CPU ranked MiniLM's scores at 0.9995 against float32 on an AMD EPYC and at -0.0001 on an
Intel Xeon with AMX (bench P4 levers, stop 20). The decision is checked here against an independent computation
(an unguarded bf16 model and a float32 model on the same samples), so the tests hold on either kind of CPU.
"""

from __future__ import annotations

import logging
import random
import threading
from pathlib import Path

import pytest

from rewardflow.errors import ConfigError
from rewardflow.models import RewardModel, SimilarityReward
from rewardflow.models.base import PRECISION_GUARD, rank_agreement, spearman

WORDS = "eggs dollars sells bakes muffins friends breakfast market three four sixteen day each fresh".split()


def grpo_rows(groups: int, size: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    prompts, completions = [], []
    for _ in range(groups):
        prompt = " ".join(rng.choice(WORDS) for _ in range(20))
        for _ in range(size):
            prompts.append(prompt)
            completions.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12))))
    return prompts, completions


def test_spearman_and_rank_agreement_by_hand() -> None:
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # one adjacent pair swapped among 8: 1 - 6 * 2 / (8 * 63)
    assert spearman(list(range(8)), [0, 1, 2, 4, 3, 5, 6, 7]) == pytest.approx(1 - 12 / 504)
    assert spearman([1, 1, 2], [5, 5, 9]) == pytest.approx(1.0)  # ties share their mean rank
    assert spearman([1.0], [2.0]) is None and spearman([1, 2], [3, 3]) is None
    # groups: the worst group counts; keys seen once are ignored while some key repeats
    values = [1, 2, 3, 3, 2, 1, 7]
    reference = [1, 2, 3, 1, 2, 3, 0]
    assert rank_agreement(values, reference, ["a", "a", "a", "b", "b", "b", "c"]) == pytest.approx(-1.0)
    assert rank_agreement(values[:3], reference[:3], ["a", "a", "a"]) == pytest.approx(1.0)
    assert rank_agreement([1, 2], [1, 2], ["x", "y"]) == pytest.approx(1.0)  # no group: the whole call
    assert rank_agreement([4.0], [4.0], None) is None


def test_bf16_on_the_cpu_is_decided_by_its_measured_ranks(zoo: dict[str, Path], caplog) -> None:
    """The guard's verdict equals what an unguarded bf16 model and a float32 model say, and what it returns is
    float32's scores on the checked call and the chosen dtype's afterwards."""
    path = str(zoo["token_cls"])
    prompts, completions = grpo_rows(groups=3, size=6)
    fp32 = RewardModel(path, head="token-cls")(prompts, completions)
    raw = RewardModel(path, head="token-cls", dtype="bf16", precision_guard=None)(prompts, completions)
    agreement = rank_agreement(raw, fp32, prompts)
    assert agreement is not None
    for guard in (PRECISION_GUARD, -1.0):  # the default, and a guard any bf16 passes
        rm = RewardModel(path, head="token-cls", dtype="bf16", precision_guard=guard)
        with caplog.at_level(logging.WARNING, logger="rewardflow.models.base"):
            caplog.clear()
            first = rm(prompts, completions)
        assert first == pytest.approx(fp32, abs=1e-6)  # the checked call returns float32's scores
        report = rm.last_report
        assert report is not None and "rank agreement" in report.precision
        kept = agreement >= guard
        assert str(rm.dtype) == ("torch.bfloat16" if kept else "torch.float32"), (agreement, report.precision)
        assert report.precision.startswith("bfloat16 (checked:" if kept else "float32 (bfloat16 fell back:")
        assert bool(caplog.records) is not kept  # a fallback is never silent
        again = rm(prompts, completions)
        assert rm.last_report.precision == report.precision  # decided once
        assert again == pytest.approx(raw if kept else fp32, abs=1e-6)
        assert rm.load_count == (1 if kept else 2)  # a fallback reloads the checkpoint in float32 once
    assert str(rm.dtype) == "torch.bfloat16"  # the -1.0 guard keeps bf16 whatever the CPU


def test_a_random_rm_in_bf16_falls_back(zoo: dict[str, Path]) -> None:
    """The tiny random RM's scores are close together, so bf16's rounding reorders them: the guard says so."""
    path = str(zoo["token_cls"])
    prompts, completions = grpo_rows(groups=4, size=8, seed=3)
    raw = RewardModel(path, head="token-cls", dtype="bf16", precision_guard=None)(prompts, completions)
    fp32 = RewardModel(path, head="token-cls")(prompts, completions)
    assert rank_agreement(raw, fp32, prompts) < PRECISION_GUARD  # the premise, measured
    rm = RewardModel(path, head="token-cls", dtype="bf16")
    assert rm(prompts, completions) == pytest.approx(fp32, abs=1e-6)
    assert rm.last_report.precision.startswith("float32 (bfloat16 fell back")
    assert rm(prompts, completions) == pytest.approx(fp32, abs=1e-6)


def test_a_call_with_nothing_to_rank_returns_float32_and_leaves_the_question_open(zoo: dict[str, Path]) -> None:
    path = str(zoo["token_cls"])
    prompts, completions = grpo_rows(groups=2, size=4, seed=5)
    fp32 = RewardModel(path, head="token-cls")(prompts, completions)
    rm = RewardModel(path, head="token-cls", dtype="bf16")
    assert rm(prompts[:1], completions[:1]) == pytest.approx(fp32[:1], abs=1e-6)
    assert rm.last_report.precision == "bfloat16"  # not decided by one sample
    rm(prompts, completions)
    assert "rank agreement" in rm.last_report.precision


def test_a_bf16_checkpoint_loaded_with_dtype_auto_is_checked_too(zoo: dict[str, Path], tmp_path: Path) -> None:
    """``dtype="auto"`` keeps the checkpoint's dtype: a checkpoint saved in bf16 is a 16-bit model on the CPU."""
    import shutil

    import torch
    import transformers

    saved = tmp_path / "bf16"
    shutil.copytree(zoo["token_cls"], saved)
    model = transformers.AutoModelForTokenClassification.from_pretrained(str(saved)).to(torch.bfloat16)
    model.save_pretrained(str(saved))
    prompts, completions = grpo_rows(groups=2, size=6, seed=11)
    rm = RewardModel(str(saved), head="token-cls", dtype="auto", precision_guard=-1.0)
    rm(prompts, completions)
    assert rm.last_report.precision.startswith("bfloat16 (checked: rank agreement"), rm.last_report.precision
    fp32_saved = RewardModel(str(zoo["token_cls"]), head="token-cls", dtype="auto")
    fp32_saved(prompts, completions)
    assert fp32_saved.last_report.precision == "float32"  # an fp32 checkpoint: nothing to check


def test_no_guard_where_it_does_not_apply(zoo: dict[str, Path]) -> None:
    path = str(zoo["token_cls"])
    prompts, completions = grpo_rows(groups=2, size=4)
    plain = RewardModel(path, head="token-cls")
    plain(prompts, completions)
    assert plain.last_report.precision == "float32" and plain.load_count == 1
    off = RewardModel(path, head="token-cls", dtype="bf16", precision_guard=None)
    off(prompts, completions)
    assert off.last_report.precision == "bfloat16" and off.load_count == 1
    with pytest.raises(ConfigError, match="precision_guard"):
        RewardModel(path, head="token-cls", precision_guard=1.5)


def test_concurrent_first_calls_check_once(zoo: dict[str, Path]) -> None:
    """Three threads make the first call together: one float32 copy is built, one verdict is reached, and after a
    fallback no caller gets a bf16 score; both verdicts are forced (a guard any bf16 passes, and 1.0, which this
    random RM's bf16 measurably fails)."""
    path = str(zoo["token_cls"])
    prompts, completions = grpo_rows(groups=3, size=6, seed=7)
    fp32 = RewardModel(path, head="token-cls")(prompts, completions)
    raw = RewardModel(path, head="token-cls", dtype="bf16", precision_guard=None)(prompts, completions)
    assert rank_agreement(raw, fp32, prompts) < 1.0  # the premise of the fallback case, measured
    for guard, kept in ((-1.0, True), (1.0, False)):
        rm = RewardModel(path, head="token-cls", dtype="bf16", precision_guard=guard)
        build_twin = rm._float32_twin
        twins: list[object] = []
        rm._float32_twin = lambda build=build_twin, twins=twins: twins.append(1) or build()  # type: ignore[method-assign]
        results: list[list[float]] = []

        def call(rm: RewardModel = rm, results: list[list[float]] = results) -> None:
            results.append(rm(prompts, completions))

        threads = [threading.Thread(target=call) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results) == 3 and len(twins) == 1, (len(results), len(twins))
        assert rm.precision.startswith("bfloat16 (checked" if kept else "float32 (bfloat16 fell back"), rm.precision

        def same(a: list[float], b: list[float]) -> bool:
            return max(abs(x - y) for x, y in zip(a, b, strict=True)) < 1e-6

        # the checked call returns float32's scores; the two that waited get the verdict's dtype
        assert sum(same(r, fp32) for r in results) == (1 if kept else 3)
        assert sum(same(r, raw) for r in results) == (2 if kept else 0)
        assert rm.load_count == (1 if kept else 2)


def test_similarity_in_bf16_is_checked_within_each_reference() -> None:
    completions = [
        "She makes 18 dollars a day at the market.",
        "Janet earns $18 every day.",
        "The train goes 150 miles.",
        "Cats sleep most of the day.",
        "It travels 150 miles in 2.5 hours.",
        "Ducks lay sixteen eggs daily.",
        "The answer is 150 miles.",
        "Eighteen dollars.",
    ]
    references = ["Janet makes $18 every day."] * 4 + ["The train travels 150 miles."] * 4
    fp32 = SimilarityReward().score_texts(completions, references)
    raw = SimilarityReward(dtype="bf16", precision_guard=None).score_texts(completions, references)
    agreement = rank_agreement(raw, fp32, references)
    guarded = SimilarityReward(dtype="bf16")
    assert guarded.score_texts(completions, references) == pytest.approx(fp32, abs=1e-6)
    kept = agreement >= PRECISION_GUARD
    assert guarded.precision.startswith("bfloat16 (checked" if kept else "float32 (bfloat16 fell back"), agreement
