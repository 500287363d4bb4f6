"""``RewardModel``: a critic-like reward model scored over the whole batch, on the trainer's device, then offloaded.

A learned reward model is a GPU forward pass, not a per-sample function: it belongs in the training loop, scoring
the whole batch between rollout and advantage computation, and should leave the device right after (the pattern
trainers use for the frozen reference model). So :class:`RewardModel` is a ``batch`` reward: the engine calls it
once with every prompt and completion of the batch; one call loads the model on first use (thread-safe), puts it
on the device, scores in token-budget micro-batches and offloads it (:mod:`rewardflow.models.base`).

Two kinds of heads:

* ``seq-cls``: ``AutoModelForSequenceClassification`` (the model pools its last non-padding token itself);
* ``token-cls``: ``AutoModelForTokenClassification``, read at the last non-padding token of each sequence, which
  is how AReaL's reward models (and value heads saved as token classifiers) are scored.

The score is one logit (``score_index`` or the label name ``score_label``), optionally through a sigmoid or a
softmax over the labels. Inputs are rebuilt with the reward model's chat template when it has one
(:mod:`rewardflow.models.templates`), else scored as ``(prompt, completion)`` text pairs, as cross-encoders are
trained.

Security: the checkpoint path comes from the constructor or the spec's ``params`` only; the call signature takes
``prompts`` and ``completions`` and nothing else, so no dataset column can reach the loader. Safetensors only,
``trust_remote_code`` off by default (:mod:`rewardflow.models.loading`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rewardflow.errors import ConfigError, InputError, ModelError
from rewardflow.models.base import Encoded, ManagedModel
from rewardflow.models.loading import import_torch, import_transformers, load_pretrained, load_tokenizer
from rewardflow.models.templates import ChatTemplate
from rewardflow.models.weights import OffloadMode
from rewardflow.reward import Kind, RewardOptions
from rewardflow.types import Sample

__all__ = ["RewardModel"]

_HEADS = {
    "seq-cls": "seq-cls",
    "sequence-classification": "seq-cls",
    "token-cls": "token-cls",
    "token-classification": "token-cls",
}
_TRANSFORMS = (None, "sigmoid", "softmax")


class RewardModel(ManagedModel):
    """A reward model run as a ``batch`` reward; see the module docstring.

    Args:
        path: local checkpoint directory (safetensors). Configuration only, never a dataset column.
        head: ``"seq-cls"`` or ``"token-cls"`` (scored at the last non-padding token).
        score_index: which logit is the reward; default 0 for single-output models, required otherwise
            (or give ``score_label``).
        score_label: the label name of that logit in the model config (``"positive"``, ``"LABEL_1"``...).
        transform: ``None`` (raw logit), ``"sigmoid"`` or ``"softmax"`` (probability of that label).
        num_labels: override the config's number of outputs; only meaningful for a head the checkpoint lacks
            (``allow_missing_weights=True``: a base encoder with a fresh head, for benchmarks and tests).
        policy_tokenizer: local directory of the policy's tokenizer, when its chat template rendered the prompts
            and differs from the reward model's: prompts are stripped of it and re-rendered.
        timeout: default engine timeout for one batch call, in seconds (the spec's ``timeout`` overrides it).
        **options: device, dtype, offload, max_length, truncation_side, padding_side, token_budget,
            max_batch_size, trust_remote_code, allow_missing_weights (see :class:`ManagedModel`).
    """

    __rewardflow__ = RewardOptions(name="reward_model", kind=Kind.BATCH)

    def __init__(
        self,
        path: str,
        *,
        head: str = "seq-cls",
        score_index: int | None = None,
        score_label: str | None = None,
        transform: str | None = None,
        num_labels: int | None = None,
        policy_tokenizer: str | None = None,
        timeout: float | None = 600.0,
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
    ) -> None:
        if head not in _HEADS:
            raise ConfigError(f"bad head {head!r}; use 'seq-cls' or 'token-cls'")
        if score_index is not None and score_label is not None:
            raise ConfigError("give score_index or score_label, not both")
        if transform not in _TRANSFORMS:
            raise ConfigError(f"bad transform {transform!r}; use None, 'sigmoid' or 'softmax'")
        if num_labels is not None and num_labels < 1:
            raise ConfigError(f"num_labels must be >= 1, got {num_labels}")
        if policy_tokenizer is not None and not Path(policy_tokenizer).expanduser().is_dir():
            raise ModelError(f"policy_tokenizer {policy_tokenizer!r} is not a local directory")
        super().__init__(
            path,
            device=device,
            dtype=dtype,
            offload=offload,
            max_length=max_length,
            truncation_side=truncation_side,
            padding_side=padding_side,
            token_budget=token_budget,
            max_batch_size=max_batch_size,
            trust_remote_code=trust_remote_code,
            allow_missing_weights=allow_missing_weights,
        )
        self.head = _HEADS[head]
        self.score_index = score_index
        self.score_label = score_label
        self.transform = transform
        self.num_labels = num_labels
        self.policy_tokenizer = policy_tokenizer
        self.__rewardflow__ = RewardOptions(name="reward_model", kind=Kind.BATCH, timeout=timeout)
        self._index = 0
        self._template: ChatTemplate | None = None

    # ------------------------------------------------------------------ the reward

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        """The ``batch`` reward: one score per ``(prompt, completion)``, in order. Onload -> score -> offload."""
        return self.score_texts(prompts, completions)

    def score(self, samples: Sequence[Sample | Mapping[str, Any] | tuple[str, str]]) -> list[float]:
        """Score samples (``Sample`` objects, rows with ``prompt``/``completion``, or pairs), in input order."""
        prompts: list[str] = []
        completions: list[str] = []
        for i, item in enumerate(samples):
            if isinstance(item, Mapping):
                item = Sample.from_row(item)
            if isinstance(item, Sample):
                prompts.append(item.prompt)
                completions.append(item.completion)
            elif isinstance(item, tuple) and len(item) == 2:
                prompts.append(item[0])
                completions.append(item[1])
            else:
                raise InputError(f"sample {i}: expected a Sample, a row or a (prompt, completion) pair")
        return self.score_texts(prompts, completions)

    def score_texts(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        """Score parallel lists of prompts and completions; see :meth:`score`."""
        if len(prompts) != len(completions):
            raise InputError(f"{len(prompts)} prompts for {len(completions)} completions")
        for name, texts in (("prompt", prompts), ("completion", completions)):
            bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
            if bad is not None:
                raise InputError(f"{name} {bad} is {type(texts[bad]).__name__}, expected str")
        if not prompts:
            return []
        with self._scoring(len(prompts)) as stats:
            encoded = self._encode_pairs(prompts, completions)
            rows = self._forward_batches(encoded, self._forward, stats)
        return [float(row) for row in rows]

    def inputs(self, prompts: Sequence[str], completions: Sequence[str]) -> list[Any]:
        """What the model reads for each sample: the rendered conversation, or the ``(prompt, completion)`` pair."""
        self.load()
        assert self._template is not None
        if self._template.has_template:
            return self._template.render(prompts, completions)
        return [(self._template.user_message(p), c) for p, c in zip(prompts, completions, strict=True)]

    @property
    def retemplates(self) -> bool:
        """True when prompts rendered with a different policy chat template are re-rendered with the model's."""
        self.load()
        assert self._template is not None
        return self._template.retemplates

    # ------------------------------------------------------------------ internals

    def _load(self) -> tuple[Any, Any, set[str]]:
        transformers = import_transformers()
        auto = (
            transformers.AutoModelForSequenceClassification
            if self.head == "seq-cls"
            else transformers.AutoModelForTokenClassification
        )
        tokenizer = load_tokenizer(self.checkpoint, trust_remote_code=self.trust_remote_code)
        extra = {} if self.num_labels is None else {"num_labels": self.num_labels}
        model, missing = load_pretrained(
            auto, self.checkpoint, dtype=self.dtype, trust_remote_code=self.trust_remote_code, **extra
        )
        return model, tokenizer, missing

    def _after_load(self) -> None:
        config = self._model.config
        num_labels = int(config.num_labels)
        if self.score_label is not None:
            label2id = {str(k): int(v) for k, v in (getattr(config, "label2id", None) or {}).items()}
            if self.score_label not in label2id:
                raise ModelError(f"label {self.score_label!r} not in the model's labels {sorted(label2id)}")
            index = label2id[self.score_label]
        elif self.score_index is not None:
            index = int(self.score_index)
        elif num_labels == 1:
            index = 0
        else:
            labels = getattr(config, "id2label", None) or {}
            raise ModelError(
                f"the model has {num_labels} outputs ({dict(labels)}); "
                "choose the reward with score_index or score_label"
            )
        if not 0 <= index < num_labels:
            raise ModelError(f"score_index {index} out of range for a model with {num_labels} outputs")
        if self.transform == "softmax" and num_labels < 2:
            raise ModelError("transform 'softmax' needs a model with at least 2 outputs; use 'sigmoid'")
        self._index = index
        policy = None
        if self.policy_tokenizer is not None:
            policy = load_tokenizer(self.policy_tokenizer, trust_remote_code=self.trust_remote_code)
        self._template = ChatTemplate(self._tokenizer, policy)

    def _encode_pairs(self, prompts: Sequence[str], completions: Sequence[str]) -> Encoded:
        inputs = self.inputs(prompts, completions)
        if self._template is not None and self._template.has_template:
            return self._encode(inputs, add_special_tokens=False)  # the template places the special tokens
        return self._encode([p for p, _ in inputs], [c for _, c in inputs])

    def _forward(self, inputs: dict[str, Any]) -> Any:
        torch = import_torch()
        logits = self._model(**inputs).logits
        if self.head == "token-cls":
            mask = inputs["attention_mask"]
            positions = torch.arange(mask.shape[1], device=mask.device)
            last = (positions * mask).argmax(-1)  # the last attended position, whichever side the padding is on
            logits = logits[torch.arange(logits.shape[0], device=logits.device), last]
        logits = logits.float()
        if self.transform == "sigmoid":
            logits = logits.sigmoid()
        elif self.transform == "softmax":
            logits = logits.softmax(-1)
        return logits[:, self._index]
