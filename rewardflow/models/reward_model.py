"""``RewardModel``: a critic-like reward model scored over the whole batch, on the trainer's device, then offloaded.

A learned reward model is a GPU forward pass, not a per-sample function: it belongs in the training loop, scoring
the whole batch between rollout and advantage computation, and should leave the device right after (the pattern
trainers use for the frozen reference model). So :class:`RewardModel` is a ``batch`` reward: the engine calls it
once with every prompt and completion of the batch; one call loads the model on first use (thread-safe), puts it
on the device, scores in token-budget micro-batches and offloads it (:mod:`rewardflow.models.base`).

Three kinds of heads, all read at a position rewardflow computes from each sequence's own tokens (never by
searching the padded batch for a pad id, which goes wrong when a tokenizer pads with EOS and the text ends with
EOS, as chat templates do):

* ``seq-cls``: ``AutoModelForSequenceClassification``. Decoder classifiers (Llama, Mistral, Qwen2, GPT-2...)
  run as base model + linear ``score`` head, read where the model reads an unpadded sequence alone: the last
  token (or, if the checkpoint's saved config names a pad id, the last token that is not it). Encoder
  classifiers (BERT-style, pooled ``[CLS]``) run whole;
* ``token-cls``: ``AutoModelForTokenClassification``, read at the last token of each sequence, which is how
  AReaL's reward models are scored;
* ``value-head``: a base model (``AutoModel``) plus a linear value head stored under its own name in the same
  safetensors file, read at the last non-padding token: OpenRLHF's reward models (``value_head``, or ``score``
  in recent versions; ``normalize=True`` applies the ``mean``/``std`` saved in their config, as OpenRLHF's
  ``--normalize_reward`` does) and TRL's ``AutoModelForCausalLMWithValueHead`` (``v_head.summary``). The head is
  found by name, or given with ``value_head=``.

The score is one logit (``score_index`` or the label name ``score_label``), optionally through a sigmoid or a
softmax over the labels.

How a ``(prompt, completion)`` sample becomes text (``text_format``), as the model was trained:

* ``"chat"``: the conversation ``[user: prompt, assistant: completion]`` rendered with the reward model's chat
  template (:mod:`rewardflow.models.templates`; a prompt rendered by the policy's template is re-rendered);
* ``"pair"``: the tokenizer's text pair ``(prompt, completion)``, as cross-encoders are trained
  (``[CLS] prompt [SEP] completion [SEP]``);
* ``"plain"``: ``prompt + completion`` as one string, tokenized with the tokenizer's own special tokens (BOS):
  reward models trained on plain text, such as AReaL's HH-RLHF reward models and TRL's ``RewardTrainer`` on
  standard (non-conversational) data. OpenRLHF value heads get OpenRLHF's plain-text recipe instead: no special
  tokens, ``eos="append"``. The prompt is taken verbatim, so it carries its own separators
  (``"\n\nHuman: ...\n\nAssistant:"``);
* ``"auto"`` (default): ``"chat"`` when the tokenizer has a chat template, else ``"pair"``.

What the model reads is decided the way its trainer fed it:

* ``eos``: ``"append"`` (OpenRLHF's reward datasets: strip trailing newlines, append `` <eos>`` unless the text
  already ends with EOS; so on Qwen's template the read is at ``<|im_end|>``, not at the newline after it),
  ``"add"`` (EOS right after the text unless it ends with it: TRL's ``RewardTrainer`` on standard data, AReaL's
  reward datasets), ``"as-is"`` (the text unchanged: TRL's ``RewardTrainer`` on conversational data, which
  tokenizes the template's rendering), or ``"strip"`` (trailing EOS and whitespace removed: the read falls on the
  completion's last token). ``"auto"`` (default): ``"append"`` for OpenRLHF value heads, else ``"add"`` for
  ``text_format="plain"``, else ``"as-is"``;
* truncation to ``max_length`` keeps both ends (:mod:`rewardflow.models.truncation`): BOS, the template and the
  final tokens stay, the prompt's content is cut first, then the completion's middle;
* GRPO groups (samples with the same prompt) run the shared prompt once and their completions against its KV
  cache, on causal models (:mod:`rewardflow.models.prefix`); ``ScoreReport.prefix_sharing`` says whether it ran
  and, if not, why.

Security: the checkpoint path comes from the constructor or the spec's ``params`` only; the call signature takes
``prompts`` and ``completions`` and nothing else, so no dataset column can reach the loader. Safetensors only,
``trust_remote_code`` off by default (:mod:`rewardflow.models.loading`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rewardflow.errors import ConfigError, InputError, ModelError
from rewardflow.models.base import PRECISION_GUARD, Encoded, ManagedModel, _as_model_error
from rewardflow.models.batching import MicroBatchPlan
from rewardflow.models.loading import import_torch, import_transformers, load_pretrained, load_tokenizer
from rewardflow.models.prefix import MIN_SHARED, bundle_groups, forward_groups, plan_groups, sharing_blocker
from rewardflow.models.templates import ChatTemplate
from rewardflow.models.truncation import COMPLETION, FIXED, PROMPT, keep_ends
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
_EOS = ("auto", "append", "add", "as-is", "strip")
_TEXT_FORMATS = ("auto", "chat", "pair", "plain")
#: Value heads saved by OpenRLHF (``value_head``, ``score``): its reward models were trained with ``eos="append"``.
_OPENRLHF_HEADS = ("value_head", "score")


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
        eos: ``"auto"``, ``"append"``, ``"add"``, ``"as-is"`` or ``"strip"``: how the end of the text is prepared
            (module docstring); match it to how the reward model was trained.
        text_format: ``"auto"``, ``"chat"``, ``"pair"`` or ``"plain"``: how a prompt and its completion become the
            model's text (module docstring); match it to how the reward model was trained.
        share_prefix: run a group's shared prompt once (causal models; scores are unchanged, to float error).
        groups_together: run several groups' prompts in one pass, and their completions in shared passes (``None``,
            default: on an accelerator, where a pass per group is launch-bound; one group per pass on the CPU).
        packing: on the CPU, lay each micro-batch's sequences end to end with no padding and attend within each
            (:mod:`rewardflow.models.packing`; used only after a probe finds the scores unchanged).
        precision_guard: with ``dtype="bf16"`` (or fp16) on the CPU, the least Spearman agreement with float32,
            within each prompt's group, the first scored call must show, else the model falls back to float32
            (:class:`~rewardflow.models.base.ManagedModel`; ``None``: off).
        truncation_side: ``"ends"`` (default: keep both ends), ``"left"`` or ``"right"`` (plain cuts).
        timeout: default engine timeout for one batch call, in seconds (the spec's ``timeout`` overrides it).
        **options: device, dtype, offload, max_length, padding_side, token_budget, max_batch_size,
            trust_remote_code, allow_missing_weights, cpu_linear, cpu_attention (see :class:`ManagedModel`).
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
        eos: str = "auto",
        text_format: str = "auto",
        share_prefix: bool = True,
        groups_together: bool | None = None,
        packing: bool = True,
        timeout: float | None = 600.0,
        device: Any = None,
        dtype: Any = None,
        offload: str | OffloadMode = OffloadMode.CPU,
        max_length: int = 2048,
        truncation_side: str = "ends",
        padding_side: str | None = None,
        token_budget: int | None = None,
        max_batch_size: int | None = None,
        trust_remote_code: bool = False,
        allow_missing_weights: bool = False,
        cpu_linear: str = "auto",
        precision_guard: float | None = PRECISION_GUARD,
        cpu_attention: str = "torch",
    ) -> None:
        self._arguments = {k: v for k, v in locals().items() if k not in ("self", "__class__")}  # for the guard
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
        if eos not in _EOS:
            raise ConfigError(f"bad eos policy {eos!r}; use one of {', '.join(map(repr, _EOS))}")
        if text_format not in _TEXT_FORMATS:
            raise ConfigError(f"bad text_format {text_format!r}; use one of {', '.join(map(repr, _TEXT_FORMATS))}")
        if truncation_side not in ("ends", "left", "right"):
            raise ConfigError(f"truncation_side must be 'ends', 'left' or 'right', got {truncation_side!r}")
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
            cpu_linear=cpu_linear,
            packing=packing,
            precision_guard=precision_guard,
            cpu_attention=cpu_attention,
        )
        self.head = _HEADS[head]
        self.score_index = score_index
        self.score_label = score_label
        self.transform = transform
        self.num_labels = num_labels
        self.value_head = value_head
        self.normalize = bool(normalize)
        self.policy_tokenizer = policy_tokenizer
        self.eos = eos
        self.text_format = text_format
        self.share_prefix = bool(share_prefix)
        self.groups_together = None if groups_together is None else bool(groups_together)
        self._encoder: Any = None  # whole-model encoder classifiers: the module whose output the head reads
        self._eos = eos  # resolved at load ("auto" -> "append", "add" or "as-is")
        self._format = text_format  # resolved at load ("auto" -> "chat" or "pair")
        self._saved_pad_id: int | None = None  # the checkpoint's own config.pad_token_id, before any fallback
        self._value_head_name: str | None = None
        self._base: Any = None  # base model + linear head, when the head can be read at a chosen position
        self._linear: Any = None
        self._base_takes_cache = False
        self._blocker: str | None = None  # why prefix sharing cannot run ("" = it can), measured once
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
        # the 16-bit guard (ManagedModel._precision_checked) ranks within groups: samples with the same prompt
        return self._precision_checked(lambda model: model._score_pairs(prompts, completions), groups=prompts)

    def _score_pairs(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        with self._scoring(len(prompts)) as stats:
            encoded = self._encode_pairs(prompts, completions)
            rows = self._forward_batches(encoded, self._forward, stats)
        return [float(row) for row in rows]

    def inputs(self, prompts: Sequence[str], completions: Sequence[str]) -> list[Any]:
        """What the model reads for each sample (``text_format``): the rendered conversation, the plain text, or the
        ``(prompt, completion)`` pair."""
        self.load()
        assert self._template is not None
        if self._format == "chat":
            return self._template.render(prompts, completions)
        if self._format == "plain":
            return [p + c for p, c in zip(prompts, completions, strict=True)]
        return [(self._template.user_message(p), c) for p, c in zip(prompts, completions, strict=True)]

    def encode(self, prompts: Sequence[str], completions: Sequence[str]) -> list[list[int]]:
        """The token ids the model reads for each sample: re-templated, eos policy applied, truncated."""
        with self._lock:
            self.load()
            return self._encode_pairs(prompts, completions).input_ids

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
        self._saved_pad_id = getattr(model.config, "pad_token_id", None)
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

        self._value_head_name = name
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
        text_format = self.text_format
        if text_format == "auto":
            text_format = "chat" if self._template.has_template else "pair"
        if text_format == "chat" and not self._template.has_template:
            raise ModelError("text_format='chat' needs a chat template, and the reward model's tokenizer has none")
        self._format = text_format
        eos = self.eos
        if eos == "auto":
            if self._value_head_name in _OPENRLHF_HEADS:
                eos = "append"
            else:
                eos = "add" if text_format == "plain" else "as-is"
        if eos != "as-is" and (self._tokenizer.eos_token is None or self._tokenizer.eos_token_id is None):
            raise ModelError(f"eos={eos!r} needs an EOS token, and the tokenizer has none; use eos='as-is'")
        self._eos = eos
        if self.head == "value-head":
            self._base, self._linear = self._model, self._head
        else:
            self._base, self._linear = _split(self._model, self.head)
        if self._base is not None:
            import inspect

            accepted = inspect.signature(self._base.forward).parameters
            self._accepts_position_ids = "position_ids" in accepted
            self._accepts_token_types = "token_type_ids" in accepted
            self._base_takes_cache = "use_cache" in accepted
        self._blocker = None
        self._encoder = None

    def _encode_pairs(self, prompts: Sequence[str], completions: Sequence[str]) -> Encoded:
        """Token ids with per-token labels, the eos policy applied, truncated keeping the ends, and read positions."""
        tok = self._tokenizer
        assert self._template is not None
        seqs: list[list[int]] = []
        labels: list[list[int]] = []
        types: list[list[int]] | None = None
        prompt_lengths: list[int] | None = [] if tok.is_fast else None
        if self._format in ("chat", "plain"):
            texts, spans = [], []
            if self._format == "chat":
                for rendered in self._template.render_spans(prompts, completions):
                    texts.append(self._eos_text(rendered.text))
                    spans.append((rendered.user, rendered.completion))
            else:  # the prompt verbatim, the completion right after it
                for prompt, completion in zip(prompts, completions, strict=True):
                    texts.append(self._eos_text(prompt + completion))
                    end = len(prompt) + len(completion)
                    spans.append(((0, len(prompt)), (len(prompt), end) if completion else None))
            # a template places its own special tokens; plain text takes the tokenizer's (BOS...), as TRL and AReaL
            # tokenize it, except under OpenRLHF heads: OpenRLHF's reward datasets tokenize without them
            special = self._format == "plain" and self._value_head_name not in _OPENRLHF_HEADS
            enc = tok(texts, add_special_tokens=special, verbose=False, return_offsets_mapping=tok.is_fast)
            for k, ids in enumerate(enc["input_ids"]):
                seqs.append(list(ids))
                if not tok.is_fast:
                    labels.append(_fallback_labels(len(ids)))
                    continue
                offsets = enc["offset_mapping"][k]
                user, completion = spans[k]
                labels.append([_label(a, b, user, completion) for a, b in offsets])
                cut = user[1] if user is not None else -1  # the group key: the tokens up to the user message's end
                prompt_lengths.append(sum(1 for _, b in offsets if b <= cut) if cut >= 0 else 0)  # type: ignore[union-attr]
        else:
            users = [self._template.user_message(p) for p in prompts]
            enc = tok(users, list(completions), verbose=False)
            types = enc.get("token_type_ids")
            for k, ids in enumerate(enc["input_ids"]):
                ids = list(ids)
                if tok.is_fast:
                    where = enc.sequence_ids(k)
                    labels.append([FIXED if w is None else (PROMPT if w == 0 else COMPLETION) for w in where])
                    prompt_lengths.append(next((j for j, w in enumerate(where) if w == 1), len(ids)))  # type: ignore[union-attr]
                else:
                    labels.append(_fallback_labels(len(ids)))
                seqs.append(self._eos_ids(ids, labels[-1], None if types is None else types[k]))
        truncated = 0
        for k, ids in enumerate(seqs):
            if not ids:
                raise InputError(
                    f"sample {k} has no tokens to score (empty prompt and completion, and the tokenizer adds no "
                    "special tokens); give it some text or filter it out"
                )
            if len(ids) <= self.max_length:
                continue
            truncated += 1
            keep = self._keep(labels[k])
            seqs[k] = [ids[j] for j in keep]
            if types is not None:
                types[k] = [types[k][j] for j in keep]
            if prompt_lengths is not None:
                prompt_lengths[k] = sum(1 for j in keep if j < prompt_lengths[k])
        read_at = [self._read_position(ids) for ids in seqs]
        return Encoded(seqs, types, truncated, read_at, prompt_lengths)

    def _keep(self, labels: list[int]) -> list[int]:
        n, m = len(labels), self.max_length
        if self.truncation_side == "left":
            return list(range(n - m, n))
        if self.truncation_side == "right":
            return list(range(m))
        return keep_ends(labels, m)

    def _eos_text(self, text: str) -> str:
        """Apply the eos policy to a rendered conversation (text level, as OpenRLHF does)."""
        eos = self._tokenizer.eos_token
        if self._eos == "append":
            text = text.rstrip("\n")
            return text if text.endswith(eos) else f"{text} {eos}"
        if self._eos == "add":
            return text if text.endswith(eos) else text + eos
        if self._eos == "strip":
            text = text.rstrip()
            while text.endswith(eos):
                text = text[: -len(eos)].rstrip()
        return text

    def _eos_ids(self, ids: list[int], labels: list[int], types: list[int] | None) -> list[int]:
        """Apply the eos policy to a text pair's token ids (``labels``/``types`` follow in place)."""
        eos_id = self._tokenizer.eos_token_id
        if self._eos in ("append", "add") and (not ids or ids[-1] != eos_id):
            ids.append(eos_id)
            labels.append(FIXED)
            if types is not None:
                types.append(types[-1] if types else 0)
        elif self._eos == "strip":
            while ids and ids[-1] == eos_id:
                ids.pop()
                labels.pop()
                if types is not None:
                    types.pop()
        return ids

    def _read_position(self, ids: list[int]) -> int:
        """The index whose output is the score: the last token, as the model reads a lone unpadded sequence.

        A sequence classifier whose *saved* config names a pad id skips trailing tokens equal to it even in a
        batch of one (transformers' rule, and so the rule it was trained under); the search runs over this
        sequence's own tokens only, never over padding. Without a saved pad id (Llama-3, Mistral, GPT-2 style
        checkpoints) the last token is read, EOS included.
        """
        if self.head != "seq-cls" or self._saved_pad_id is None:
            return len(ids) - 1
        for j in range(len(ids) - 1, -1, -1):
            if ids[j] != self._saved_pad_id:
                return j
        return 0  # all padding ids: transformers' argmax over an all-false mask gives position 0

    # ------------------------------------------------------------------ forward passes

    def _forward(self, inputs: dict[str, Any], read: Any) -> Any:
        torch = import_torch()
        rows = torch.arange(read.shape[0], device=read.device)
        if self._base is not None:
            if self._base_takes_cache:
                inputs = {**inputs, "use_cache": False}
            hidden = self._base(**inputs).last_hidden_state
            return self._finish(self._linear(hidden[rows, read]))
        logits = self._model(**inputs).logits
        if logits.dim() == 3:  # per-token outputs
            logits = logits[rows, read]
        return self._finish(logits)

    def _finish(self, logits: Any) -> Any:
        logits = logits.float()
        if self.head == "value-head":
            logits = (logits - self._shift) / self._scale
        if self.transform == "sigmoid":
            logits = logits.sigmoid()
        elif self.transform == "softmax":
            logits = logits.softmax(-1)
        return logits[:, self._index]

    def _forward_unique(self, encoded: Encoded, forward: Any, stats: dict[str, Any]) -> list[Any]:
        """Groups that share a prompt prefix run it once (:mod:`rewardflow.models.prefix`); the rest are padded."""
        torch = import_torch()
        reason = self._sharing_off(encoded, probe=False)
        groups = []
        if reason is None:
            groups = plan_groups(encoded.input_ids, encoded.prompt_lengths or [], encoded.read_at)
        if reason is None and not groups:
            reason = f"no samples share a prompt prefix of at least {MIN_SHARED} tokens"
        if groups:
            reason = self._sharing_off(encoded, probe=True)  # measured once, only when there is something to share
            groups = groups if reason is None else []
        stats["prefix_sharing"] = "on" if reason is None else f"off: {reason}"
        if not groups:
            return super()._forward_unique(encoded, forward, stats)
        assert encoded.read_at is not None
        out: list[Any] = [None] * len(encoded.input_ids)
        real = padded = passes = 0
        budget = self.token_budget
        together = self.device.type != "cpu" if self.groups_together is None else self.groups_together
        with torch.inference_mode(), _as_model_error("forward pass"):
            for bundle in bundle_groups(groups, budget, together=together, max_rows=self.max_batch_size):
                rows = [r for group in bundle for r in group.rows]
                owner = [j for j, group in enumerate(bundle) for _ in group.rows]
                cut = [group.prefix for group in bundle for _ in group.rows]
                suffixes = [encoded.input_ids[r][c:] for r, c in zip(rows, cut, strict=True)]
                chunk = max(1, min(budget // max(len(x) for x in suffixes), self.max_batch_size or len(suffixes)))
                states, runs, computed = forward_groups(
                    self._base,
                    [encoded.input_ids[group.rows[0]][: group.prefix] for group in bundle],
                    suffixes,
                    owner,
                    [encoded.read_at[r] - c for r, c in zip(rows, cut, strict=True)],
                    pad_id=self._pad_filler,
                    device=self.device,
                    chunk=chunk,
                )
                scores = self._finish(self._linear(states)).cpu()
                for row, r in enumerate(rows):
                    out[r] = scores[row]
                passes += runs
                padded += computed
                real += sum(group.prefix for group in bundle) + sum(len(x) for x in suffixes)
        stats["shared_groups"] = len(groups)
        stats["shared_tokens"] = sum(g.prefix * (len(g.rows) - 1) for g in groups)
        stats["plan"] = MicroBatchPlan(tuple(() for _ in range(passes)), real, padded)
        shared = {r for g in groups for r in g.rows}
        rest = [i for i in range(len(encoded.input_ids)) if i not in shared]
        if rest:
            rows = self._padded_batches(encoded, rest, forward, stats)
            for i in rest:
                out[i] = rows[i]
        return out

    def _pads_left(self) -> bool:
        """Left padding only where the score is read at a chosen position (base model + head).

        A classifier run whole (BERT-style) pools the *first* position of each row: with the padding first, it
        would read a pad token for every row but the longest. Its micro-batches are always padded on the right.
        """
        return self._base is not None and super()._pads_left()

    # ------------------------------------------------------------------ packed rows (rewardflow.models.packing)

    def _packing_structure(self) -> str | None:
        """A classifier run whole needs the encoder module whose output its head reads (the first token)."""
        if self._base is not None:
            return None
        base = getattr(self._model, "base_model", None)
        encoder = getattr(base, "encoder", None) or getattr(base, "transformer", None)
        if self.head != "seq-cls" or encoder is None:
            return "the head is read from the whole model's output and no encoder module was found"
        self._encoder = encoder
        return None

    def _read_packed(self, inputs: dict[str, Any], encoded: Encoded, rows: list[int], starts: list[int]) -> Any:
        """Scores of one packed row: the head at each read position, or the whole classifier on first tokens."""
        torch = import_torch()
        if self._base is not None:
            at = encoded.read_at or [len(seq) - 1 for seq in encoded.input_ids]
            read = torch.tensor([start + at[i] for start, i in zip(starts, rows, strict=True)])
            extra = {"use_cache": False} if self._base_takes_cache else {}
            hidden = self._base(**inputs, **extra).last_hidden_state
            logits = self._linear(hidden[0, read.to(self.device)])
        else:
            handle = self._encoder.register_forward_hook(_first_tokens(torch.tensor(starts, device=self.device)))
            try:
                logits = self._model(**inputs).logits
            finally:
                handle.remove()
        return self._finish(logits).float().cpu()

    def _sharing_off(self, encoded: Encoded, *, probe: bool) -> str | None:
        """Why prefix sharing cannot run on this call, or ``None`` (``probe``: also measure the model once)."""
        if not self.share_prefix:
            return "disabled (share_prefix=False)"
        if self._base is None:  # an encoder classifier, usually: say so when the probe can tell
            if self._blocker is None:
                base = getattr(self._model, "base_model", None)
                found = sharing_blocker(base, self.device, len(self._tokenizer)) if base is not None else None
                self._blocker = found or "this head is read from the whole model's output, not from a base model"
            return self._blocker
        if encoded.token_type_ids is not None:
            return "the inputs carry token type ids (a text-pair encoder)"
        if encoded.prompt_lengths is None:
            return "prompt boundaries are unknown (a slow tokenizer gives no offsets)"
        if not probe:
            return None
        if self._blocker is None:
            self._blocker = sharing_blocker(self._base, self.device, len(self._tokenizer)) or ""
        return self._blocker or None


def _label(start: int, end: int, user: tuple[int, int] | None, completion: tuple[int, int] | None) -> int:
    """A token's origin from its character span: inside the user message, inside the completion, or template."""
    if end <= start:
        return FIXED
    if user is not None and user[0] <= start and end <= user[1]:
        return PROMPT
    if completion is not None and completion[0] <= start and end <= completion[1]:
        return COMPLETION
    return FIXED


def _first_tokens(starts: Any) -> Any:
    """A forward hook replacing an encoder's packed output ``[1, T, H]`` by each sequence's first token, ``[N, 1, H]``.

    Encoder classifiers read the first token (BERT's pooler, RoBERTa's head); given one row per sequence, the model's
    own pooler and classifier compute each sequence's logits. A head reading another token fails the probe.
    """

    def hook(module: Any, args: Any, output: Any) -> Any:
        hidden = output[0]
        picked = hidden[0, starts].unsqueeze(1)
        if isinstance(output, tuple):
            return (picked, *output[1:])
        output["last_hidden_state"] = picked
        return output

    return hook


def _fallback_labels(n: int) -> list[int]:
    """Without offsets: the first and last two tokens are kept, the middle is content."""
    return [FIXED if j == 0 or j >= n - 2 else COMPLETION for j in range(n)]


def _split(model: Any, head: str) -> tuple[Any, Any] | tuple[None, None]:
    """``(base model, linear head)`` when the head is a linear layer applied to the base's hidden states.

    Decoder sequence classifiers (Llama, Mistral, Qwen2, GPT-2...) and token classifiers are built that way;
    running the two parts lets rewardflow read the hidden state at the position it chooses instead of the one
    transformers' pad-id search finds. Encoder sequence classifiers (BERT-style, pooled ``[CLS]``) are run whole.
    """
    torch = import_torch()
    base = getattr(model, "base_model", None)
    if base is None or base is model:
        return None, None
    linear = getattr(model, "score", None)
    if linear is None and head == "token-cls":
        linear = getattr(model, "classifier", None)
    if isinstance(linear, torch.nn.Linear):
        return base, linear
    return None, None
