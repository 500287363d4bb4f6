"""Failures stay typed and interrupts reach the caller; the device follows the rank; the hook respects holds."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from rewardflow import Engine, ModelError, Status
from rewardflow.errors import InputError
from rewardflow.models import ModelState, RewardModel
from rewardflow.models import weights as weights_module
from rewardflow.models.loading import resolve_device
from rewardflow.models.training import score_training_batch

ROWS = [{"prompt": "what is two plus two?", "completion": "four."}, {"prompt": "eggs?", "completion": "nine"}]


def test_truncated_safetensors_is_a_model_error(zoo: dict[str, Path], tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(zoo["token_cls"], broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # an interrupted download
    rm = RewardModel(str(broken), head="token-cls")
    with pytest.raises(ModelError, match="cannot"):
        rm(["q"], ["a"])
    with Engine({"rm": RewardModel(str(broken), head="token-cls")}) as engine:
        results = engine.score(ROWS)
    assert all(r.status is Status.ERROR and "ModelError" in (r.reason or "") for r in results)


def test_a_row_with_no_tokens_is_an_input_error_not_padding(zoo: dict[str, Path]) -> None:
    rm = RewardModel(str(zoo["plain_seq_cls"]))  # no template and no special tokens: "" + "" is zero tokens
    with pytest.raises(InputError, match="sample 1 has no tokens"):
        rm(["what is two plus two?", ""], ["four.", ""])
    templated = RewardModel(str(zoo["token_cls"]), head="token-cls")  # the template alone is something to read
    assert len(templated([""], [""])) == 1


class InterruptedRewardModel(RewardModel):
    """Ctrl-C arriving while the forward pass runs (raised in the engine's reward thread)."""

    def _forward(self, inputs: dict[str, Any], read: Any) -> Any:
        raise KeyboardInterrupt


def test_keyboard_interrupt_in_a_reward_thread_reaches_the_caller(zoo: dict[str, Path]) -> None:
    rm = InterruptedRewardModel(str(zoo["token_cls"]), head="token-cls", offload="release")
    outcome: list[str] = []

    def run() -> None:
        with Engine({"rm": rm}) as engine:
            try:
                score_training_batch(engine, ROWS)
            except KeyboardInterrupt:
                outcome.append("interrupted")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "the engine hung on an interrupt raised in a reward thread"
    assert outcome == ["interrupted"]
    assert rm.state is ModelState.OFFLOADED  # the hook still offloaded


def test_hook_leaves_a_held_model_on_the_device(zoo: dict[str, Path]) -> None:
    rm = RewardModel(str(zoo["token_cls"]), head="token-cls", offload="release")
    with Engine({"rm": rm}) as engine:
        with rm.onloaded():
            _, report = score_training_batch(engine, ROWS)
            assert rm.state is ModelState.ONLOADED  # the caller's hold wins over the hook
            assert report.offloaded  # a held model is the caller's choice, not a leak
        assert rm.state is ModelState.OFFLOADED
        _, report = score_training_batch(engine, ROWS)
    assert rm.state is ModelState.OFFLOADED and report.offloaded


@pytest.fixture
def four_gpus(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """A pretend 4-GPU node: what resolve_device asks torch.cuda, answered without a GPU."""
    state = {"current": 0}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: state["current"])
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    return state


def test_device_follows_local_rank_or_the_current_device(four_gpus: dict[str, int], monkeypatch: Any) -> None:
    assert resolve_device(None) == torch.device("cuda", 0)  # a single process: GPU 0
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert resolve_device(None) == torch.device("cuda", 2)  # torchrun's rank 2, set_device not called yet
    assert resolve_device("cuda") == torch.device("cuda", 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)  # an explicit index is obeyed
    four_gpus["current"] = 3
    assert resolve_device(None) == torch.device("cuda", 3)  # the trainer bound this process to GPU 3
    four_gpus["current"] = 0
    monkeypatch.setenv("LOCAL_RANK", "5")  # CUDA_VISIBLE_DEVICES shows this process only its own GPU
    assert resolve_device(None) == torch.device("cuda", 0)


def test_default_device_is_resolved_at_first_use_not_at_build(zoo: dict[str, Path], monkeypatch: Any) -> None:
    rm = RewardModel(str(zoo["token_cls"]), head="token-cls")  # built before the trainer picks the rank's GPU
    assert rm._device is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert rm.device == torch.device("cuda", 3) and rm.dtype == torch.bfloat16 and rm.token_budget == 8192


def test_host_copies_are_pinned_for_a_gpu(zoo: dict[str, Path], monkeypatch: Any) -> None:
    # CPU-only stand-in: the meta device plays the GPU, pin_memory is recorded instead of page-locking
    pinned: list[int] = []

    def pin(tensor: Any) -> Any:
        pinned.append(id(tensor))
        return tensor

    monkeypatch.setattr(weights_module, "should_pin", lambda device: True)
    monkeypatch.setattr(torch.Tensor, "pin_memory", pin)
    rm = RewardModel(str(zoo["token_cls"]), head="token-cls", device="meta", offload="cpu")
    rm.load()
    host = rm.weights.tensors()
    assert len(pinned) == len(host) > 0  # every host copy went through pin_memory, once
    rm.onload()
    assert all(p.is_meta for p in rm.weights.model.parameters())
    rm.offload()
    assert [t.data_ptr() for t in rm.weights.tensors()] == [t.data_ptr() for t in host]  # pinned copies reused
