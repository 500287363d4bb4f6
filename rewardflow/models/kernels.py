"""Which kernel runs a model's fp32 linear layers on the CPU: torch's default BLAS call or oneDNN.

A transformer's forward pass is ~90 % linear layers. On the CPU, torch sends an fp32 ``nn.Linear`` to its BLAS
(MKL in the official wheels). MKL picks its code path by CPU vendor: on AMD processors it runs its AVX2 kernels
even where the CPU has AVX-512, so a Zen 4/5 core reaches about half its fp32 matmul rate (bench P4 measured
~112 GFLOP/s through MKL and ~255 GFLOP/s through oneDNN on one Zen 5 core, for MiniLM's own shapes). oneDNN, the
other library torch ships and already uses for bf16 and for ``torch.compile``'s linear layers, dispatches by
instruction set, not vendor. So, on a CPU compute device in fp32, each ``nn.Linear`` of the model can be run by
torch's own oneDNN operator (``torch.ops.mkldnn._linear_pointwise``, the one inductor emits), on the module's
current weight tensors: nothing is converted, so the offload modes keep moving the same ``Parameter`` objects.

``cpu_linear`` chooses:

* ``"auto"`` (default): oneDNN is used when its result agrees with torch's to float rounding and it runs at
  least :data:`MIN_GAIN` times as fast, measured once per process on a reference layer shape (so on CPUs where
  MKL already runs its best kernels nothing changes). The measurement is of the CPU, not of the model: every model
  of a process makes the same choice, so two instances of one checkpoint give bit-identical scores (a per-model
  timing of tiny layers could land either side of the threshold);
* ``"onednn"``: used whenever it is available and agrees, whatever the speed;
* ``"torch"``: never; torch's default dispatch.

The arithmetic is fp32 with fp32 accumulation either way; only the summation order differs, so scores move by
float rounding (bench P4: 8e-8 on MiniLM's scores). Not covered: other dtypes (bf16 already goes to oneDNN inside
torch), accelerators (nothing changes there), gradients (reward models are frozen; a call that needs a gradient
takes torch's path), attention and the other element-wise operators. Under ``torch.compile`` the layers trace as
plain ``F.linear`` (inductor then chooses its own kernel; it refuses this operator on weights it has not frozen).
"""

from __future__ import annotations

import functools
import logging
import time
import types
from typing import Any

__all__ = ["CPU_LINEAR", "MIN_GAIN", "choose_cpu_linear", "cpu_gain", "onednn_linear_blocker", "use_onednn_linears"]

logger = logging.getLogger(__name__)

CPU_LINEAR = ("auto", "onednn", "torch")
#: ``"auto"`` switches to oneDNN only when it measured at least this much faster on this CPU.
MIN_GAIN = 1.2


def _op() -> Any:
    import torch

    return torch.ops.mkldnn._linear_pointwise.default


def _onednn_forward(self: Any, x: Any) -> Any:
    """``nn.Linear.forward`` through oneDNN, for fp32 CPU tensors without gradients; torch's path otherwise."""
    import torch

    weight = self.weight
    if (
        x.dtype is torch.float32
        and weight.dtype is torch.float32
        and x.device.type == "cpu"
        and weight.device.type == "cpu"
        and x.dim() >= 2
        and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
        and not torch.compiler.is_compiling()  # inductor lowers this operator only for frozen weights
    ):
        return _op()(x, weight, self.bias, "none", [], "")
    return torch.nn.functional.linear(x, weight, self.bias)


def _linears(model: Any) -> list[Any]:
    import torch

    # exactly nn.Linear: subclasses (LoRA layers, quantized or parametrized linears) keep their own forward
    return [m for m in model.modules() if type(m) is torch.nn.Linear]


def onednn_linear_blocker() -> str | None:
    """``None`` when torch's oneDNN linear operator runs here and equals ``F.linear`` to float rounding."""
    import torch

    if not torch.backends.mkldnn.is_available():
        return "this torch build has no oneDNN"
    try:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(2, 7, 48, generator=gen)
        w, b = torch.randn(24, 48, generator=gen), torch.randn(24, generator=gen)
        with torch.inference_mode():
            got = _op()(x, w, b, "none", [], "")
            want = torch.nn.functional.linear(x, w, b)
    except (AttributeError, RuntimeError, TypeError) as exc:  # an operator renamed or missing in this torch
        return f"torch's oneDNN linear operator is unavailable ({type(exc).__name__}: {exc})"
    if got.shape != want.shape or float((got - want).abs().max()) > 1e-4 * float(want.abs().max()):
        return "torch's oneDNN linear operator disagrees with F.linear"
    return None


@functools.cache
def cpu_gain() -> float:
    """How many times faster oneDNN runs an fp32 linear layer than ``F.linear`` on this CPU; measured once.

    The reference layer is 1024 -> 1024 on 256 rows (a micro-batch of a small encoder): big enough to be
    compute-bound on any CPU, small enough to take a few milliseconds.
    """
    import torch

    weight = torch.randn(1024, 1024, generator=torch.Generator().manual_seed(0))
    return _rate_gain([weight])


def _rate_gain(weights: list[Any], repeats: int = 5) -> float:
    """How many times faster oneDNN runs these weights than ``F.linear`` does (best of alternating runs)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    tensors = []
    for w in weights:
        n, k = w.shape
        rows = max(16, min(256, int(5e7 // (n * k))))
        tensors.append((torch.randn(rows, k, generator=gen), w))
    op = _op()

    def run_torch() -> None:
        for x, w in tensors:
            torch.nn.functional.linear(x, w)

    def run_onednn() -> None:
        for x, w in tensors:
            op(x, w, None, "none", [], "")

    best = {run_torch: float("inf"), run_onednn: float("inf")}
    with torch.inference_mode():
        for fn in best:
            fn()  # warm-up: oneDNN builds its primitive on first use
        for _ in range(repeats):  # alternating, so a burst of load elsewhere hits both
            for fn in best:
                start = time.perf_counter()
                fn()
                best[fn] = min(best[fn], time.perf_counter() - start)
    return best[run_torch] / max(best[run_onednn], 1e-9)


def choose_cpu_linear(model: Any, device: Any, policy: str) -> str:
    """Apply ``policy`` to ``model`` (see the module docstring); returns what runs its linear layers and why."""
    import torch

    if policy == "torch":
        return "torch (cpu_linear='torch')"
    linears = _linears(model)
    if not linears:
        return "torch (no nn.Linear layers)"
    dtype = linears[0].weight.dtype
    if device.type != "cpu" or dtype is not torch.float32:
        return f"torch ({device.type} {str(dtype).removeprefix('torch.')}: oneDNN is chosen for fp32 on the CPU)"
    blocker = onednn_linear_blocker()
    if blocker is not None:
        return f"torch ({blocker})"
    if policy == "auto":
        gain = cpu_gain()
        if gain < MIN_GAIN:
            return f"torch (oneDNN measured {gain:.2f}x torch's rate on this CPU, under {MIN_GAIN}x)"
        detail = f"measured {gain:.2f}x torch's rate on this CPU"
    else:
        detail = "cpu_linear='onednn'"
    count = use_onednn_linears(linears)
    logger.info("%d linear layers run through oneDNN (%s)", count, detail)
    return f"onednn ({detail})"


def use_onednn_linears(linears: list[Any]) -> int:
    """Route each ``nn.Linear`` of ``linears`` through oneDNN (an instance-level ``forward``); returns the count.

    The module keeps its ``weight``/``bias`` attributes and reads them on every call, so weights swapped by
    :class:`~rewardflow.models.weights.WeightStore` (onload, offload, release) are used as they are.
    """
    for module in linears:
        module.forward = types.MethodType(_onednn_forward, module)
    return len(linears)
