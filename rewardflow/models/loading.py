"""Loading a checkpoint safely: a local directory from configuration, safetensors weights, no remote code.

The security rules of rewardflow for model weights live here, in one place:

* the checkpoint is a **local directory** named by the spec or the constructor; nothing here takes a path from a
  dataset row, and nothing downloads (fetch a model once with ``hf download``, then point at the folder);
* weights load from **safetensors only** (``model.safetensors`` or a sharded ``model.safetensors.index.json``).
  A folder holding only pickle files (``pytorch_model.bin``, ``*.pt``, ``*.pth``, ``*.ckpt``, ``*.pkl``) is
  refused before transformers sees it, because unpickling runs arbitrary code;
* ``trust_remote_code`` is passed explicitly and is off unless the caller opts in.

Also here: importing the ``[models]`` extra (torch, transformers, safetensors) with a helpful error, and the
default device/dtype policy (bf16 on a GPU, fp32 on the CPU). Foreign loading errors (``OSError``,
``ValueError`` from transformers) become :class:`~rewardflow.errors.ModelError` at this boundary.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from rewardflow.errors import ConfigError, MissingDependencyError, ModelError

__all__ = [
    "Checkpoint",
    "import_torch",
    "import_transformers",
    "load_pretrained",
    "load_tokenizer",
    "rank_cuda_index",
    "resolve_device",
    "resolve_dtype",
    "safetensors_errors",
]

logger = logging.getLogger(__name__)

SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def import_torch() -> ModuleType:
    """``torch``, or :class:`MissingDependencyError` naming the ``models`` extra."""
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError("torch", "models") from exc
    return torch


def import_transformers() -> ModuleType:
    """``transformers`` (and a check that ``safetensors`` is there too), or :class:`MissingDependencyError`."""
    import_torch()
    try:
        import safetensors  # noqa: F401 - the only weight format we load
    except ImportError as exc:
        raise MissingDependencyError("safetensors", "models") from exc
    try:
        import transformers
    except ImportError as exc:
        raise MissingDependencyError("transformers", "models") from exc
    return transformers


@dataclass(frozen=True)
class Checkpoint:
    """A validated local checkpoint directory and its safetensors files (one, or the shards of an index)."""

    directory: Path
    files: tuple[Path, ...]

    @classmethod
    def open(cls, path: str | Path) -> Checkpoint:
        """Validate ``path`` as a local safetensors checkpoint; raise :class:`ModelError` explaining what is wrong."""
        if not isinstance(path, (str, Path)) or not str(path).strip():
            raise ConfigError(f"a model path must be a non-empty string, got {path!r}")
        directory = Path(path).expanduser()
        if not directory.exists():
            raise ModelError(
                f"model directory {str(directory)!r} does not exist; rewardflow loads local checkpoints only "
                "(download one first, e.g. `hf download ORG/NAME --include '*.safetensors' '*.json' '*.txt' "
                "'*.jinja' --local-dir DIR`)"
            )
        if not directory.is_dir():
            raise ModelError(f"model path {str(directory)!r} is a file; give the checkpoint directory")
        single = directory / SAFE_WEIGHTS
        index = directory / SAFE_INDEX
        if single.is_file():
            return cls(directory, (single,))
        if index.is_file():
            return cls(directory, _index_files(directory, index))
        pickles = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise ModelError(
                f"refusing to load {str(directory)!r}: it holds only pickle checkpoints ({', '.join(pickles)}). "
                "Unpickling runs arbitrary code, so rewardflow loads safetensors only; convert the checkpoint "
                "once, in an environment you trust, with `model.save_pretrained(dir, safe_serialization=True)`"
            )
        raise ModelError(f"no {SAFE_WEIGHTS} or {SAFE_INDEX} in {str(directory)!r}")


def _index_files(directory: Path, index: Path) -> tuple[Path, ...]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{index}: not a valid safetensors index ({exc})") from exc
    files: list[Path] = []
    root = directory.resolve()
    for name in sorted(set(weight_map.values())):
        file = (directory / str(name)).resolve()
        if not str(name).endswith(".safetensors") or root not in file.parents:
            raise ModelError(f"{index}: shard {name!r} is not a .safetensors file inside the checkpoint directory")
        if not file.is_file():
            raise ModelError(f"{index}: shard {name!r} is missing")
        files.append(file)
    return tuple(files)


def rank_cuda_index() -> int:
    """This process's GPU: the current CUDA device if the trainer bound one, else ``LOCAL_RANK``, else 0.

    torchrun, DeepSpeed, Ray Train and accelerate set ``LOCAL_RANK`` per process; a trainer that calls
    ``torch.cuda.set_device`` makes its choice the current device. Without either, every rank of a multi-GPU node
    would land on ``cuda:0``. A ``LOCAL_RANK`` beyond the visible devices (one GPU per process through
    ``CUDA_VISIBLE_DEVICES``) means the process sees only its own GPU: the current one.
    """
    torch = import_torch()
    current = int(torch.cuda.current_device())
    if current != 0:
        return current
    local = os.environ.get("LOCAL_RANK", "").strip()
    if local.isdigit() and int(local) < torch.cuda.device_count():
        return int(local)
    return current


def resolve_device(device: Any) -> Any:
    """The compute device: as given, else this rank's CUDA device (:func:`rank_cuda_index`), else the CPU."""
    torch = import_torch()
    if device is None:
        return torch.device("cuda", rank_cuda_index()) if torch.cuda.is_available() else torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"bad device {device!r}: {exc}") from exc
    if resolved.type == "cuda" and resolved.index is None and torch.cuda.is_available():
        resolved = torch.device("cuda", rank_cuda_index())
    return resolved


_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16"}
_DTYPES.update({"float16": "float16", "fp16": "float16", "half": "float16"})


def resolve_dtype(dtype: Any, device: Any) -> Any:
    """The weight dtype: as given, else bf16 on a GPU that supports it (fp16 on older ones), fp32 elsewhere.

    ``"auto"`` keeps the dtype recorded in the checkpoint's config (transformers' own rule).
    """
    torch = import_torch()
    if dtype is None:
        if device is not None and device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if dtype == "auto" or isinstance(dtype, torch.dtype):
        return dtype
    name = _DTYPES.get(str(dtype).lower().removeprefix("torch."))
    if name is None:
        raise ConfigError(f"bad dtype {dtype!r}; use float32, bfloat16, float16 or auto")
    return getattr(torch, name)


def safetensors_errors() -> tuple[type[BaseException], ...]:
    """The error safetensors raises on a damaged file (``SafetensorError``: truncated, bad header); it derives
    from ``Exception`` only, so it must be named to be converted to :class:`ModelError`."""
    try:
        from safetensors import SafetensorError
    except ImportError:
        return ()
    return (SafetensorError,)


def dtype_kwarg(transformers: ModuleType) -> str:
    """transformers renamed ``torch_dtype`` to ``dtype`` in 4.56; pass whichever this version understands."""
    try:
        major, minor = (int(part) for part in transformers.__version__.split(".")[:2])
    except ValueError:
        return "dtype"
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def load_pretrained(
    auto_class: Any, checkpoint: Checkpoint, *, dtype: Any, trust_remote_code: bool, **kwargs: Any
) -> tuple[Any, set[str]]:
    """``auto_class.from_pretrained`` on a validated checkpoint; returns the model (eval mode) and its missing keys.

    Missing keys are weights the checkpoint lacks, which transformers initializes at random (a classification
    head on a base model, typically); the caller decides whether that is acceptable.
    """
    transformers = import_transformers()
    try:
        model, info = auto_class.from_pretrained(
            str(checkpoint.directory),
            use_safetensors=True,
            local_files_only=True,
            trust_remote_code=trust_remote_code,
            output_loading_info=True,
            **{dtype_kwarg(transformers): dtype},
            **kwargs,
        )
    except (OSError, ValueError, KeyError, RuntimeError, *safetensors_errors()) as exc:
        raise ModelError(f"cannot load the model in {str(checkpoint.directory)!r}: {exc}") from exc
    model.eval()
    model.requires_grad_(False)
    return model, set(info.get("missing_keys") or ())


def load_tokenizer(checkpoint: Checkpoint | str | Path, *, trust_remote_code: bool) -> Any:
    """The tokenizer stored in a local directory (the checkpoint's, or a policy tokenizer's)."""
    transformers = import_transformers()
    directory = checkpoint.directory if isinstance(checkpoint, Checkpoint) else Path(checkpoint).expanduser()
    if not directory.is_dir():
        raise ModelError(f"tokenizer directory {str(directory)!r} does not exist (local directories only)")
    try:
        return transformers.AutoTokenizer.from_pretrained(
            str(directory), local_files_only=True, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot load the tokenizer in {str(directory)!r}: {exc}") from exc
