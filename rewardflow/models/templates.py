"""Rebuilding the reward model's input with its own chat template.

A reward model was trained on conversations rendered with *its* chat template. The policy's prompts arrive
rendered with the *policy's* template (AReaL and verl hand the reward the decoded prompt), or as the plain
question (a dataset column). Feeding another model's markers to the reward model scores text it never saw in
training, so, like verl's ``_switch_chat_template``, rewardflow rebuilds the conversation as messages and renders
it with the reward model's template:

1. the user message is recovered from the prompt: if the prompt is a rendering of one user turn by the policy's
   template (``policy_tokenizer``), or by the reward model's own, the template around it is stripped; otherwise
   the prompt is taken as the plain user message;
2. ``[user, assistant=completion]`` is rendered with the reward model's template and tokenized without adding
   special tokens (the template places them).

A template's shape is learned once by rendering a sentinel message, so any Jinja template works without parsing
it. Multi-turn or custom-rendered prompts cannot be split safely: a user message that still contains a
template's special tokens raises :class:`~rewardflow.errors.ModelError` rather than being scored as garbage. So
does one holding the turn markers of a widely used template (:data:`CHAT_MARKERS`): a prompt rendered by a policy
template the reward model was not given (no ``policy_tokenizer``), whose markers it would otherwise read as text.
Templates whose rendering depends on the date (some Llama 3 ones) are matched against the date at load time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rewardflow.errors import ModelError

__all__ = ["CHAT_MARKERS", "ChatTemplate", "Rendered"]

_SENTINEL = "\ue000rewardflow-user-message\ue001"

#: Turn markers of widely used chat templates: ChatML (Qwen and many others), Llama 3, Llama 2 and Mistral, Gemma,
#: Phi-3 and Zephyr, DeepSeek, gpt-oss. A prompt that still holds one after stripping was rendered by a template
#: this reward model was not told about (no ``policy_tokenizer``), or holds more than one turn: read as the user
#: message, its markers would be scored as text.
CHAT_MARKERS = (
    "<|im_start|>",
    "<|im_end|>",
    "<|start_header_id|>",
    "<|eot_id|>",
    "[INST]",
    "[/INST]",
    "<start_of_turn>",
    "<end_of_turn>",
    "<|user|>",
    "<|assistant|>",
    "<|end|>",
    "<\uff5cUser\uff5c>",
    "<\uff5cAssistant\uff5c>",
    "<|start|>",
)


class _Shape:
    """The text a template puts before and after one user message (with the generation prompt)."""

    def __init__(self, tokenizer: Any) -> None:
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": _SENTINEL}], tokenize=False, add_generation_prompt=True
        )
        if not isinstance(rendered, str) or rendered.count(_SENTINEL) != 1:
            raise ModelError("cannot learn the chat template's shape (it does not render a user message once)")
        self.prefix, _, self.suffix = rendered.partition(_SENTINEL)
        specials = {str(t.content) for t in tokenizer.added_tokens_decoder.values() if t.special}
        specials.update(str(t) for t in tokenizer.all_special_tokens)
        self.markers = sorted(m for m in specials if m and m in rendered)

    def strip(self, prompt: str) -> str | None:
        """The user message if ``prompt`` is this template's rendering of one user turn, else ``None``."""
        if len(prompt) < len(self.prefix) + len(self.suffix):
            return None
        if (self.prefix or self.suffix) and prompt.startswith(self.prefix) and prompt.endswith(self.suffix):
            return prompt[len(self.prefix) : len(prompt) - len(self.suffix)]
        return None


class ChatTemplate:
    """Recovers user messages and renders conversations with a reward model's template; see the module docstring.

    Args:
        tokenizer: the reward model's tokenizer. Without a chat template (an encoder classifier scoring
            ``(prompt, completion)`` text pairs) only :meth:`user_message` is available.
        policy_tokenizer: the tokenizer whose template rendered the prompts, if any.
    """

    def __init__(self, tokenizer: Any, policy_tokenizer: Any = None) -> None:
        self.tokenizer = tokenizer
        self._own = _Shape(tokenizer) if getattr(tokenizer, "chat_template", None) else None
        self._policy: _Shape | None = None
        if policy_tokenizer is not None:
            if not getattr(policy_tokenizer, "chat_template", None):
                raise ModelError("policy_tokenizer has no chat template, so there is no policy template to strip")
            policy = _Shape(policy_tokenizer)
            if self._own is None or (policy.prefix, policy.suffix) != (self._own.prefix, self._own.suffix):
                self._policy = policy
        self._shapes = [s for s in (self._policy, self._own) if s is not None]  # stripped in this order
        # what a recovered user message may not contain: the known templates' markers and widely used ones
        self._markers = sorted({m for shape in self._shapes for m in shape.markers} | set(CHAT_MARKERS))

    @property
    def has_template(self) -> bool:
        """True when the reward model's tokenizer has a chat template (conversations are rendered with it)."""
        return self._own is not None

    @property
    def retemplates(self) -> bool:
        """True when prompts rendered with a different policy template are stripped and re-rendered."""
        return self._policy is not None

    def user_message(self, prompt: str) -> str:
        """Recover the user message from a rendered or plain prompt; raise for a prompt that cannot be split."""
        message = next((m for m in (s.strip(prompt) for s in self._shapes) if m is not None), prompt)
        found = [m for m in self._markers if m in message]
        if found:
            raise ModelError(
                f"prompt still contains chat-template tokens {found} after stripping one user turn: a "
                "multi-turn or custom-rendered prompt, or one rendered by a policy template the reward model "
                "was not given, cannot be re-templated safely; pass the plain user message as the prompt, or the "
                "matching policy_tokenizer"
            )
        return message

    def render(self, prompts: Sequence[str], completions: Sequence[str]) -> list[str]:
        """The reward model's rendering of each ``[user, assistant]`` conversation."""
        return [r.text for r in self.render_spans(prompts, completions)]

    def render_spans(self, prompts: Sequence[str], completions: Sequence[str]) -> list[Rendered]:
        """Like :meth:`render`, with where the user message and the completion sit in each rendered text.

        The spans let truncation cut inside the contents and never in the template's own text; a span is
        ``None`` when the template rewrote the content (trimmed it, say) so that it cannot be found verbatim.
        """
        if self._own is None:
            raise ModelError("the reward model's tokenizer has no chat template to render conversations with")
        out: list[Rendered] = []
        for prompt, completion in zip(prompts, completions, strict=True):
            user = self.user_message(prompt)
            messages = [{"role": "user", "content": user}, {"role": "assistant", "content": completion}]
            text = self.tokenizer.apply_chat_template(messages, tokenize=False)
            start = len(self._own.prefix) if text.startswith(self._own.prefix + user) else text.find(user)
            user_span = (start, start + len(user)) if start >= 0 else None
            after = user_span[1] if user_span is not None else 0
            found = text.find(completion, after)
            completion_span = (found, found + len(completion)) if found >= 0 else None
            out.append(Rendered(text, user_span, completion_span))
        return out


@dataclass(frozen=True)
class Rendered:
    """One rendered conversation and the character spans of its user message and completion (if found)."""

    text: str
    user: tuple[int, int] | None
    completion: tuple[int, int] | None
