"""The lifecycle every model-based reward shares: lazy thread-safe load, onload -> score -> offload, reports.

:class:`ManagedModel` owns one frozen transformers model and its tokenizer. Its state is explicit
(:class:`ModelState`: ``unloaded`` -> ``offloaded`` <-> ``onloaded`` -> ``closed``) and every transition runs
under the object's lock, so two threads asking for the first score load the model once. A scoring call holds
the model on the device only for its own duration: it loads if needed, onloads, runs token-budget micro-batches,
offloads (unless the caller holds :meth:`ManagedModel.onloaded` open) and records a :class:`ScoreReport`.

Scoring calls are also serialized per compute device, across models: a GPU is a process-wide resource, and two
reward models of one spec (which the engine runs concurrently) must not sit in device memory at the same time.
The device lock is always taken before a model's own lock, so the order cannot deadlock.

The model lives in the process that created it: instances refuse to be pickled, so no reward worker process can
receive a copy (the engine runs ``batch`` rewards in a thread of the main process).

A 16-bit dtype asked for on the CPU is checked, not trusted (:meth:`ManagedModel._precision_checked`): the
first call is scored in it and by a float32 copy of the model, and the model keeps the 16-bit dtype only if
the two rank the samples alike (Spearman >= ``precision_guard``, within each group of samples sharing a prompt
where there are groups). bf16 on the CPU ranked MiniLM's scores at 0.9995 on an AMD EPYC and at -0.0001 on an
Intel Xeon with AMX (torch 2.11; bench P4 levers), so no machine's figure can stand for another's.

Not covered here: what a model computes (:mod:`rewardflow.models.reward_model`,
:mod:`rewardflow.models.similarity`) and how weights move (:mod:`rewardflow.models.weights`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from enum import Enum
from typing import Any, ClassVar

from rewardflow.errors import ConfigError, ModelError
from rewardflow.models.attention import CPU_ATTENTION, choose_cpu_attention
from rewardflow.models.batching import MicroBatchPlan, pack_micro_batches, plan_micro_batches
from rewardflow.models.kernels import CPU_LINEAR, choose_cpu_linear, drop_prepacked
from rewardflow.models.loading import Checkpoint, import_torch, resolve_device, resolve_dtype, safetensors_errors
from rewardflow.models.packing import NAME as PACKED
from rewardflow.models.packing import PackingRefused, pack_rows, packed_pass, register
from rewardflow.models.weights import OffloadMode, WeightStore, device_memory, trim_host_memory

__all__ = ["Encoded", "ManagedModel", "ModelState", "ScoreReport"]

logger = logging.getLogger(__name__)

DEVICE_TOKEN_BUDGET = 8192
CPU_TOKEN_BUDGET = 1024
#: The least rank agreement with float32 a 16-bit dtype must show on the CPU: a GRPO advantage is computed from
#: the ranks within a group, and one swapped pair in a group of 8 already gives 0.988.
PRECISION_GUARD = 0.999

_device_locks: dict[str, threading.Lock] = {}
_device_locks_guard = threading.Lock()


def _device_lock(device: Any) -> threading.Lock:
    key = str(device)
    with _device_locks_guard:
        lock = _device_locks.get(key)
        if lock is None:
            lock = _device_locks[key] = threading.Lock()
        return lock


class ModelState(str, Enum):
    """Where a managed model is in its life; see the module docstring."""

    UNLOADED = "unloaded"
    OFFLOADED = "offloaded"
    ONLOADED = "onloaded"
    CLOSED = "closed"


@dataclass(frozen=True)
class ScoreReport:
    """What one scoring call did and cost. Device memory figures are bytes on a CUDA device, else ``None``."""

    samples: int
    micro_batches: int
    real_tokens: int
    padded_tokens: int
    truncated: int  # samples cut to max_length
    duplicates: int  # samples whose token sequence was already in the call: scored once, copied
    load_s: float  # first-time load done by this call (0.0 when already loaded)
    onload_s: float
    score_s: float
    offload_s: float
    device_memory_before: int | None  # before onload
    device_memory_onloaded: int | None  # weights resident, before the forward passes
    device_memory_after: int | None  # after offload
    prefix_sharing: str = "off"  # "on", or "off: <why>" (see rewardflow.models.prefix)
    shared_groups: int = 0  # groups of samples whose common prompt prefix ran once
    shared_tokens: int = 0  # prefix tokens not recomputed thanks to that
    cpu_linear: str = ""  # what runs the linear layers: "onednn (...)" or "torch (...)" (rewardflow.models.kernels)
    cpu_attention: str = ""  # what runs packed attention: "onednn (...)" or "torch (...)" (rewardflow.models.attention)
    packing: str = "off"  # "on", or "off: <why>": sequences end to end without padding (rewardflow.models.packing)
    precision: str = ""  # the weight dtype, and the 16-bit guard's verdict where it ran (ManagedModel.precision)

    @property
    def padding_waste(self) -> float:
        """Fraction of the computed tokens that were padding."""
        return 0.0 if self.padded_tokens == 0 else 1.0 - self.real_tokens / self.padded_tokens

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["padding_waste"] = round(self.padding_waste, 6)
        return out


@dataclass(frozen=True)
class Encoded:
    """Token ids of a list of texts (unpadded), optional token type ids, and how many were truncated.

    ``read_at`` is, per sequence, the index of the token whose output is the score (default: the last one);
    ``prompt_lengths`` is, per sequence, how many of its first tokens come from the prompt (used to find groups
    that share a prefix; ``None`` when unknown).
    """

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None = None
    truncated: int = 0
    read_at: list[int] | None = None
    prompt_lengths: list[int] | None = None


class ManagedModel:
    """A frozen model with a managed device lifecycle; the base of the model-based rewards.

    Subclasses implement :meth:`_load` (build the model and tokenizer from the checkpoint, on the CPU) and use
    :meth:`_scoring` + :meth:`_forward_batches` to score.

    Args:
        path: local checkpoint directory (safetensors only). Configuration, never data.
        device: compute device; default, resolved on first use: this rank's GPU (the current CUDA device if the
            trainer bound one, else ``LOCAL_RANK``), else the CPU.
        dtype: weight dtype; default bf16 on a GPU, fp32 on the CPU; ``"auto"`` keeps the checkpoint's.
        offload: ``"cpu"`` (pinned host copy), ``"release"`` (drop, reload from the file) or ``"none"``.
        max_length: longest sequence fed to the model, in tokens; longer ones are truncated.
        truncation_side: ``"left"`` keeps the end of the text, ``"right"`` its start; :class:`RewardModel` adds
            ``"ends"`` (its default: keep both ends, see :mod:`rewardflow.models.truncation`).
        padding_side: ``"left"``/``"right"``; default the tokenizer's own (a classifier run whole, BERT-style,
            always pads right: it reads the first position).
        token_budget: most padded tokens per micro-batch (bounds activation memory); default 8192 on an
            accelerator, 1024 on the CPU, where small cache-resident batches measured faster (bench P4).
        max_batch_size: most samples per micro-batch (``None``: the budget alone decides).
        trust_remote_code: allow Python code shipped with the checkpoint. Off unless you opt in.
        allow_missing_weights: accept a checkpoint lacking some weights (transformers initializes them at random,
            e.g. a classification head on a base encoder); off, because random weights give random rewards.
        cpu_linear: ``"auto"`` (default), ``"onednn"`` or ``"torch"``: which kernel runs fp32 linear layers on a
            CPU compute device (:mod:`rewardflow.models.kernels`; ``auto`` measures once per process).
        cpu_attention: ``"torch"`` (default: SDPA) or ``"onednn"``: whether a packed pass's bidirectional attention
            runs as oneDNN's fused graph (:mod:`rewardflow.models.attention`; fp32 on the CPU only; an opt-in lever:
            MiniLM's attention 1.2x, its whole call 1.03-1.04x, for up to 264 MB of compiled graphs).
        packing: on the CPU, lay each micro-batch's sequences end to end with no padding and attend within each
            (:mod:`rewardflow.models.packing`); used only after a probe finds the outputs unchanged, and only by
            subclasses that read packed rows (``RewardModel``, ``SimilarityReward``).
        precision_guard: with a 16-bit ``dtype`` on the CPU, the least Spearman rank agreement with float32 the
            first scored call must show, or the model falls back to float32 (module docstring; ``None``: off).
            Not applied on a GPU, where bf16 is the default and the trainers' own precision for reward models.
    """

    #: Scores whole training batches only. Adapters whose framework calls the reward once per rollout (AReaL's
    #: ``AsyncRewardWrapper``, verl's per-sample ``compute_score``) refuse such a reward instead of running one
    #: forward pass and one onload/offload cycle per completion. Read by duck typing, so they need no torch.
    per_batch_only: ClassVar[bool] = True

    def __init__(
        self,
        path: str,
        *,
        device: Any = None,
        dtype: Any = None,
        offload: str | OffloadMode = OffloadMode.CPU,
        max_length: int = 2048,
        truncation_side: str = "left",
        padding_side: str | None = None,
        token_budget: int | None = None,
        max_batch_size: int | None = None,
        trust_remote_code: bool = False,
        allow_missing_weights: bool = False,
        cpu_linear: str = "auto",
        packing: bool = True,
        precision_guard: float | None = PRECISION_GUARD,
        cpu_attention: str = "torch",
    ) -> None:
        if max_length < 1:
            raise ConfigError(f"max_length must be >= 1, got {max_length}")
        if truncation_side not in ("left", "right", "ends"):
            raise ConfigError(f"truncation_side must be 'ends', 'left' or 'right', got {truncation_side!r}")
        if padding_side not in (None, "left", "right"):
            raise ConfigError(f"padding_side must be 'left', 'right' or None, got {padding_side!r}")
        if cpu_linear not in CPU_LINEAR:
            raise ConfigError(f"cpu_linear must be 'auto', 'onednn' or 'torch', got {cpu_linear!r}")
        if cpu_attention not in CPU_ATTENTION:
            raise ConfigError(f"cpu_attention must be 'torch' or 'onednn', got {cpu_attention!r}")
        plan_micro_batches([], 1 if token_budget is None else token_budget, max_batch_size)  # validates both
        if precision_guard is not None and not -1.0 <= precision_guard <= 1.0:
            raise ConfigError(f"precision_guard must be a rank correlation in [-1, 1] or None, got {precision_guard}")
        self.checkpoint = Checkpoint.open(path)  # fails early on a missing or pickle-only checkpoint
        # An explicit device is validated now; the default one is resolved on first use, because a trainer
        # usually builds its rewards before it binds each rank to its GPU (torch.cuda.set_device(local_rank)).
        self._device = None if device is None else resolve_device(device)
        self._dtype = None if dtype is None else resolve_dtype(dtype, None)
        self._token_budget = None if token_budget is None else int(token_budget)
        self.offload_mode = OffloadMode.parse(offload)
        self.max_length = int(max_length)
        self.truncation_side = truncation_side
        self.padding_side = padding_side
        self.max_batch_size = max_batch_size
        self.trust_remote_code = bool(trust_remote_code)
        self.allow_missing_weights = bool(allow_missing_weights)
        self.cpu_linear = cpu_linear
        self.cpu_linear_used = ""  # set at load: "onednn (why)" or "torch (why)"
        self.cpu_attention = cpu_attention
        self.cpu_attention_used = ""  # set at load, as cpu_linear_used
        self._fused_attention: Any = None  # the kernel packed passes hand bidirectional spans to, or None
        self.packing = bool(packing)
        self._packing_blocker: str | None = None  # why packed rows cannot run ("" = they can), probed once per load
        self.precision_guard = precision_guard
        self._verdict: str | None = None  # the 16-bit guard's finding, once it has run
        self._guard_lock = threading.Lock()
        self.last_report: ScoreReport | None = None
        self.load_count = 0  # how many times weights were built from the checkpoint (1 in a healthy life)
        self._lock = threading.RLock()
        self._state = ModelState.UNLOADED
        self._holds = 0
        self._model: Any = None
        self._tokenizer: Any = None
        self._store: WeightStore | None = None
        self._accepts_position_ids = False
        self._position_offset = 0  # the position id of a sequence's first token (RoBERTa-style models: pad id + 1)
        self._accepts_token_types = False
        self._pad_filler = 0

    # ------------------------------------------------------------------ lifecycle

    @property
    def device(self) -> Any:
        """The compute device: as given, else resolved on first use (this rank's GPU, else the CPU)."""
        if self._device is None:
            self._device = resolve_device(None)
        return self._device

    @property
    def dtype(self) -> Any:
        """The weight dtype: as given, else bf16 on a GPU and fp32 on the CPU (see ``resolve_dtype``)."""
        if self._dtype is None:
            self._dtype = resolve_dtype(None, self.device)
        return self._dtype

    @property
    def token_budget(self) -> int:
        """Most padded tokens per micro-batch: as given, else 8192 on an accelerator and 1024 on the CPU."""
        if self._token_budget is not None:
            return self._token_budget
        return CPU_TOKEN_BUDGET if self.device.type == "cpu" else DEVICE_TOKEN_BUDGET

    @property
    def precision(self) -> str:
        """The weight dtype in use, with the 16-bit guard's verdict once it has run (also in ``ScoreReport``)."""
        name = str(self._weight_dtype()).removeprefix("torch.")
        return name if self._verdict is None else f"{name} ({self._verdict})"

    def _weight_dtype(self) -> Any:
        """``dtype``, or for ``"auto"`` the checkpoint's own, once the model is built (until then ``"auto"``)."""
        dtype = self.dtype
        if dtype == "auto" and self._model is not None:
            return getattr(self._model, "dtype", dtype)
        return dtype

    @property
    def held(self) -> bool:
        """True while a caller keeps the model on the device with :meth:`onloaded`."""
        return self._holds > 0

    @property
    def state(self) -> ModelState:
        return self._state

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer (loads the model on first access)."""
        self.load()
        return self._tokenizer

    @property
    def weights(self) -> WeightStore:
        """The weight store (loads the model on first access); for inspection and tests."""
        self.load()
        assert self._store is not None
        return self._store

    def load(self) -> None:
        """Load the checkpoint once (thread-safe); leaves the model offloaded (on the device in ``none`` mode)."""
        with self._lock:
            self._check_open()
            if self._state is ModelState.UNLOADED:
                self._load_locked()

    def onload(self) -> None:
        """Put the weights on the compute device (loading first if needed)."""
        with self._lock:
            self.load()
            assert self._store is not None
            self._store.onload()
            self._state = ModelState.ONLOADED

    def offload(self) -> None:
        """Free the device: move the weights to host memory or drop them, per the offload mode.

        Waits for a scoring call in progress on another thread to finish. A no-op in ``none`` mode, before the
        first load and after :meth:`close`.
        """
        with self._lock:
            if self._state is not ModelState.ONLOADED or self._store is None:
                return
            self._store.offload()
            if self.offload_mode is OffloadMode.RELEASE:
                drop_prepacked(self._model)  # the weights are gone; so must their packed copies be
            if self.offload_mode is not OffloadMode.NONE:
                self._state = ModelState.OFFLOADED

    @contextmanager
    def onloaded(self) -> Iterator[ManagedModel]:
        """Keep the model on the device for the ``with`` body (scoring calls inside do not offload); nestable."""
        with self._lock:
            self.onload()
            self._holds += 1
        try:
            yield self
        finally:
            with self._lock:
                self._holds -= 1
                if self._holds == 0:
                    self.offload()

    def close(self) -> None:
        """Drop the model, tokenizer and every weight copy. Idempotent; later calls raise :class:`ModelError`."""
        with self._lock:
            if self._state is ModelState.CLOSED:
                return
            if self._store is not None:
                self._store.close()
            self._store = self._model = self._tokenizer = None
            self._state = ModelState.CLOSED
        import gc

        gc.collect()
        if self.device.type == "cuda":
            import_torch().cuda.empty_cache()
        trim_host_memory()

    def __enter__(self) -> ManagedModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> Any:
        raise ModelError(
            f"{type(self).__name__} stays in the process that created it (run it as kind 'batch', not in a worker)"
        )

    def __repr__(self) -> str:
        where = str(self.checkpoint.directory)
        return f"{type(self).__name__}({where!r}, device={self.device}, state={self._state.value})"

    # ------------------------------------------------------------------ the 16-bit guard

    def _guard_due(self) -> bool:
        torch = import_torch()
        if self.precision_guard is None or self._verdict is not None or self.device.type != "cpu":
            return False
        if self.dtype == "auto":  # the checkpoint's dtype decides: build the model to read it
            self.load()
        return self._weight_dtype() in (torch.bfloat16, torch.float16)

    def _precision_checked(
        self, run: Callable[[ManagedModel], list[float]], groups: Sequence[Any] | None = None
    ) -> list[float]:
        """``run(self)``, checked against ``run(float32 copy)`` on the first call that can rank (module docstring).

        The checked call returns the float32 scores. Where the ranks disagree, the model is reloaded in float32
        for every later call, and a warning and ``ScoreReport.precision`` say why. A call with nothing to rank
        (one sample, or all float32 scores equal) returns the float32 scores and leaves the question open.
        """
        if not self._guard_due():
            return run(self)
        with self._guard_lock:  # concurrent first calls wait here, then find the verdict
            if not self._guard_due():
                return run(self)
            low = run(self)
            twin = self._float32_twin()
            try:
                reference = run(twin)
            finally:
                twin.close()
            agreement = rank_agreement(low, reference, groups)
            if agreement is None:
                return reference
            name = str(self._weight_dtype()).removeprefix("torch.")
            where = f"rank agreement {agreement:.4f} with float32 on the first {len(low)} samples"
            if agreement >= self.precision_guard:  # type: ignore[operator]
                self._verdict = f"checked: {where}"
            else:
                logger.warning(
                    "%s: %s ranks samples unlike float32 on this CPU (%s < %s); scoring in float32",
                    self.checkpoint.directory,
                    name,
                    where,
                    self.precision_guard,
                )
                self._reload_as(import_torch().float32)
                self._verdict = f"{name} fell back: {where} < {self.precision_guard}"
            if self.last_report is not None:
                self.last_report = replace(self.last_report, precision=self.precision)
            return reference

    def _float32_twin(self) -> ManagedModel:
        """A float32 copy built from this model's own constructor arguments (recorded by the subclass)."""
        arguments = dict(getattr(self, "_arguments", {}))
        if not arguments:
            raise ModelError(f"{type(self).__name__} cannot check its precision: its constructor arguments are unknown")
        arguments.update(dtype="float32", device=self.device, precision_guard=None)
        return type(self)(**arguments)

    def _reload_as(self, dtype: Any) -> None:
        """Drop the weights; the next call loads the checkpoint again in ``dtype``."""
        with self._lock:
            if self._store is not None:
                self._store.close()
            self._store = self._model = self._tokenizer = None
            self._state = ModelState.UNLOADED
            self._dtype = dtype

    # ------------------------------------------------------------------ for subclasses

    def _load(self) -> tuple[Any, Any, set[str]]:
        """Build ``(model, tokenizer, missing_keys)`` from ``self.checkpoint`` on the CPU, in ``self.dtype``."""
        raise NotImplementedError

    def _after_load(self) -> None:
        """Hook run under the lock once the model and tokenizer exist (resolve labels, templates...)."""

    def _check_open(self) -> None:
        if self._state is ModelState.CLOSED:
            raise ModelError(f"{type(self).__name__} is closed")

    def _load_locked(self) -> None:
        import inspect

        try:
            model, tokenizer, missing = self._load()
        except (OSError, *safetensors_errors()) as exc:
            raise ModelError(f"cannot read the checkpoint in {str(self.checkpoint.directory)!r}: {exc}") from exc
        if missing and not self.allow_missing_weights:
            raise ModelError(
                f"{str(self.checkpoint.directory)!r} lacks weights the model needs ({', '.join(sorted(missing))}); "
                "they would be random and so would the rewards. Use a checkpoint trained for this head, or pass "
                "allow_missing_weights=True if random weights are really what you want (benchmarks, tests)"
            )
        if missing:
            logger.warning("%s: randomly initialized weights: %s", self.checkpoint.directory, sorted(missing))
        if tokenizer.pad_token_id is None:
            fallback = tokenizer.eos_token or tokenizer.unk_token
            if fallback is None:
                raise ModelError(f"the tokenizer in {str(self.checkpoint.directory)!r} has no pad, eos or unk token")
            tokenizer.pad_token = fallback
        config = model.config
        positions = getattr(config, "max_position_embeddings", None)
        if isinstance(positions, int) and 0 < positions < self.max_length:
            logger.info("max_length %d capped to the model's %d positions", self.max_length, positions)
            self.max_length = positions
        if getattr(config, "pad_token_id", None) is None:
            config.pad_token_id = tokenizer.pad_token_id  # sequence classifiers find the last token with it
        if self.truncation_side in ("left", "right"):
            tokenizer.truncation_side = self.truncation_side
        if self.padding_side is not None:
            tokenizer.padding_side = self.padding_side
        # What fills padded positions: masked out, so any id the embedding holds will do; the tokenizer's pad id
        # unless the tokenizer added it past the model's vocabulary (then the embedding lookup would fail).
        vocab = model.get_input_embeddings().num_embeddings if model.get_input_embeddings() is not None else None
        self._pad_filler = int(tokenizer.pad_token_id)
        if vocab is not None and not 0 <= self._pad_filler < vocab:
            self._pad_filler = 0
        accepted = inspect.signature(model.forward).parameters
        self._accepts_position_ids = "position_ids" in accepted
        self._accepts_token_types = "token_type_ids" in accepted
        self._position_offset = position_offset(model)
        self._packing_blocker = None
        self._model, self._tokenizer = model, tokenizer
        self._after_load()
        self.cpu_linear_used = choose_cpu_linear(model, self.device, self.cpu_linear)
        self.cpu_attention_used, self._fused_attention = choose_cpu_attention(
            self.device, next(model.parameters()).dtype, self.cpu_attention
        )
        try:
            self._store = WeightStore(model, self.offload_mode, self.device, self.checkpoint.files)
        except (OSError, *safetensors_errors()) as exc:
            raise ModelError(f"cannot read the checkpoint in {str(self.checkpoint.directory)!r}: {exc}") from exc
        self._state = ModelState.ONLOADED if self.offload_mode is OffloadMode.NONE else ModelState.OFFLOADED
        self.load_count += 1

    @contextmanager
    def _scoring(self, samples: int) -> Iterator[dict[str, Any]]:
        """Hold the device and the model for one scoring call; yields a dict the body fills with batch stats."""
        with _device_lock(self.device), self._lock:
            self._check_open()
            stats: dict[str, Any] = {"plan": MicroBatchPlan((), 0, 0), "truncated": 0, "duplicates": 0}
            start = time.perf_counter()
            if self._state is ModelState.UNLOADED:
                self._load_locked()
            loaded = time.perf_counter()
            before = device_memory(self.device)
            try:
                self.onload()
            except (OSError, *safetensors_errors()) as exc:  # release mode re-reads the file
                raise ModelError(f"cannot read the checkpoint in {str(self.checkpoint.directory)!r}: {exc}") from exc
            onloaded = time.perf_counter()
            resident = device_memory(self.device)
            try:
                yield stats
            finally:
                scored = time.perf_counter()
                if self._holds == 0:
                    self.offload()
                done = time.perf_counter()
                plan: MicroBatchPlan = stats["plan"]
                self.last_report = ScoreReport(
                    samples=samples,
                    micro_batches=len(plan.batches),
                    real_tokens=plan.real_tokens,
                    padded_tokens=plan.padded_tokens,
                    truncated=stats["truncated"],
                    duplicates=stats["duplicates"],
                    load_s=loaded - start,
                    onload_s=onloaded - loaded,
                    score_s=scored - onloaded,
                    offload_s=done - scored,
                    device_memory_before=before,
                    device_memory_onloaded=resident,
                    device_memory_after=device_memory(self.device),
                    prefix_sharing=stats.get("prefix_sharing", "off"),
                    shared_groups=stats.get("shared_groups", 0),
                    shared_tokens=stats.get("shared_tokens", 0),
                    cpu_linear=self.cpu_linear_used,
                    cpu_attention=self.cpu_attention_used,
                    packing=stats.get("packing", "off"),
                    precision=self.precision,
                )

    def _encode(self, texts: Sequence[str], pairs: Sequence[str] | None = None, **kwargs: Any) -> Encoded:
        """Tokenize without padding; only the texts longer than ``max_length`` are re-tokenized with truncation.

        Truncation is left to the tokenizer so special tokens survive it (slicing ids would cut ``[CLS]``).
        """
        tok = self._tokenizer
        args: tuple[Any, ...] = (list(texts),) if pairs is None else (list(texts), list(pairs))
        enc = tok(*args, truncation=False, verbose=False, **kwargs)
        ids: list[list[int]] = enc["input_ids"]
        types: list[list[int]] | None = enc.get("token_type_ids")
        long = [i for i, seq in enumerate(ids) if len(seq) > self.max_length]
        if long:
            sub = tuple([a[i] for i in long] for a in args)
            cut = tok(*sub, truncation=True, max_length=self.max_length, verbose=False, **kwargs)
            for j, i in enumerate(long):
                ids[i] = cut["input_ids"][j]
                if types is not None:
                    types[i] = cut["token_type_ids"][j]
        return Encoded(ids, types, len(long))

    def _forward_batches(
        self, encoded: Encoded, forward: Callable[[dict[str, Any], Any], Any], stats: dict[str, Any]
    ) -> list[Any]:
        """Run ``forward(inputs, read) -> tensor[batch, ...]`` over token-budget micro-batches; rows in input order.

        ``read`` holds, per row, the column of the padded batch where that sequence's score is read: its
        ``read_at`` token (default the last real one), found from the lengths and the padding side, never by
        searching for a pad id (which is also a real token when a tokenizer pads with EOS).

        Identical token sequences are computed once: a GRPO group often holds several identical completions
        (short final answers especially), and a frozen model gives them the same score anyway.
        """
        unique, source, encoded = _dedupe(encoded)
        stats["truncated"] = encoded.truncated
        stats["duplicates"] = len(source) - len(unique)
        out = self._forward_unique(encoded, forward, stats)
        position = {original: k for k, original in enumerate(unique)}
        return [out[position[src]] for src in source]

    def _forward_unique(
        self, encoded: Encoded, forward: Callable[[dict[str, Any], Any], Any], stats: dict[str, Any]
    ) -> list[Any]:
        """The padded micro-batch path over distinct sequences (a subclass may route some of them elsewhere)."""
        return self._padded_batches(encoded, list(range(len(encoded.input_ids))), forward, stats)

    def _pads_left(self) -> bool:
        """Whether padded micro-batches put the padding first (the tokenizer's side unless a subclass knows better)."""
        return self._tokenizer.padding_side == "left"

    # ------------------------------------------------------------------ packed rows (rewardflow.models.packing)

    def _padded_batches(
        self,
        encoded: Encoded,
        indices: list[int],
        forward: Callable[[dict[str, Any], Any], Any],
        stats: dict[str, Any],
    ) -> list[Any]:
        """Score ``encoded`` rows ``indices``: packed rows when this model passed the packing probe, else padded."""
        reason = self._packing_off(encoded, indices, forward)
        stats["packing"] = "on" if reason is None else f"off: {reason}"
        if reason is not None:
            return self._pad_and_run(encoded, indices, forward, stats)
        torch = import_torch()
        lengths = [len(encoded.input_ids[i]) for i in indices]
        plan = pack_micro_batches(lengths, self.token_budget, self.max_batch_size)
        out: list[Any] = [None] * len(encoded.input_ids)
        done: list[tuple[int, ...]] = []
        refused: list[int] = []
        why = ""
        with torch.inference_mode(), _as_model_error("forward pass"):
            for batch in plan.batches:
                rows = [indices[j] for j in batch]
                try:
                    scores = self._packed_forward(encoded, rows)
                except PackingRefused as exc:
                    refused.extend(rows)
                    why = str(exc)
                    continue
                done.append(batch)
                for k, i in enumerate(rows):
                    out[i] = scores[k]
        real = sum(lengths[j] for batch in done for j in batch)
        stats["plan"] = _merge_plans(stats.get("plan"), MicroBatchPlan(tuple(done), real, real))
        if refused:
            stats["packing"] = (
                f"partly: {len(plan.batches) - len(done)} of {len(plan.batches)} micro-batches padded ({why})"
            )
            padded = self._pad_and_run(encoded, refused, forward, stats)
            for i in refused:
                out[i] = padded[i]
        return out

    def _packed_forward(self, encoded: Encoded, rows: list[int]) -> Any:
        """Outputs of ``rows`` computed as one packed row (``tensor[len(rows), ...]`` on the CPU)."""
        torch = import_torch()
        seqs = [encoded.input_ids[i] for i in rows]
        flat, positions, starts = pack_rows(seqs)
        inputs = {"input_ids": torch.tensor([flat]), "position_ids": torch.tensor([positions]) + self._position_offset}
        if encoded.token_type_ids is not None and self._accepts_token_types:
            inputs["token_type_ids"] = torch.tensor([pack_rows([encoded.token_type_ids[i] for i in rows])[0]])
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        with packed_pass([len(s) for s in seqs], self._fused_attention) as spans:
            out = self._read_packed(inputs, encoded, rows, starts)
        if spans.calls == 0:
            raise PackingRefused("no attention layer went through the packed attention function")
        return out

    def _read_packed(self, inputs: dict[str, Any], encoded: Encoded, rows: list[int], starts: list[int]) -> Any:
        """Run the model on one packed row and read one output per sequence (a subclass's part of packing).

        ``starts`` holds where each sequence begins in the row. ``None`` here means the subclass has no packed
        reader, and its micro-batches stay padded.
        """
        return None

    def _packing_structure(self) -> str | None:
        """Why this model's structure rules packing out before any probe (a subclass hook), or ``None``."""
        return None

    def _packing_off(self, encoded: Encoded, indices: list[int], forward: Any) -> str | None:
        """Why this call's micro-batches run padded, or ``None``; the model's probe runs once per load."""
        if not self.packing:
            return "disabled (packing=False)"
        if type(self)._read_packed is ManagedModel._read_packed:
            return f"{type(self).__name__} has no packed reader"
        if self.device.type != "cpu":
            return f"packing is for the CPU; on {self.device.type} padded micro-batches run"
        if not indices or any(not encoded.input_ids[i] for i in indices):
            return "an empty sequence is in the call"
        if self._packing_blocker is None:
            self._packing_blocker = self._probe_packing(encoded, indices, forward) or ""
        return self._packing_blocker or None

    def _probe_packing(self, encoded: Encoded, indices: list[int], forward: Any) -> str | None:
        """Score a few of this call's sequences packed and padded; packing stays on only if they agree.

        Agree means to 1e-4 (relative to outputs above 1) in fp32, to 1e-2 with 16-bit weights.
        """
        failed = register()
        if failed is not None:
            return failed
        original = getattr(self._model.config, "_attn_implementation", None)
        if not callable(getattr(self._model, "set_attn_implementation", None)):
            return "this transformers cannot switch a loaded model's attention implementation"
        if original not in ("sdpa", PACKED):
            return f"the model's attention implementation is {original!r} (packing stands in for 'sdpa')"
        if not self._accepts_position_ids:
            return "the model takes no position ids (each packed sequence must restart its positions)"
        structure = self._packing_structure()
        if structure is not None:
            return structure
        by_length = sorted(indices, key=lambda i: len(encoded.input_ids[i]))
        short = [i for i in by_length if len(encoded.input_ids[i]) <= 256] or by_length[:1]
        sample = sorted({short[0], short[len(short) // 3], short[2 * len(short) // 3], short[-1]})
        torch = import_torch()
        try:
            self._model.set_attn_implementation(PACKED)
            with torch.inference_mode():
                packed = self._packed_forward(encoded, sample)
            padded = self._pad_and_run(encoded, sample, forward, {})
        except Exception as exc:  # any failure means: keep the padded path, and say why
            self._model.set_attn_implementation(original)
            return f"the packing probe failed ({type(exc).__name__}: {exc})"
        diff = max(
            float((packed[k].float() - padded[i].float()).abs().max()) / max(1.0, float(padded[i].float().abs().max()))
            for k, i in enumerate(sample)
        )
        # fp32 agrees to rounding; 16-bit weights round each op to 3 digits, so two summation orders differ by
        # ~1e-3 there. A packing error (attention across sequences, a position or token read wrong) moves outputs
        # by their spread, far above either bound.
        tolerance = 1e-4 if next(self._model.parameters()).dtype.itemsize >= 4 else 1e-2
        if not diff <= tolerance:
            self._model.set_attn_implementation(original)
            return f"packed scores differ from padded ones by {diff:.1e} on the probe (attention or head spans rows)"
        return None

    def _pad_and_run(
        self,
        encoded: Encoded,
        indices: list[int],
        forward: Callable[[dict[str, Any], Any], Any],
        stats: dict[str, Any],
    ) -> list[Any]:
        """Score ``encoded`` rows ``indices`` in sorted, padded micro-batches; returns a list over all rows."""
        torch = import_torch()
        lengths = [len(encoded.input_ids[i]) for i in indices]
        plan = plan_micro_batches(lengths, self.token_budget, self.max_batch_size)
        stats["plan"] = _merge_plans(stats.get("plan"), plan)
        left = self._pads_left()
        pad_id = self._pad_filler
        with_types = encoded.token_type_ids is not None and self._accepts_token_types
        out: list[Any] = [None] * len(encoded.input_ids)
        with torch.inference_mode(), _as_model_error("forward pass"):
            for batch in plan.batches:
                width = lengths[batch[0]]
                ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                types = torch.zeros_like(ids) if with_types else None
                read = torch.zeros(len(batch), dtype=torch.long)
                for row, j in enumerate(batch):
                    i, n = indices[j], lengths[j]
                    start = width - n if left else 0
                    ids[row, start : start + n] = torch.tensor(encoded.input_ids[i], dtype=torch.long)
                    mask[row, start : start + n] = 1
                    if types is not None:
                        types[row, start : start + n] = torch.tensor(encoded.token_type_ids[i], dtype=torch.long)  # type: ignore[index]
                    read[row] = start + (encoded.read_at[i] if encoded.read_at is not None else n - 1)
                inputs = {"input_ids": ids, "attention_mask": mask}
                if types is not None:
                    inputs["token_type_ids"] = types
                if left and self._accepts_position_ids:
                    # absolute-position models must see each sequence start at position 0, padding or not
                    inputs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0) + self._position_offset
                inputs = {k: v.to(self.device, non_blocking=True) for k, v in inputs.items()}
                rows = forward(inputs, read.to(self.device)).float().cpu()
                for row, j in enumerate(batch):
                    out[indices[j]] = rows[row]
        return out


def position_offset(model: Any) -> int:
    """The position id a model gives a sequence's first token when it numbers positions itself.

    0 for most models. RoBERTa-family embeddings reserve position ``padding_idx`` for padding and number real
    tokens from ``padding_idx + 1``; their position embedding table says so with its ``padding_idx``. Position ids
    that rewardflow passes (left padding, packed rows) must start there too, or every position is shifted by one
    slot of the table and the scores change with nothing to show it.
    """
    import torch

    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] == "position_embeddings" and isinstance(module, torch.nn.Embedding):
            return 0 if module.padding_idx is None else int(module.padding_idx) + 1
    return 0


def _dedupe(encoded: Encoded) -> tuple[list[int], list[int], Encoded]:
    """``(unique, source, encoded_unique)``: the first index of each distinct sequence, and for each input the
    index of its first twin; ``encoded_unique`` keeps only the distinct ones, in order."""
    first: dict[tuple[tuple[int, ...], tuple[int, ...] | None, int | None], int] = {}
    source: list[int] = []
    for i, seq in enumerate(encoded.input_ids):
        types = encoded.token_type_ids[i] if encoded.token_type_ids is not None else None
        read = encoded.read_at[i] if encoded.read_at is not None else None
        key = (tuple(seq), None if types is None else tuple(types), read)
        source.append(first.setdefault(key, i))
    unique = sorted(first.values())

    def pick(values: list[Any] | None) -> list[Any] | None:
        return None if values is None else [values[i] for i in unique]

    kept = Encoded(
        [encoded.input_ids[i] for i in unique],
        pick(encoded.token_type_ids),
        encoded.truncated,
        pick(encoded.read_at),
        pick(encoded.prompt_lengths),
    )
    return unique, source, kept


def _merge_plans(previous: MicroBatchPlan | None, plan: MicroBatchPlan) -> MicroBatchPlan:
    """The accounting of two plans run in one call (batches are not comparable indices across plans)."""
    if previous is None:
        return plan
    return MicroBatchPlan(
        previous.batches + plan.batches,
        previous.real_tokens + plan.real_tokens,
        previous.padded_tokens + plan.padded_tokens,
    )


@contextmanager
def _as_model_error(what: str) -> Iterator[None]:
    """Torch's errors in a forward pass (shape mismatch, out of memory) become :class:`ModelError`.

    ``KeyboardInterrupt`` and ``SystemExit`` derive from ``BaseException`` and pass through untouched.
    """
    try:
        yield
    except (RuntimeError, ValueError, IndexError, TypeError) as exc:
        raise ModelError(f"{what} failed: {type(exc).__name__}: {exc}") from exc


def _ranks(values: Sequence[float]) -> list[float]:
    """Ranks from 0, ties sharing their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2
        i = j + 1
    return out


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman's rank correlation, or ``None`` where it is undefined (under 2 values, or one side constant)."""
    if len(a) < 2:
        return None
    ra, rb = _ranks(a), _ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    va = sum((x - ma) ** 2 for x in ra)
    vb = sum((y - mb) ** 2 for y in rb)
    return None if va == 0 or vb == 0 else cov / (va * vb) ** 0.5


def rank_agreement(values: Sequence[float], reference: Sequence[float], groups: Sequence[Any] | None) -> float | None:
    """The worst Spearman correlation within the groups (samples with equal ``groups`` keys, 2 or more of them),
    or over the whole call where no key repeats; ``None`` where nothing can be ranked."""
    members: dict[Any, list[int]] = {}
    for i, key in enumerate(groups if groups is not None else range(len(values))):
        members.setdefault(key, []).append(i)
    buckets = [rows for rows in members.values() if len(rows) > 1] or [list(range(len(values)))]
    found = [spearman([values[i] for i in rows], [reference[i] for i in rows]) for rows in buckets]
    known = [x for x in found if x is not None]
    return min(known) if known else None
