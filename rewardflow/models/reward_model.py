"""``RewardModel``: a critic-like reward model scored over the whole batch, on the trainer's device, then offloaded.

A learned reward model is a GPU forward pass, not a per-sample function: it belongs in the training loop, scoring
the whole batch between rollout and advantage computation, and should leave the device right after (the pattern
trainers use for the frozen reference model). So :class:`RewardModel` is a ``batch`` reward: the engine calls it
once with every prompt and completion of the batch; one call loads the model on first use (thread-safe), puts it
on the device, scores in token-budget micro-batches and offloads it (:mod:`rewardflow.models.base`).

Three kinds of heads:

* ``seq-cls``: ``AutoModelForSequenceClassification`` (the model pools its last non-padding token itself);
* ``token-cls``: ``AutoModelForTokenClassification``, read at the last non-padding token of each sequence, which
  is how AReaL's reward models are scored;
* ``value-head``: a base model (``AutoModel``) plus a linear value head stored under its own name in the same
  safetensors file, read at the last non-padding token: OpenRLHF's reward models (``value_head``, or ``score``
  in recent versions; ``normalize=True`` applies the ``mean``/``std`` saved in their config, as OpenRLHF's
  ``--normalize_reward`` does) and TRL's ``AutoModelForCausalLMWithValueHead`` (``v_head.summary``). The head is
  found by name, or given with ``value_head=``.

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
    "value-head": "value-head",
}
#: Where value heads live in the checkpoints of the trainers that write them (tried in this order).
VALUE_HEAD_NAMES = ("value_head", "v_head.summary", "score")
_TRANSFORMS = (None, "sigmoid", "softmax")


class RewardModel(ManagedModel):
    """A reward model run as a ``batch`` reward; see the module docstring.

    Args:
        path: local checkpoint directory (safetensors). Configuration only, never a dataset column.
        head: ``"seq-cls"``, ``"token-cls"`` or ``"value-head"`` (both scored at the last non-padding token).
        score_index: which logit is the reward; default 0 for single-output models, required otherwise
            (or give ``score_label``).
        score_label: the label name of that logit in the model config (``"positive"``, ``"LABEL_1"``...).
        transform: ``None`` (raw logit), ``"sigmoid"`` or ``"softmax"`` (probability of that label).
        num_labels: override the config's number of outputs; only meaningful for a head the checkpoint lacks
            (``allow_missing_weights=True``: a base encoder with a fresh head, for benchmarks and tests).
        value_head: for ``head="value-head"``, the head's name in the checkpoint (``"value_head"``...); default:
            the first of :data:`VALUE_HEAD_NAMES` present.
        normalize: for ``head="value-head"``, return ``(score - mean) / std`` with the ``mean`` and ``std`` saved
            in the checkpoint's config (OpenRLHF's reward normalization).
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
        value_head: str | None = None,
        normalize: bool = False,
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
            raise ConfigError(f"bad head {head!r}; use 'seq-cls', 'token-cls' or 'value-head'")
        if score_index is not None and score_label is not None:
            raise ConfigError("give score_index or score_label, not both")
        if transform not in _TRANSFORMS:
            raise ConfigError(f"bad transform {transform!r}; use None, 'sigmoid' or 'softmax'")
        if num_labels is not None and num_labels < 1:
            raise ConfigError(f"num_labels must be >= 1, got {num_labels}")
        if (value_head is not None or normalize) and _HEADS.get(head) != "value-head":
            raise ConfigError("value_head and normalize apply to head='value-head' only")
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
        self.value_head = value_head
        self.normalize = bool(normalize)
        self.policy_tokenizer = policy_tokenizer
        self.__rewardflow__ = RewardOptions(name="reward_model", kind=Kind.BATCH, timeout=timeout)
        self._index = 0
        self._head: Any = None  # the value head module (head="value-head")
        self._shift = 0.0  # normalize: (score - shift) / scale
        self._scale = 1.0
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
        autos = {
            "seq-cls": transformers.AutoModelForSequenceClassification,
            "token-cls": transformers.AutoModelForTokenClassification,
            "value-head": transformers.AutoModel,
        }
        tokenizer = load_tokenizer(self.checkpoint, trust_remote_code=self.trust_remote_code)
        extra = {} if self.num_labels is None or self.head == "value-head" else {"num_labels": self.num_labels}
        model, missing = load_pretrained(
            autos[self.head], self.checkpoint, dtype=self.dtype, trust_remote_code=self.trust_remote_code, **extra
        )
        if self.head == "value-head":
            self._head = self._attach_value_head(model)
        return model, tokenizer, missing

    def _attach_value_head(self, model: Any) -> Any:
        """Read the value head's weights from the checkpoint and attach it to the base model under its own name.

        Attached under the checkpoint's name, the head moves with the model on onload/offload and ``release``
        mode finds its weights in the file like any other tensor.
        """
        torch = import_torch()
        from safetensors import safe_open

        tensors: dict[str, Any] = {}
        for file in self.checkpoint.files:
            with safe_open(str(file), framework="pt") as handle:
                tensors.update((key, file) for key in handle.keys())
        names = (self.value_head,) if self.value_head is not None else VALUE_HEAD_NAMES
        name = next((n for n in names if f"{n}.weight" in tensors), None)
        if name is None:
            raise ModelError(
                f"no value head in {str(self.checkpoint.directory)!r}: none of "
                f"{', '.join(n + '.weight' for n in names)} is in its safetensors files; name it with value_head="
            )

        def read(key: str) -> Any:
            with safe_open(str(tensors[key]), framework="pt") as handle:
                return handle.get_tensor(key)

        weight = read(f"{name}.weight")
        if weight.dim() == 1:
            weight = weight.unsqueeze(0)
        hidden = int(getattr(model.config, "hidden_size", weight.shape[-1]))
        if weight.dim() != 2 or weight.shape[1] != hidden:
            raise ModelError(f"value head {name!r} has shape {tuple(weight.shape)}, expected (outputs, {hidden})")
        bias = read(f"{name}.bias") if f"{name}.bias" in tensors else None
        dtype = next(model.parameters()).dtype  # the base model's, also when the dtype was "auto"
        head = torch.nn.Linear(hidden, weight.shape[0], bias=bias is not None, dtype=dtype)
        with torch.no_grad():
            head.weight.copy_(weight)
            if bias is not None:
                head.bias.copy_(bias.reshape(-1))
        head.requires_grad_(False)
        parent = model
        *path, leaf = name.split(".")
        for part in path:  # "v_head.summary": a container module "v_head" holding the linear "summary"
            child = getattr(parent, part, None)
            if child is None:
                child = torch.nn.Module()
                parent.add_module(part, child)
            parent = child
        parent.add_module(leaf, head)
        if self.normalize:
            mean, std = getattr(model.config, "mean", None), getattr(model.config, "std", None)
            if not isinstance(mean, (int, float)) or not isinstance(std, (int, float)) or std <= 0:
                raise ModelError(
                    f"normalize=True needs numeric 'mean' and a positive 'std' in the config of "
                    f"{str(self.checkpoint.directory)!r} (found mean={mean!r}, std={std!r})"
                )
            self._shift, self._scale = float(mean), float(std)
        return head

    def _after_load(self) -> None:
        config = self._model.config
        num_labels = int(self._head.out_features if self._head is not None else config.num_labels)
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
        if self.head == "value-head":
            hidden = self._model(**inputs).last_hidden_state
            logits = self._head(self._at_last_token(hidden, inputs["attention_mask"]))
            logits = (logits.float() - self._shift) / self._scale
        else:
            logits = self._model(**inputs).logits
            if self.head == "token-cls":
                logits = self._at_last_token(logits, inputs["attention_mask"])
        logits = logits.float()
        if self.transform == "sigmoid":
            logits = logits.sigmoid()
        elif self.transform == "softmax":
            logits = logits.softmax(-1)
        return logits[:, self._index]

    @staticmethod
    def _at_last_token(values: Any, mask: Any) -> Any:
        """``values[b, t]`` at each row's last attended position, whichever side the padding is on."""
        torch = import_torch()
        positions = torch.arange(mask.shape[1], device=mask.device)
        last = (positions * mask).argmax(-1)
        return values[torch.arange(values.shape[0], device=values.device), last]
