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
takes torch's path) and attention. One element-wise operator is folded in: where a block computes
``GELU(dense(x))`` with an exact GELU (BERT-family intermediates), :func:`fuse_gelu` runs it as one oneDNN call
with a GELU post-op, after checking on a random input that it equals the block's own forward. The weights are
kept in oneDNN's blocked layout too (a copy made on first use, up to :data:`PREPACK_MAX_BYTES`, freed when the
model is released), which saves a reorder of every weight on every call (1.07x on MiniLM, same bits). Under
``torch.compile`` the layers trace as plain ``F.linear`` (inductor then chooses its own kernel; it refuses this
operator on weights it has not frozen).
"""

from __future__ import annotations

import functools
import logging
import time
import types
from typing import Any

__all__ = [
    "CPU_LINEAR",
    "MIN_GAIN",
    "choose_cpu_linear",
    "cpu_gain",
    "drop_prepacked",
    "fuse_gelu",
    "onednn_linear_blocker",
    "use_onednn_linears",
]

logger = logging.getLogger(__name__)

CPU_LINEAR = ("auto", "onednn", "torch")
#: a oneDNN-packed copy of the linear weights is kept when they total at most this many bytes (it doubles them)
PREPACK_MAX_BYTES = 1 << 30
#: the row count oneDNN packs weights for: the CPU's default token budget, i.e. a micro-batch's rows
PREPACK_ROWS = 1024
_PREPACK = "_rewardflow_prepack"
_PACKED = "_rewardflow_packed_weight"
#: ``"auto"`` switches to oneDNN only when it measured at least this much faster on this CPU.
MIN_GAIN = 1.2


def _op() -> Any:
    import torch

    return torch.ops.mkldnn._linear_pointwise.default


def _runs_onednn(x: Any, weight: Any) -> bool:
    """Whether this call can take oneDNN: fp32 CPU tensors, no gradient wanted, not being traced by a compiler."""
    import torch

    return (
        x.dtype is torch.float32
        and weight.dtype is torch.float32
        and x.device.type == "cpu"
        and weight.device.type == "cpu"
        and x.dim() >= 2
        and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
        and not torch.compiler.is_compiling()  # inductor lowers this operator only for frozen weights
    )


def _weight(linear: Any) -> Any:
    """The weight oneDNN should read: its prepacked copy when the layer has prepacking on, else the weight itself.

    oneDNN computes with the weight in a blocked layout; given a plain one it reorders it on every call. The packed
    copy is made once and kept while the weight tensor stays the same (same storage, shape and version), so a
    weight that is swapped or reloaded is packed again; :func:`drop_prepacked` frees the copies.
    """
    weight = linear.weight
    if not linear.__dict__.get(_PREPACK, False):
        return weight
    try:
        version = weight._version
    except RuntimeError:  # an inference-mode tensor has no version counter
        version = -1
    key = (weight.data_ptr(), tuple(weight.shape), version)
    cached = linear.__dict__.get(_PACKED)
    if cached is None or cached[0] != key:
        import torch

        cached = (key, torch.ops.mkldnn._reorder_linear_weight(weight.detach(), PREPACK_ROWS))
        linear.__dict__[_PACKED] = cached
    return cached[1]


def _onednn_forward(self: Any, x: Any) -> Any:
    """``nn.Linear.forward`` through oneDNN, for fp32 CPU tensors without gradients; torch's path otherwise."""
    import torch

    if _runs_onednn(x, self.weight):
        return _op()(x, _weight(self), self.bias, "none", [], "")
    return torch.nn.functional.linear(x, self.weight, self.bias)


def _gelu_fused_forward(self: Any, x: Any) -> Any:
    """``act(dense(x))`` with an exact GELU, as one oneDNN call (the GELU is its post-op); else the module's own."""
    dense = self.dense
    if _runs_onednn(x, dense.weight):
        return _op()(x, _weight(dense), dense.bias, "gelu", [], "none")
    return type(self).forward(self, x)


def prepack_blocker(linears: list[Any]) -> str | None:
    """``None`` when these layers' weights can be kept prepacked for oneDNN, else why not."""
    import torch

    size = sum(m.weight.numel() * m.weight.element_size() for m in linears)
    if size > PREPACK_MAX_BYTES:
        limit = PREPACK_MAX_BYTES / 2**30
        return f"{size / 2**30:.1f} GiB of linear weights; a packed copy is kept only up to {limit:.0f} GiB"
    try:
        gen = torch.Generator().manual_seed(0)
        x, w = torch.randn(4, 48, generator=gen), torch.randn(24, 48, generator=gen)
        packed = torch.ops.mkldnn._reorder_linear_weight(w, PREPACK_ROWS)
        with torch.inference_mode():
            same = torch.equal(_op()(x, packed, None, "none", [], ""), _op()(x, w, None, "none", [], ""))
    except (AttributeError, RuntimeError, TypeError) as exc:
        return f"torch cannot prepack oneDNN weights here ({type(exc).__name__}: {exc})"
    return None if same else "prepacked weights gave other results than plain ones"


def prepack(linears: list[Any]) -> None:
    """Keep a oneDNN-packed copy of each layer's weight, made on first use (see :func:`_weight`)."""
    for module in linears:
        module.__dict__[_PREPACK] = True


def drop_prepacked(model: Any) -> None:
    """Free the packed weight copies (they are made again on next use): offloading must free host memory too."""
    if model is None:
        return
    for module in model.modules():
        module.__dict__.pop(_PACKED, None)


def _exact_gelu(act: Any) -> bool:
    import torch

    if type(act) is torch.nn.GELU:
        return act.approximate == "none"
    # transformers' GELUActivation (BERT's "gelu"): its ``act`` is torch's exact GELU unless it was built in Python
    return type(act).__name__ == "GELUActivation" and getattr(act, "act", None) is torch.nn.functional.gelu


def fuse_gelu(model: Any) -> int:
    """Run each ``act(dense(x))`` block with an exact GELU (BERT-family intermediates) as one fused oneDNN call.

    A block is patched only when its class looks like one (a plain ``nn.Linear`` named ``dense`` and an exact GELU
    named ``intermediate_act_fn``) *and* the patched forward equals the original on a random input, so a subclass
    that adds anything to the block keeps its own code. The GELU's element-wise pass over the 4x-wide activations
    then happens inside the matmul's output loop. Returns how many blocks were fused.
    """
    import torch

    count = 0
    verified: dict[type, bool] = {}
    for module in model.modules():
        dense, act = getattr(module, "dense", None), getattr(module, "intermediate_act_fn", None)
        if type(dense) is not torch.nn.Linear or not _exact_gelu(act) or "forward" in vars(module):
            continue
        cls = type(module)
        if cls not in verified:
            x = torch.randn(3, 5, dense.in_features, generator=torch.Generator().manual_seed(0))
            with torch.inference_mode():
                want = module(x)
                got = _gelu_fused_forward(module, x)
            scale = max(1.0, float(want.abs().max()))
            verified[cls] = got.shape == want.shape and float((got - want).abs().max()) <= 1e-5 * scale
        if verified[cls]:
            module.forward = types.MethodType(_gelu_fused_forward, module)
            count += 1
    return count


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
    fused = fuse_gelu(model)
    parts = [detail]
    if fused:
        parts.append(f"GELU fused into {fused} of them")
    blocker = prepack_blocker(linears)
    if blocker is None:
        prepack(linears)
        parts.append("weights prepacked")
    else:
        parts.append(f"weights not prepacked: {blocker}")
    logger.info("%d linear layers run through oneDNN (%s)", count, "; ".join(parts))
    return f"onednn ({'; '.join(parts)})"


def use_onednn_linears(linears: list[Any]) -> int:
    """Route each ``nn.Linear`` of ``linears`` through oneDNN (an instance-level ``forward``); returns the count.

    The module keeps its ``weight``/``bias`` attributes and reads them on every call, so weights swapped by
    :class:`~rewardflow.models.weights.WeightStore` (onload, offload, release) are used as they are.
    """
    for module in linears:
        module.forward = types.MethodType(_onednn_forward, module)
    return len(linears)
