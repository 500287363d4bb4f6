"""The public API is pinned: `__all__` is sorted and is exactly the public names of the package."""

from __future__ import annotations

import rewardflow


def test_all_is_sorted_and_complete() -> None:
    public = {name for name in vars(rewardflow) if not name.startswith("_") or name == "__version__"}
    modules = {name for name, value in vars(rewardflow).items() if type(value).__name__ == "module"}
    assert rewardflow.__all__ == sorted(rewardflow.__all__)
    assert set(rewardflow.__all__) == public - modules - {"annotations"}


def test_core_import_does_not_pull_heavy_dependencies() -> None:
    import subprocess
    import sys

    heavy = "('torch', 'transformers', 'openai', 'sympy')"
    code = f"import sys, rewardflow; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
