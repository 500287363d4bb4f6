"""Taking the program out of a completion: the last fenced code block, with any language tag or none.

Only *closed* blocks count: a completion cut off inside its code block has no program (``0.0``, with the reason
saying so) rather than a truncated one that might happen to pass. The tag picks the language when the reward
is not told one: ``python``/``py``/``python3`` or no tag is Python, ``cpp``/``c++``/``cc``/``cxx`` is C++.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["CodeBlock", "extract_code", "language_of"]

# A fence is 3+ backticks at the start of a line; the closing fence has at least as many backticks.
_FENCE = re.compile(r"^(?P<fence>`{3,})[ \t]*(?P<tag>[^\s`]*)[^\n]*\n(?P<body>.*?)^(?P=fence)`*[ \t]*$", re.M | re.S)

_LANGUAGES = {
    "": "python",
    "python": "python",
    "python3": "python",
    "py": "python",
    "cpp": "cpp",
    "c++": "cpp",
    "cc": "cpp",
    "cxx": "cpp",
}


@dataclass(frozen=True, slots=True)
class CodeBlock:
    code: str
    tag: str  # the fence's tag, lower-cased ("" when none)


def extract_code(completion: str) -> CodeBlock | None:
    """The last closed fenced block of ``completion``, or ``None`` when there is none."""
    last = None
    for match in _FENCE.finditer(completion):
        last = match
    if last is None:
        return None
    return CodeBlock(last.group("body"), last.group("tag").lower())


def language_of(tag: str) -> str | None:
    """``"python"``/``"cpp"`` for a fence tag, ``None`` for a language the code rewards do not run."""
    return _LANGUAGES.get(tag.strip().lower().lstrip("{.").rstrip("}"))
