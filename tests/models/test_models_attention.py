"""oneDNN's fused attention graph (rewardflow.models.attention), the opt-in ``cpu_attention="onednn"``.

Every output is compared with torch's own ``scaled_dot_product_attention`` on the same tensors, and the model-level
test with plain transformers run one unpadded sequence at a time on the real all-MiniLM-L6-v2.
"""

from __future__ import annotations

import threading

import pytest
import torch

from rewardflow.data import gsm8k_examples
from rewardflow.errors import ConfigError
from rewardflow.models import RewardModel
from rewardflow.models import attention as fused_attention
from rewardflow.models.attention import MAX_LENGTH, MIN_LENGTH, FusedAttention, bucket, choose_cpu_attention
from rewardflow.models.packing import _attention, packed_pass
from tests.models.conftest import classifier_one_by_one

# Skipped only where torch has no oneDNN Graph fuser at all; a fuser that is there but computes otherwise than
# SDPA fails test_the_fused_graph_is_usable_here instead of skipping the rest.
pytestmark = pytest.mark.skipif(
    not (torch.backends.mkldnn.is_available() and hasattr(torch.jit, "enable_onednn_fusion")),
    reason="this torch has no oneDNN Graph fuser",
)


def test_the_fused_graph_is_usable_here() -> None:
    assert fused_attention.fused_blocker() is None


def packed(lengths: list[int], heads: int = 4, width: int = 16, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """q, k, v of one packed row as a model hands them over: ``[1, heads, tokens, width]`` views of a
    ``[1, tokens, heads, width]`` projection, so a span's slice is strided, not contiguous."""
    gen = torch.Generator().manual_seed(seed)
    total = sum(lengths)
    return tuple(torch.randn(1, total, heads, width, generator=gen).transpose(1, 2) for _ in range(3))


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=scale)


def test_bucket_rounds_up_by_16_then_by_32() -> None:
    assert [bucket(n) for n in (32, 33, 48, 49, 255, 256, 257, 288, 289, 512)] == [
        32, 48, 48, 64, 256, 256, 288, 288, 320, 512,
    ]  # fmt: skip


@pytest.mark.parametrize("length", [32, 33, 100, 256, 257, 300])
def test_fused_graph_equals_sdpa_on_strided_spans(length: int) -> None:
    """A span in the middle of a packed row, padded up to its bucket and masked: the same numbers as SDPA."""
    q, k, v = packed([7, length, 5])
    span = slice(7, 7 + length)
    fused = FusedAttention()
    with torch.inference_mode():
        got = fused(q[:, :, span], k[:, :, span], v[:, :, span], 0.3)
        want = sdpa(q[:, :, span], k[:, :, span], v[:, :, span], 0.3)
    assert got.shape == want.shape == (1, 4, length, 16)
    assert float((got - want).abs().max()) < 1e-5
    assert fused.compiled == 1 and len(fused) == 1


def test_one_graph_per_bucket_and_the_least_recent_is_dropped() -> None:
    fused = FusedAttention(capacity=2)
    with torch.inference_mode():
        for length in (40, 41, 47, 48):  # one bucket: 48
            q, k, v = packed([length])
            fused(q, k, v, 0.25)
        assert fused.compiled == 1
        for length in (60, 100):  # buckets 64 and 112: the capacity of 2 drops bucket 48
            q, k, v = packed([length])
            fused(q, k, v, 0.25)
        assert (fused.compiled, len(fused)) == (3, 2)
        q, k, v = packed([45])
        fused(q, k, v, 0.25)  # bucket 48 again: compiled again
        assert fused.compiled == 4
        fused(q, k, v, 0.5)  # another scale is another graph (it is a constant of the graph)
        assert fused.compiled == 5
    fused.clear()
    assert len(fused) == 0


def test_compiling_leaves_the_global_fuser_switch_as_it_was() -> None:
    before = torch._C._jit_llga_enabled()
    q, k, v = packed([70])
    with torch.inference_mode():
        FusedAttention()(q, k, v, 0.25)
    assert torch._C._jit_llga_enabled() == before


def test_concurrent_first_calls_compile_one_graph() -> None:
    fused = FusedAttention()
    q, k, v = packed([90])
    results: list[torch.Tensor] = []
    barrier = threading.Barrier(4)

    def call() -> None:
        barrier.wait()
        with torch.inference_mode():
            results.append(fused(q, k, v, 0.25))

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fused.compiled == 1
    assert len(results) == 4 and all(torch.equal(r, results[0]) for r in results)


def test_packed_pass_sends_bidirectional_spans_in_range_to_the_fused_graph() -> None:
    lengths = [5, 40, MAX_LENGTH + 3, 70, MIN_LENGTH - 1]
    q, k, v = packed(lengths)
    module = torch.nn.Module()
    bounds = [(sum(lengths[:i]), sum(lengths[: i + 1])) for i in range(len(lengths))]
    for causal in (False, True):
        module.is_causal = causal
        with torch.inference_mode(), packed_pass(lengths, FusedAttention()) as spans:
            out, _ = _attention(module, q, k, v, None, scaling=0.2)
        assert spans.fused_spans == (0 if causal else 2)  # 40 and 70 tokens; 5, 31 and 515 keep SDPA
        for start, end in bounds:
            want = torch.nn.functional.scaled_dot_product_attention(
                q[:, :, start:end], k[:, :, start:end], v[:, :, start:end], scale=0.2, is_causal=causal
            )
            assert float((out[0, start:end] - want[0].transpose(0, 1)).abs().max()) < 1e-5


def test_minilm_with_the_fused_graph_scores_as_transformers_does() -> None:
    """The real all-MiniLM-L6-v2 as a sequence classifier on GSM8K solutions (60-300 tokens)."""
    from rewardflow.models.similarity import default_encoder_path

    path = default_encoder_path()
    rows = list(gsm8k_examples(16))
    prompts, completions = [r["prompt"] for r in rows], [r["completion"] for r in rows]
    scores, reports = {}, {}
    for kernel in ("onednn", "torch"):
        torch.manual_seed(0)  # the same random classifier head for both
        rm = RewardModel(str(path), num_labels=1, allow_missing_weights=True, cpu_attention=kernel)
        scores[kernel], reports[kernel] = rm(prompts, completions), rm.last_report
    assert reports["onednn"].cpu_attention.startswith("onednn (fused oneDNN graph")
    assert reports["torch"].cpu_attention == "torch (cpu_attention='torch')"
    assert reports["onednn"].packing == "on"
    assert scores["onednn"] == pytest.approx(scores["torch"], abs=1e-5)
    alone = classifier_one_by_one(path, prompts, completions)
    assert scores["onednn"] == pytest.approx(alone, abs=1e-5)
    assert len({round(s, 5) for s in alone}) > 10  # the scores differ from row to row: the check has teeth


def test_choice_reports_why_sdpa_runs() -> None:
    cpu = torch.device("cpu")
    assert choose_cpu_attention(cpu, torch.float32, "torch") == ("torch (cpu_attention='torch')", None)
    reason, kernel = choose_cpu_attention(cpu, torch.bfloat16, "onednn")
    assert kernel is None and reason == "torch (cpu bfloat16: the fused graph is chosen for fp32 on the CPU)"
    reason, kernel = choose_cpu_attention(torch.device("meta"), torch.float32, "onednn")
    assert kernel is None and reason.startswith("torch (meta float32")
    reason, kernel = choose_cpu_attention(cpu, torch.float32, "onednn")
    assert isinstance(kernel, FusedAttention) and reason.startswith("onednn (")
    with pytest.raises(ConfigError, match="cpu_attention must be 'torch' or 'onednn'"):
        RewardModel(str(default_path()), cpu_attention="auto")


def default_path() -> object:
    from rewardflow.models.similarity import default_encoder_path

    return default_encoder_path()


def _broken_trace(*args: object, **kwargs: object) -> object:
    raise RuntimeError("TorchScript is gone")


@pytest.mark.parametrize(
    ("breakage", "why"),
    [
        ("missing", "this torch has no oneDNN Graph fuser (torch.jit.enable_onednn_fusion)"),
        ("failing", "the oneDNN Graph fuser failed here (RuntimeError: TorchScript is gone)"),
    ],
)
def test_a_torch_whose_fuser_is_missing_or_fails_falls_back_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, breakage: str, why: str
) -> None:
    if breakage == "missing":
        monkeypatch.delattr(torch.jit, "enable_onednn_fusion")
    else:
        monkeypatch.setattr(torch.jit, "trace", _broken_trace)
    fused_attention.fused_blocker.cache_clear()
    try:
        reason, kernel = choose_cpu_attention(torch.device("cpu"), torch.float32, "onednn")
    finally:
        monkeypatch.undo()
        fused_attention.fused_blocker.cache_clear()
    assert (reason, kernel) == (f"torch ({why})", None)
