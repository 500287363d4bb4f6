"""Which kernel runs fp32 linear layers on the CPU (rewardflow.models.kernels): oneDNN or torch's default.

The scores must not depend on the choice beyond float rounding, the oneDNN operator must really be the one that
runs when it is chosen, the weights the offload modes swap in must be the ones it reads, and every way the choice
can fall back (asked for torch, not measured faster, operator missing, gradients, other dtypes and devices) must
say so in the report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from rewardflow.errors import ConfigError
from rewardflow.models import RewardModel, kernels
from rewardflow.models.similarity import SimilarityReward

PROMPTS = ["How much does Janet make per day?"] * 3 + ["What is two plus two?"]
COMPLETIONS = ["She sells 9 eggs for $2 each: $18.", "18", "I do not know.", "four"]


def _patched(model: Any) -> list[bool]:
    return ["forward" in m.__dict__ for m in model.modules() if type(m) is torch.nn.Linear]


@pytest.fixture
def op_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """Records the input shape of every call to torch's oneDNN linear operator made through rewardflow."""
    calls: list[tuple[int, ...]] = []
    real = kernels._op()

    def counting(x: Any, *args: Any) -> Any:
        calls.append(tuple(x.shape))
        return real(x, *args)

    monkeypatch.setattr(kernels, "_op", lambda: counting)
    return calls


def test_onednn_scores_equal_torch_scores_and_the_operator_runs(
    zoo: dict[str, Path], op_calls: list[tuple[int, ...]]
) -> None:
    onednn = RewardModel(str(zoo["seq_cls"]), score_label="good", cpu_linear="onednn")
    plain = RewardModel(str(zoo["seq_cls"]), score_label="good", cpu_linear="torch")
    got = onednn(PROMPTS, COMPLETIONS)
    assert onednn.last_report is not None and onednn.last_report.cpu_linear.startswith("onednn")
    assert op_calls, "the oneDNN operator was never called"
    calls = len(op_calls)
    want = plain(PROMPTS, COMPLETIONS)
    assert len(op_calls) == calls  # cpu_linear="torch" never reaches it
    assert plain.last_report is not None and plain.last_report.cpu_linear == "torch (cpu_linear='torch')"
    assert len({round(v, 4) for v in want}) > 2  # distinct scores: a mix-up would show
    assert got == pytest.approx(want, abs=1e-5)
    assert all(_patched(onednn._model)) and not any(_patched(plain._model))


def test_release_mode_reads_the_weights_swapped_in_at_each_onload(zoo: dict[str, Path]) -> None:
    reference = RewardModel(str(zoo["wide"]), head="token-cls", cpu_linear="torch")(PROMPTS, COMPLETIONS)
    rm = RewardModel(str(zoo["wide"]), head="token-cls", offload="release", cpu_linear="onednn")
    first = rm(PROMPTS, COMPLETIONS)
    assert all(p.is_meta for p in rm.weights.model.parameters())  # released between calls
    assert not any(kernels._PACKED in m.__dict__ for m in rm.weights.model.modules())  # packed copies freed too
    second = rm(PROMPTS, COMPLETIONS)  # the Linear modules now hold tensors reread from the file
    assert first == second
    assert first == pytest.approx(reference, abs=1e-5)


def test_similarity_runs_through_the_same_choice() -> None:
    rows = [("Every day Janet earns 18 dollars.", "Janet makes $18 a day."), ("Paris.", "Janet makes $18 a day.")]
    fast = SimilarityReward(cpu_linear="onednn")
    slow = SimilarityReward(cpu_linear="torch")
    got = fast.score_texts([a for a, _ in rows], [b for _, b in rows])
    assert fast.last_report is not None and fast.last_report.cpu_linear.startswith("onednn")
    assert got == pytest.approx(slow.score_texts([a for a, _ in rows], [b for _, b in rows]), abs=1e-5)
    assert got[0] > got[1]


@pytest.fixture
def fresh_gain() -> Any:
    """The CPU's measured gain is cached per process; these tests measure (or fake) it anew."""
    kernels.cpu_gain.cache_clear()
    yield
    kernels.cpu_gain.cache_clear()


def test_auto_keeps_torch_when_onednn_is_not_measured_faster(
    zoo: dict[str, Path], monkeypatch: pytest.MonkeyPatch, fresh_gain: None
) -> None:
    monkeypatch.setattr(kernels, "_rate_gain", lambda weights: 1.05)
    rm = RewardModel(str(zoo["token_cls"]), head="token-cls")  # cpu_linear="auto"
    rm(PROMPTS, COMPLETIONS)
    assert rm.last_report is not None
    assert rm.last_report.cpu_linear == "torch (oneDNN measured 1.05x torch's rate on this CPU, under 1.2x)"
    assert not any(_patched(rm._model))


def test_auto_measures_once_per_process_and_every_model_agrees(
    zoo: dict[str, Path], monkeypatch: pytest.MonkeyPatch, fresh_gain: None
) -> None:
    measured: list[list[tuple[int, ...]]] = []

    def gain(weights: list[Any]) -> float:
        measured.append([tuple(w.shape) for w in weights])
        return 2.0

    monkeypatch.setattr(kernels, "_rate_gain", gain)
    first = RewardModel(str(zoo["seq_cls"]), score_label="good")
    second = RewardModel(str(zoo["seq_cls"]), score_index=1)
    assert first(PROMPTS, COMPLETIONS) == second(PROMPTS, COMPLETIONS)  # same kernel, bit-identical scores
    want = "onednn (measured 2.00x torch's rate on this CPU; weights prepacked)"
    assert first.cpu_linear_used == second.cpu_linear_used == want
    assert measured == [[(1024, 1024)]]  # one reference measurement for the process


def test_the_real_gain_probe_returns_a_positive_ratio(fresh_gain: None) -> None:
    assert kernels._rate_gain([torch.randn(32, 48), torch.randn(48, 32)], repeats=2) > 0
    assert kernels.cpu_gain() > 0


def test_a_missing_operator_falls_back_with_the_reason(zoo: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> Any:
        raise AttributeError("no such op: mkldnn::_linear_pointwise")

    monkeypatch.setattr(kernels, "_op", missing)
    rm = RewardModel(str(zoo["token_cls"]), head="token-cls", cpu_linear="onednn")
    scores = rm(PROMPTS, COMPLETIONS)
    assert len(scores) == len(PROMPTS)
    assert "operator is unavailable (AttributeError: no such op" in rm.cpu_linear_used
    assert not any(_patched(rm._model))


def test_other_dtypes_devices_and_gradients_take_torchs_path(zoo: dict[str, Path]) -> None:
    bf16 = RewardModel(str(zoo["token_cls"]), head="token-cls", dtype="bf16", cpu_linear="onednn")
    bf16.load()
    assert bf16.cpu_linear_used.startswith("torch (cpu bfloat16")
    meta = RewardModel(str(zoo["token_cls"]), head="token-cls", device="meta", cpu_linear="onednn")
    meta.load()
    assert meta.cpu_linear_used.startswith("torch (meta float32")
    # a patched layer asked for a gradient computes with F.linear, which autograd knows
    layer = torch.nn.Linear(8, 4)
    kernels.use_onednn_linears([layer])
    x = torch.randn(3, 8, requires_grad=True)
    layer(x).sum().backward()
    assert x.grad is not None and x.grad.shape == (3, 8)
    with torch.inference_mode():
        assert torch.allclose(layer(x.detach()), torch.nn.functional.linear(x.detach(), layer.weight, layer.bias))


def test_a_model_being_compiled_traces_plain_linear_layers(
    op_calls: list[tuple[int, ...]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # inductor cannot lower the oneDNN operator on unfrozen weights (seen with torch.compile(dynamic=True))
    layer = torch.nn.Linear(8, 4)
    kernels.use_onednn_linears([layer])
    x = torch.randn(3, 8)
    with torch.inference_mode():
        layer(x)
        assert len(op_calls) == 1
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
        out = layer(x)
    assert len(op_calls) == 1
    assert torch.allclose(out, torch.nn.functional.linear(x, layer.weight, layer.bias))


def test_bad_policy_is_a_config_error(zoo: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="cpu_linear must be 'auto', 'onednn' or 'torch'"):
        RewardModel(str(zoo["token_cls"]), head="token-cls", cpu_linear="mkl")


def test_prepacked_weights_are_reused_and_repacked_when_a_weight_changes(zoo: dict[str, Path]) -> None:
    rm = RewardModel(str(zoo["seq_cls"]), score_label="good", cpu_linear="onednn")
    first = rm(PROMPTS, COMPLETIONS)
    assert rm.cpu_linear_used.endswith("weights prepacked)"), rm.cpu_linear_used
    linears = [m for m in rm._model.modules() if type(m) is torch.nn.Linear]
    packed = [m.__dict__[kernels._PACKED][1] for m in linears]
    assert all(p.is_mkldnn for p in packed)
    assert rm(PROMPTS, COMPLETIONS) == first  # bit for bit, from the same packed copies
    assert all(m.__dict__[kernels._PACKED][1] is p for m, p in zip(linears, packed, strict=True))
    with torch.no_grad():
        linears[0].weight.mul_(0.5)  # an in-place change: a new version of the same storage
    changed = rm(PROMPTS, COMPLETIONS)
    assert linears[0].__dict__[kernels._PACKED][1] is not packed[0]  # packed again
    assert changed != first
    plain = RewardModel(str(zoo["seq_cls"]), score_label="good", cpu_linear="torch")
    plain.load()
    with torch.no_grad():
        next(m for m in plain._model.modules() if type(m) is torch.nn.Linear).weight.mul_(0.5)
    assert changed == pytest.approx(plain(PROMPTS, COMPLETIONS), abs=1e-5)


def test_prepacking_has_a_size_limit(zoo: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernels, "PREPACK_MAX_BYTES", 1024)
    rm = RewardModel(str(zoo["seq_cls"]), score_label="good", cpu_linear="onednn")
    got = rm(PROMPTS, COMPLETIONS)
    assert "weights not prepacked" in rm.cpu_linear_used and "kept only up to" in rm.cpu_linear_used
    assert not any(kernels._PACKED in m.__dict__ for m in rm._model.modules())
    want = RewardModel(str(zoo["seq_cls"]), score_label="good", cpu_linear="torch")(PROMPTS, COMPLETIONS)
    assert got == pytest.approx(want, abs=1e-5)


def test_bert_gelu_is_fused_into_its_linear_layer_and_checked_first(op_calls: list[tuple[int, ...]]) -> None:
    """The real all-MiniLM-L6-v2: its six intermediate blocks run as linear+GELU oneDNN calls, same scores."""
    import transformers

    from rewardflow.models.similarity import default_encoder_path

    path = str(default_encoder_path())
    scores = {}
    for kernel in ("onednn", "torch"):
        torch.manual_seed(0)
        rm = RewardModel(path, num_labels=1, allow_missing_weights=True, cpu_linear=kernel)
        scores[kernel] = rm(PROMPTS, COMPLETIONS)
        if kernel == "onednn":
            assert "GELU fused into 6 of them" in rm.cpu_linear_used, rm.cpu_linear_used
            fused = [m for m in rm._model.modules() if type(m).__name__ == "BertIntermediate"]
            assert len(fused) == 6 and all("forward" in m.__dict__ for m in fused)
    assert scores["onednn"] == pytest.approx(scores["torch"], abs=1e-5)

    class Scaled(transformers.models.bert.modeling_bert.BertIntermediate):
        def forward(self, hidden_states: Any) -> Any:  # does more than act(dense(x)): must keep its own forward
            return super().forward(hidden_states) * 2.0

    config = transformers.BertConfig(hidden_size=16, intermediate_size=32, hidden_act="gelu")
    model = torch.nn.Sequential(Scaled(config), transformers.models.bert.modeling_bert.BertIntermediate(config))
    assert kernels.fuse_gelu(model) == 1
    assert "forward" not in model[0].__dict__ and "forward" in model[1].__dict__
    tanh = transformers.models.bert.modeling_bert.BertIntermediate(
        transformers.BertConfig(hidden_size=16, intermediate_size=32, hidden_act="gelu_new")
    )
    assert kernels.fuse_gelu(tanh) == 0  # an approximate GELU is not oneDNN's exact one
