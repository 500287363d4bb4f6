"""Load once under concurrency; onload/offload in the three modes; what a CPU-only test can and cannot show.

On a machine without an accelerator the compute device *is* host memory, so ``cpu`` mode has nothing to move
there. Movement is shown with PyTorch's ``meta`` device standing in for the accelerator (tensors on it hold no
memory, so "on the compute device" and "off it" are unambiguous); ``release`` mode is shown by the process's
resident memory dropping. CUDA memory accounting and pinned transfers are not exercised here.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from rewardflow import ModelError
from rewardflow.models import ModelState, RewardModel

PROMPTS = ["what is two plus two?", "janet has sixteen eggs", "say something", "the lazy dog?"]
COMPLETIONS = ["four.", "she makes 18 dollars every day.", "the quick brown fox jumps over the lazy dog.", "nine"]


def rss() -> int:
    psutil = pytest.importorskip("psutil")
    return int(psutil.Process().memory_info().rss)


def test_concurrent_first_calls_load_once(zoo: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers

    calls: list[str] = []
    original = transformers.AutoModelForTokenClassification.from_pretrained

    def slow_from_pretrained(*args: object, **kwargs: object) -> object:
        calls.append(str(args[0]))
        time.sleep(0.3)  # widen the window in which a second loader could slip in
        return original(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForTokenClassification, "from_pretrained", slow_from_pretrained)
    rm = RewardModel(str(zoo["token_cls"]), head="token-cls")
    barrier = threading.Barrier(4)
    results: list[list[float]] = []
    errors: list[BaseException] = []

    def worker(first: bool) -> None:
        barrier.wait()
        try:
            if first:
                rm.load()  # one thread asks for the load directly, three through a scoring call
            results.append(rm(PROMPTS, COMPLETIONS))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i == 0,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and len(results) == 4
    assert len(calls) == 1 and rm.load_count == 1
    assert all(r == results[0] for r in results)


def test_cpu_mode_moves_weights_off_the_compute_device(zoo: dict[str, Path]) -> None:
    rm = RewardModel(str(zoo["token_cls"]), head="token-cls", device="meta", offload="cpu")
    rm.load()
    assert rm.state is ModelState.OFFLOADED
    host = rm.weights.tensors()
    assert all(t.device.type == "cpu" for t in host)
    pointers = [t.data_ptr() for t in host]
    rm.onload()
    assert rm.state is ModelState.ONLOADED
    assert all(p.is_meta for p in rm.weights.model.parameters())  # what the model computes with
    rm.offload()
    assert rm.state is ModelState.OFFLOADED
    back = rm.weights.tensors()
    assert all(t.device.type == "cpu" for t in back)
    assert [t.data_ptr() for t in back] == pointers  # the host copies are reused, never copied back


def test_cpu_mode_on_a_cpu_device_scores_identically_across_cycles(zoo: dict[str, Path]) -> None:
    rm = RewardModel(str(zoo["token_cls"]), head="token-cls", offload="cpu")
    first = rm(PROMPTS, COMPLETIONS)
    pointers = [t.data_ptr() for t in rm.weights.tensors()]
    for _ in range(3):
        rm.onload()
        rm.offload()
    assert rm(PROMPTS, COMPLETIONS) == first
    assert [t.data_ptr() for t in rm.weights.tensors()] == pointers  # nothing to move: no copies made


def test_release_mode_frees_memory_and_reloads_identically(zoo: dict[str, Path]) -> None:
    rm = RewardModel(str(zoo["wide"]), head="token-cls", offload="release")
    first = rm(PROMPTS, COMPLETIONS)
    store = rm.weights
    assert store.released_bytes > 40e6 and store.host_bytes < 1e6  # everything but tiny buffers is in the file
    assert all(p.is_meta for p in store.model.parameters())  # freed: no storage behind the parameters
    with rm.onloaded():
        again = rm(PROMPTS, COMPLETIONS)
        assert not any(p.is_meta for p in store.model.parameters())
        resident = rss()
    after = rss()
    assert again == first  # bit-identical weights from the file, so bit-identical scores
    assert resident - after > 0.6 * store.released_bytes, (resident, after, store.released_bytes)
    assert rm.state is ModelState.OFFLOADED


def test_release_mode_keeps_weights_the_file_lacks(zoo: dict[str, Path]) -> None:
    # a base checkpoint read as a token classifier: the head is random, so it cannot be reloaded from the file
    rm = RewardModel(str(zoo["base"]), head="token-cls", offload="release", allow_missing_weights=True)
    first = rm(PROMPTS, COMPLETIONS)
    assert rm.weights.host_bytes > 0 and rm.weights.released_bytes > 0
    assert rm(PROMPTS, COMPLETIONS) == first


def test_none_mode_stays_on_the_device(zoo: dict[str, Path]) -> None:
    rm = RewardModel(str(zoo["token_cls"]), head="token-cls", device="meta", offload="none")
    rm.load()
    assert rm.state is ModelState.ONLOADED
    rm.offload()
    assert rm.state is ModelState.ONLOADED
    assert all(p.is_meta for p in rm.weights.model.parameters())


def test_onloaded_context_nests_and_offloads_at_the_outermost_exit(zoo: dict[str, Path]) -> None:
    rm = RewardModel(str(zoo["token_cls"]), head="token-cls", offload="release")
    with rm.onloaded():
        with rm.onloaded():
            rm(PROMPTS, COMPLETIONS)
            assert rm.state is ModelState.ONLOADED  # a scoring call inside the context does not offload
        assert rm.state is ModelState.ONLOADED
    assert rm.state is ModelState.OFFLOADED
    assert all(p.is_meta for p in rm.weights.model.parameters())


def test_closed_model_refuses_work(zoo: dict[str, Path]) -> None:
    with RewardModel(str(zoo["token_cls"]), head="token-cls") as rm:
        rm(PROMPTS[:1], COMPLETIONS[:1])
    assert rm.state is ModelState.CLOSED
    with pytest.raises(ModelError, match="closed"):
        rm(PROMPTS[:1], COMPLETIONS[:1])
    rm.offload()  # harmless after close
