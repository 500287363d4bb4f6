"""Where a frozen model's tensors live between training steps: the three offload modes.

A reward model is used for a moment once per training step; the rest of the time its weights should not hold
accelerator memory that the policy's training needs. :class:`WeightStore` moves every parameter and buffer of a
loaded model between a *host* state and the compute device:

* ``cpu``: the weights stay in host memory (page-locked/pinned when the compute device is CUDA, so the copy to
  the GPU is a fast DMA); :meth:`WeightStore.onload` copies them to the device, :meth:`WeightStore.offload`
  drops the device copies and returns the cached blocks to the driver. Costs host RAM, saves reload time.
* ``release``: the weights are dropped altogether (replaced by ``meta`` tensors that hold no memory) and read
  again from the safetensors file(s), which are memory-mapped, on the next onload. Only tensors proven to be
  bit-identical to a tensor of the file are released; the others (a freshly initialized head, non-persistent
  buffers such as rotary frequencies) are small and are kept in host memory like in ``cpu`` mode. On a CPU
  compute device the reloaded tensors are views of the memory-mapped file when the dtype matches (pages are read
  on first touch, and dropping them unmaps them); otherwise they are copies, and after a release glibc's
  ``malloc_trim`` hands the freed heap back to the operating system.
* ``none``: the weights live on the device for the model's lifetime.

Tensors are swapped by replacing the ``Parameter``/buffer objects in every module that holds them (tied weights
stay tied), not with ``Module.to``, so the host copies are created once and never copied back.

Limits: when the compute device *is* the CPU there is nothing to move in ``cpu`` mode (onload/offload are
no-ops; the weights are already where they compute); ``release`` still frees them. Tests on a CPU-only machine
show movement with PyTorch's ``meta`` device standing in for an accelerator; they cannot show CUDA memory
accounting or transfer speed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from rewardflow.errors import ConfigError, ModelError

__all__ = ["OffloadMode", "WeightStore", "device_memory", "should_pin", "trim_host_memory"]

logger = logging.getLogger(__name__)


class OffloadMode(str, Enum):
    """What :meth:`WeightStore.offload` does with the weights; see the module docstring."""

    CPU = "cpu"
    RELEASE = "release"
    NONE = "none"

    @classmethod
    def parse(cls, value: str | OffloadMode) -> OffloadMode:
        try:
            return cls(value)
        except ValueError as exc:
            raise ConfigError(f"bad offload mode {value!r}; use 'cpu', 'release' or 'none'") from exc


@dataclass
class _Slot:
    """One tensor of the model, the places that hold it, and where it lives while offloaded."""

    locations: list[tuple[Any, str]]  # (module, attribute name); several for tied weights
    is_param: bool
    shape: tuple[int, ...]
    dtype: Any
    host: Any = None  # host copy (cpu mode, or a tensor the file cannot restore)
    file: Path | None = None  # release mode: the safetensors file and key that restore it bit-exactly
    key: str | None = None
    names: list[str] = field(default_factory=list)


def _slots(model: Any) -> list[_Slot]:
    by_id: dict[int, _Slot] = {}
    for is_param, named in ((True, model.named_parameters), (False, model.named_buffers)):
        for name, tensor in named(remove_duplicate=False):
            module_name, _, attr = name.rpartition(".")
            module = model.get_submodule(module_name) if module_name else model
            slot = by_id.get(id(tensor))
            if slot is None:
                slot = by_id[id(tensor)] = _Slot([], is_param, tuple(tensor.shape), tensor.dtype)
            slot.locations.append((module, attr))
            slot.names.append(name)
    return list(by_id.values())


class WeightStore:
    """Moves one model's weights between host and compute device; see the module docstring.

    Not thread-safe on its own: the owning model serializes calls under its lock.
    """

    def __init__(self, model: Any, mode: OffloadMode, device: Any, files: Iterable[Path] = ()) -> None:
        import torch

        self._torch = torch
        self.model = model
        self.mode = mode
        self.device = device
        self._slots = _slots(model)
        self.on_device = False
        pin = should_pin(device)
        if mode is OffloadMode.RELEASE:
            self._map_to_files(model, list(files))
        for slot in self._slots:
            if slot.file is None:
                tensor = getattr(*slot.locations[0]).detach()
                slot.host = tensor.pin_memory() if pin and tensor.device.type == "cpu" else tensor
        if mode is OffloadMode.NONE:
            self.onload()
            if device.type != "cpu":
                for slot in self._slots:
                    slot.host = None  # the device copy is the only one from now on
        else:
            self._assign_host()

    # ------------------------------------------------------------------ accounting

    @property
    def released_bytes(self) -> int:
        """Bytes of weights that ``release`` mode drops (0 in the other modes)."""
        return sum(_nbytes(s) for s in self._slots if s.file is not None)

    @property
    def host_bytes(self) -> int:
        """Bytes of weights kept in host memory while offloaded."""
        return sum(_nbytes(s) for s in self._slots if s.file is None)

    def tensors(self) -> list[Any]:
        """The model's current tensors (one per slot), for inspection."""
        return [getattr(*s.locations[0]) for s in self._slots]

    # ------------------------------------------------------------------ transitions

    def onload(self) -> None:
        """Put every tensor on the compute device (no-op when already there)."""
        if self.on_device:
            return
        try:
            self._onload()
        except BaseException:
            self._assign_host()  # never leave a half-moved model behind (e.g. after a CUDA out-of-memory)
            raise
        self.on_device = True

    def _onload(self) -> None:
        torch = self._torch
        by_file: dict[Path, list[_Slot]] = {}
        for slot in self._slots:
            if slot.file is not None:
                by_file.setdefault(slot.file, []).append(slot)
            elif slot.host.device != self.device:
                self._assign(slot, slot.host.to(self.device, non_blocking=True))
            else:
                self._assign(slot, slot.host)
        if by_file:
            from safetensors import safe_open

            target = "cpu" if self.device.type in ("cpu", "meta") else str(self.device)
            for file, slots in by_file.items():
                with safe_open(str(file), framework="pt", device=target) as handle:  # memory-mapped read
                    for slot in slots:
                        tensor = handle.get_tensor(slot.key).to(dtype=slot.dtype)
                        self._assign(slot, tensor.to(self.device) if self.device.type == "meta" else tensor)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def offload(self) -> None:
        """Release the device copies (``cpu``) or the weights themselves (``release``); no-op in ``none`` mode."""
        if self.mode is OffloadMode.NONE or not self.on_device:
            return
        self._assign_host()  # the device copies lose their last reference here and are freed
        self.on_device = False
        if self.device.type == "cuda":
            self._torch.cuda.empty_cache()
        if self.mode is OffloadMode.RELEASE:
            trim_host_memory()

    def close(self) -> None:
        """Drop every reference this store holds (the model object is left to the caller)."""
        for slot in self._slots:
            slot.host = None
            slot.locations.clear()
        self._slots = []
        self.model = None

    # ------------------------------------------------------------------ internals

    def _assign_host(self) -> None:
        for slot in self._slots:
            if slot.file is not None:
                self._assign(slot, self._torch.empty(slot.shape, dtype=slot.dtype, device="meta"))
            else:
                self._assign(slot, slot.host)

    def _assign(self, slot: _Slot, tensor: Any) -> None:
        value = self._torch.nn.Parameter(tensor, requires_grad=False) if slot.is_param else tensor
        for module, attr in slot.locations:
            if slot.is_param:
                module._parameters[attr] = value
            else:
                module._buffers[attr] = value

    def _map_to_files(self, model: Any, files: list[Path]) -> None:
        """Find, for each tensor, a tensor of the checkpoint that restores it bit-exactly."""
        from safetensors import safe_open

        if not files:
            raise ModelError("offload mode 'release' needs the safetensors files the model was loaded from")
        prefix = getattr(model, "base_model_prefix", "") or ""
        with ExitStack() as stack:
            handles = {file: stack.enter_context(safe_open(str(file), framework="pt")) for file in files}
            located = {key: file for file, handle in handles.items() for key in handle.keys()}
            for slot in self._slots:
                current = getattr(*slot.locations[0]).to("cpu")
                for key in _candidate_keys(slot.names, prefix):
                    file = located.get(key)
                    if file is None or tuple(handles[file].get_slice(key).get_shape()) != slot.shape:
                        continue
                    if self._torch.equal(handles[file].get_tensor(key).to(dtype=slot.dtype), current):
                        slot.file, slot.key = file, key
                        break
        kept = [s.names[0] for s in self._slots if s.file is None]
        if kept:
            logger.info("release mode keeps %d tensor(s) in host memory (not in the file): %s", len(kept), kept)


def should_pin(device: Any) -> bool:
    """Host copies are page-locked when the compute device is a CUDA GPU: the copy to it is then a DMA."""
    import torch

    return device.type == "cuda" and torch.cuda.is_available()


def _candidate_keys(names: list[str], prefix: str) -> list[str]:
    """Checkpoint keys that may hold a tensor known to the model under ``names``.

    Checkpoints of a base model lack the task model's prefix (``bert.`` in ``BertForSequenceClassification``),
    and task checkpoints loaded into a base model carry one; the content check decides.
    """
    out: list[str] = []
    for name in names:
        out.append(name)
        if prefix and name.startswith(prefix + "."):
            out.append(name[len(prefix) + 1 :])
        elif prefix:
            out.append(f"{prefix}.{name}")
    return out


def _nbytes(slot: _Slot) -> int:
    count = 1
    for dim in slot.shape:
        count *= dim
    return count * slot.dtype.itemsize


def device_memory(device: Any) -> int | None:
    """Bytes allocated by tensors on a CUDA device (``torch.cuda.memory_allocated``); ``None`` elsewhere."""
    import torch

    if device.type == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.memory_allocated(device))
    return None


def trim_host_memory() -> bool:
    """Ask glibc to return freed heap pages to the OS (``malloc_trim(0)``); ``False`` where that is unavailable.

    Large freed tensors sit in glibc's heap once its mmap threshold has grown; without a trim the process keeps
    them resident, and ``release`` mode would not lower the process's memory at all.
    """
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return bool(trim(0))
