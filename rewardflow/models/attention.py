"""Which kernel runs a packed sequence's bidirectional attention on the CPU: torch's SDPA or a fused oneDNN graph.

On the CPU, torch's ``scaled_dot_product_attention`` runs its flash kernel, whose matrix products go through MKL.
On AMD processors MKL runs its AVX2 code (see :mod:`rewardflow.models.kernels`), and at an encoder's head width of
32 the kernel reached 66-78 GFLOP/s on one Zen 5 core (bench P4), a quarter of what the same core does in
oneDNN's linear layers. For MiniLM on GSM8K solutions that made attention 7.5 % of the FLOPs and ~20 % of the time.

oneDNN has its own fused attention: its Graph API compiles ``matmul -> scale -> add mask -> softmax -> matmul``
into one partition that uses the CPU's widest instructions. Torch reaches it through its TorchScript fuser
(``torch.jit.enable_onednn_fusion``, the "LLGA" pass): a traced function of that pattern runs as one oneDNN
partition. Bench P4's attention floor (MiniLM's 12 heads x 32 wide, each GSM8K solution's length timed alone, one
Zen 5 core): 101 GFLOP/s against SDPA's 65 (1.55x, padding included), within 1e-6 of it.

Why it is shaped the way it is:

* oneDNN compiles a partition for static shapes, and each compiled graph holds its own buffers (measured 3-33 MB
  for 64-500 tokens, and oneDNN keeps part of it cached after the graph is dropped). One graph per exact length
  ran 1.97x SDPA but took 4.3 GB for the 480 lengths from 32 to 511. So lengths are rounded up to a bucket
  (:func:`bucket`: 16 tokens up to 256, 32 beyond) and the padded keys are masked out: at most 23 graphs per head
  layout, 264 MB for all buckets up to 512 tokens (bench P4), compiled once each (4-50 ms);
* spans longer than :data:`MAX_LENGTH` keep SDPA, whose flash kernel never holds the whole score matrix, and so
  do spans shorter than :data:`MIN_LENGTH`, where a fused call's fixed cost (~30 us) outweighs its speed;
* bidirectional only: causal spans keep SDPA, whose flash kernel skips the masked half of the scores that a
  fused graph would compute;
* the fuser switch is global in torch, so it is turned on only while a graph is traced and optimized (under a
  lock), then put back; an optimized graph keeps its fused plan.

``cpu_attention="onednn"`` opts in; the default, ``"torch"``, keeps SDPA, because inside a whole model the gain
shrinks: the graphs of different buckets take turns, each with its own buffers, and a packed row mixes lengths.
Bench P4 (``--part attention``) measured MiniLM's attention 1.2x faster in place (1.03 s against 1.23 s for 256
GSM8K solutions) and the whole scoring call 1.03-1.04x, for up to 264 MB of compiled graphs: a lever (attention's
share of the work grows with the length of the sequences), not a default. A fused graph is used only where it
agrees with SDPA to float rounding on a check run once per process; TorchScript is deprecated in torch, and when
it goes the check fails and SDPA runs, with the reason in ``ScoreReport.cpu_attention``.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import warnings
from collections import OrderedDict
from typing import Any

__all__ = [
    "CACHE_SIZE",
    "CPU_ATTENTION",
    "MAX_LENGTH",
    "MIN_LENGTH",
    "FusedAttention",
    "bucket",
    "choose_cpu_attention",
    "fused_blocker",
    "shared",
]

logger = logging.getLogger(__name__)

CPU_ATTENTION = ("torch", "onednn")
#: spans shorter than this many tokens keep SDPA (a fused call's fixed cost dominates below it)
MIN_LENGTH = 32
#: spans longer than this keep SDPA (a fused graph holds the whole score matrix; see the module docstring)
MAX_LENGTH = 512
#: most compiled graphs kept per process (23 buckets per head layout; the least recently used is dropped)
CACHE_SIZE = 64
#: the shape of the one-time agreement check: a small encoder's heads on a 120-token sequence
_REFERENCE = (1, 12, 120, 32)


def bucket(length: int) -> int:
    """The padded length a span of ``length`` tokens runs at: the next multiple of 16 up to 256, then of 32."""
    step = 16 if length <= 256 else 32
    return -(-length // step) * step


_FUSER_LOCK = threading.Lock()


class FusedAttention:
    """Bidirectional attention as one oneDNN Graph partition per padded shape, compiled on first use.

    Thread-safe: compiling holds a lock (the fuser switch is process-wide); calling a compiled graph does not.
    """

    def __init__(self, capacity: int = CACHE_SIZE) -> None:
        self.capacity = capacity
        self._graphs: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._lock = threading.Lock()
        self.compiled = 0  # graphs compiled so far (a new padded shape each)
        self.compile_s = 0.0  # seconds spent compiling them

    def __call__(self, query: Any, key: Any, value: Any, scale: float) -> Any:
        """``softmax(q k^T * scale) v`` for ``[1, heads, length, width]`` tensors, any strides; contiguous result.

        The span is copied into a zero-padded ``[1, heads, bucket(length), width]`` block, the padded keys are
        masked with ``-inf`` (so they get exactly zero weight), and the padded query rows are dropped.
        """
        import torch

        length = query.shape[2]
        padded = bucket(length)
        extra = (0, 0, 0, padded - length)
        q, k, v = (torch.nn.functional.pad(t, extra) for t in (query, key, value))
        mask = q.new_zeros(1, 1, 1, padded)
        mask[..., length:] = float("-inf")
        shape = (tuple(q.shape), tuple(k.shape), tuple(v.shape), float(scale))
        with self._lock:
            graph = self._graphs.get(shape)
            if graph is not None:
                self._graphs.move_to_end(shape)
        if graph is None:
            graph = self._compile(shape, (q, k, v, mask), float(scale))
        return graph(q, k, v, mask)[:, :, :length]

    def _compile(self, shape: tuple[Any, ...], example: tuple[Any, ...], scale: float) -> Any:
        import torch

        def attend(q: Any, k: Any, v: Any, mask: Any) -> Any:
            scores = torch.matmul(q, k.transpose(-1, -2)) * scale + mask
            return torch.matmul(torch.softmax(scores, dim=-1), v)

        with _FUSER_LOCK:  # one compile at a time; a shape compiled meanwhile by another thread is reused
            with self._lock:
                graph = self._graphs.get(shape)
            if graph is not None:
                return graph
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.jit.trace's deprecation notice: see the module docstring
                was_on = torch._C._jit_llga_enabled()
                torch.jit.enable_onednn_fusion(True)
                try:
                    graph = torch.jit.trace(attend, example, check_trace=False)
                    for _ in range(3):  # the profiling executor records shapes, then builds the fused plan
                        graph(*example)
                finally:
                    torch.jit.enable_onednn_fusion(was_on)
            with self._lock:
                self._graphs[shape] = graph
                while len(self._graphs) > self.capacity:
                    self._graphs.popitem(last=False)
                self.compiled += 1
                self.compile_s += time.perf_counter() - start
        return graph

    def __len__(self) -> int:
        return len(self._graphs)

    def clear(self) -> None:
        """Drop the compiled graphs (oneDNN may keep part of their memory in its own partition cache)."""
        with self._lock:
            self._graphs.clear()


@functools.cache
def shared() -> FusedAttention:
    """The process's one cache of fused graphs: shapes, not weights, key it, so every model can share it."""
    return FusedAttention()


def _reference(seed: int = 0) -> tuple[Any, Any, Any]:
    import torch

    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(*_REFERENCE, generator=gen) for _ in range(3))  # type: ignore[return-value]


@functools.cache
def fused_blocker() -> str | None:
    """``None`` when the fused graph runs here and equals SDPA to float rounding, else why not (checked once)."""
    import torch

    if not torch.backends.mkldnn.is_available():
        return "this torch build has no oneDNN"
    if not (hasattr(torch.jit, "enable_onednn_fusion") and hasattr(torch._C, "_jit_llga_enabled")):
        return "this torch has no oneDNN Graph fuser (torch.jit.enable_onednn_fusion)"
    q, k, v = _reference()
    scale = q.shape[-1] ** -0.5
    try:
        with torch.inference_mode():
            got = FusedAttention(capacity=1)(q, k, v, scale)
            want = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=scale)
    except Exception as exc:  # TorchScript removed or broken in this torch: SDPA runs
        return f"the oneDNN Graph fuser failed here ({type(exc).__name__}: {exc})"
    diff = float((got - want).abs().max())
    if got.shape != want.shape or not diff <= 1e-5:
        return f"the fused oneDNN graph differs from SDPA by {diff:.1e}"
    return None


def choose_cpu_attention(device: Any, dtype: Any, policy: str) -> tuple[str, FusedAttention | None]:
    """Apply ``policy`` for a model on ``device`` in ``dtype``: what runs packed attention and why, and the kernel.

    The kernel is ``None`` when SDPA runs. Only packed passes use it (:mod:`rewardflow.models.packing`), so only
    CPU fp32 models can get one.
    """
    import torch

    if policy == "torch":
        return "torch (cpu_attention='torch')", None
    if device.type != "cpu" or dtype is not torch.float32:
        kind = str(dtype).removeprefix("torch.")
        return f"torch ({device.type} {kind}: the fused graph is chosen for fp32 on the CPU)", None
    blocker = fused_blocker()
    if blocker is not None:
        return f"torch ({blocker})", None
    detail = "fused oneDNN graph, cpu_attention='onednn'"
    logger.info("packed bidirectional attention runs as a %s", detail)
    return f"onednn ({detail}; bidirectional spans of {MIN_LENGTH}-{MAX_LENGTH} tokens)", shared()
