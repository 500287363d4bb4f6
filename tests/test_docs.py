"""Every ```python block in docs/ runs: the blocks of a page in order, in one fresh interpreter.

So the documentation cannot drift from the code. The page runs as a script (``__main__``) from an empty
temporary directory, with the repository on PYTHONPATH, like a user's script would.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
BLOCK = re.compile(r"^```python[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)
PAGES = sorted(p for p in DOCS.rglob("*.md") if BLOCK.search(p.read_text(encoding="utf-8")))


def test_docs_have_code_to_run() -> None:
    assert PAGES, "no python examples found under docs/"


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(DOCS)) for p in PAGES])
def test_page_examples_run(page: Path, tmp_path: Path) -> None:
    code = "\n\n".join(m.group(1) for m in BLOCK.finditer(page.read_text(encoding="utf-8")))
    script = tmp_path / f"{page.stem}_examples.py"
    script.write_text(code, encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"{page}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def test_every_english_page_has_a_chinese_page() -> None:
    english = {p.relative_to(DOCS / "en") for p in (DOCS / "en").rglob("*.md")}
    chinese = {p.relative_to(DOCS / "zh") for p in (DOCS / "zh").rglob("*.md")}
    assert english == chinese


def test_mkdocs_builds_strict(tmp_path: Path) -> None:
    mkdocs = Path(sys.executable).with_name("mkdocs")
    if not mkdocs.exists():
        pytest.skip("mkdocs is not installed (pip install 'rewardflow[dev]')")
    proc = subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
