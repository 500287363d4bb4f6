"""The ``format`` reward: does the completion follow the required layout (think/answer tags, or any regex)?

Built by :class:`Format` from the spec's ``params`` (``factory=True`` in the registry), so one process-kind reward
object carries its configuration into worker processes (it pickles: plain attributes, the compiled regex is
rebuilt lazily on first use).

Tag mode (the default, ``tags=["think", "answer"]``) checks, in one linear pass of ``str.find``:

* every tag is opened and closed exactly once, in the given order, without nesting or overlap;
* no tag is empty (``<think></think>`` is a classic way to collect a format bonus for free);
* with ``strict`` (default) nothing but whitespace lies outside the tags;
* with ``prefilled`` the first opening tag is taken to be in the prompt (chat templates that start the
  assistant turn with ``<think>``), so the completion must *not* repeat it;
* with ``require_boxed`` the last tag's content holds a ``\\boxed{...}``.

Regex mode (``pattern=...``) scores 1 iff the pattern ``fullmatch``-es the completion (``re.DOTALL`` by default).
A user pattern can backtrack catastrophically; as a process-kind reward it is still bounded by the engine's
killable timeout (``status=timeout``), never scored.
"""

from __future__ import annotations

import re
from typing import Any

from rewardflow.errors import ConfigError
from rewardflow.types import Score

__all__ = ["Format"]

_TAG_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_\-]*")


class Format:
    """Format reward: 1.0 when the completion has the required layout, 0.0 (with the first problem) otherwise.

    Parameters (all keyword, as in a spec's ``params``):

    * ``tags``: tag names that must appear in this order, each exactly once (default ``["think", "answer"]``);
    * ``pattern``: a regular expression the whole completion must match instead (``tags`` is then ignored);
    * ``strict``: forbid non-whitespace text outside the tags (default true);
    * ``allow_empty``: accept a tag with empty content (default false);
    * ``prefilled``: the first opening tag is part of the prompt, not of the completion (default false);
    * ``require_boxed``: the last tag must contain ``\\boxed{...}`` (default false).
    """

    def __init__(
        self,
        *,
        tags: list[str] | tuple[str, ...] = ("think", "answer"),
        pattern: str | None = None,
        strict: bool = True,
        allow_empty: bool = False,
        prefilled: bool = False,
        require_boxed: bool = False,
        dotall: bool = True,
    ) -> None:
        self.tags = tuple(tags)
        self.pattern = pattern
        self.strict = strict
        self.allow_empty = allow_empty
        self.prefilled = prefilled
        self.require_boxed = require_boxed
        self.dotall = dotall
        self._compiled: re.Pattern[str] | None = None
        if pattern is not None:
            if not isinstance(pattern, str):
                raise ConfigError(f"format: pattern must be a string, got {type(pattern).__name__}")
            self._compile()
        else:
            if not self.tags:
                raise ConfigError("format: give at least one tag, or a pattern")
            for tag in self.tags:
                if not isinstance(tag, str) or not _TAG_NAME_RE.fullmatch(tag):
                    raise ConfigError(f"format: {tag!r} is not a valid tag name (letters, digits, _ and -)")
            if len(set(self.tags)) != len(self.tags):
                raise ConfigError(f"format: tags must be distinct, got {list(self.tags)}")

    def _compile(self) -> re.Pattern[str]:
        if self._compiled is None:
            try:
                self._compiled = re.compile(self.pattern or "", re.DOTALL if self.dotall else 0)
            except re.error as exc:
                raise ConfigError(f"format: invalid pattern {self.pattern!r}: {exc}") from exc
        return self._compiled

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_compiled"] = None
        return state

    def __repr__(self) -> str:
        if self.pattern is not None:
            return f"Format(pattern={self.pattern!r})"
        return f"Format(tags={list(self.tags)!r}, strict={self.strict}, prefilled={self.prefilled})"

    def __call__(self, completion: str) -> Score:
        if self.pattern is not None:
            if self._compile().fullmatch(completion):
                return Score(1.0)
            return Score(0.0, reason="completion does not match the format pattern")
        problem = self._check_tags(completion)
        return Score(0.0, reason=problem) if problem else Score(1.0)

    def _check_tags(self, text: str) -> str | None:
        position = 0
        last_content = ""
        for i, tag in enumerate(self.tags):
            opening, closing = f"<{tag}>", f"</{tag}>"
            prefilled = self.prefilled and i == 0
            opens = text.count(opening)
            if opens != (0 if prefilled else 1):
                expected = "no" if prefilled else "exactly one"
                return f"expected {expected} {opening} (found {opens})"
            if text.count(closing) != 1:
                return f"expected exactly one {closing} (found {text.count(closing)})"
            start = 0 if prefilled else text.find(opening)
            if start < position:
                return f"{opening} comes before the end of the previous tag"
            if self.strict and text[position:start].strip():
                return f"text outside the tags before {opening}"
            content_start = start if prefilled else start + len(opening)
            end = text.find(closing)
            if end < content_start:
                return f"{closing} comes before {opening}"
            content = text[content_start:end]
            for other in self.tags:
                if other != tag and (f"<{other}>" in content or f"</{other}>" in content):
                    return f"<{other}> is nested inside {opening}"
            if not self.allow_empty and not content.strip():
                return f"{opening} is empty"
            position = end + len(closing)
            last_content = content
        if self.strict and text[position:].strip():
            return f"text outside the tags after </{self.tags[-1]}>"
        if self.require_boxed and "\\boxed" not in last_content:
            return f"no \\boxed{{}} inside <{self.tags[-1]}>"
        return None
