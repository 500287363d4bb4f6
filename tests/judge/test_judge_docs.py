"""The LLM-as-judge docs pages: the Chinese page is a translation, so it runs the same examples.

(tests/test_docs.py runs every page's ```python blocks.)
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "docs" / "en" / "judge.md", ROOT / "docs" / "zh" / "judge.md"]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def blocks(page: Path) -> list[str]:
    return BLOCK.findall(page.read_text(encoding="utf-8"))


def test_translation_has_the_same_examples() -> None:
    """The Chinese page runs the same code as the English one (comments aside)."""

    def code_only(page: Path) -> list[str]:
        return [re.sub(r"\s*#[^\n\"']*$", "", b, flags=re.MULTILINE) for b in blocks(page)]

    assert code_only(PAGES[0]) == code_only(PAGES[1])
