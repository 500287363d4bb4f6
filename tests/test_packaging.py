"""The README's install section and ``pyproject.toml``'s extras agree, and every extra is used by the code.

An extra whose packages no module imports is a promise the code does not keep (``pip install 'rewardflow[x]'``
would install things that do nothing); an install command naming an extra that does not exist installs nothing
extra, with only a pip warning.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

tomllib = pytest.importorskip("tomllib") if sys.version_info >= (3, 11) else pytest.importorskip("tomli")

# Packages an extra needs that the code uses without importing them by name.
INDIRECT = {
    "tokenizers": "transformers' fast tokenizers (AutoTokenizer) need it; models/ never imports it by name",
    "uvloop": "uvicorn's event loop, chosen by name in server/run.py (loop='uvloop')",
    "httptools": "uvicorn's HTTP parser, chosen by name in server/run.py (http='httptools')",
}


def _extras() -> dict[str, list[str]]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return data["project"]["optional-dependencies"]


def _package(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0]


def _module_name(package: str) -> str:
    return package.lower().replace("-", "_")


def _code() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "rewardflow").rglob("*.py"))


def _imported(module: str, code: str) -> bool:
    patterns = [
        rf"^\s*import {module}\b",
        rf"^\s*from {module}[\s.]",
        rf"import_library\(\s*\"{module}\"",
        rf"import_module\(\s*\"{module}\"",
        rf"resources\.files\(\s*\"{module}\"",
    ]
    return any(re.search(p, code, re.MULTILINE) for p in patterns)


def test_every_extras_packages_are_imported_by_the_code() -> None:
    code = _code()
    unused: list[str] = []
    for extra, requirements in _extras().items():
        if extra in ("all", "dev"):
            continue
        for requirement in requirements:
            package = _package(requirement)
            module = {"prometheus-client": "prometheus_client"}.get(package, _module_name(package))
            if package not in INDIRECT and not _imported(module, code):
                unused.append(f"[{extra}] {package}")
    assert not unused, f"extras whose packages no module under rewardflow/ imports: {unused}"


def test_all_is_the_union_of_the_runtime_extras() -> None:
    extras = _extras()
    (all_requirement,) = extras["all"]
    named = set(re.search(r"\[(.*)\]", all_requirement).group(1).split(","))  # type: ignore[union-attr]
    assert named == set(extras) - {"all", "dev"}


def test_readme_install_commands_name_existing_extras() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    extras = set(_extras())
    commands = re.findall(r"pip install [^\n#]*", readme)
    assert commands, "the README has no install commands"
    named = {
        extra
        for command in commands
        for group in re.findall(r"rewardflow\[([^\]]+)\]", command)
        for extra in group.split(",")
    }
    assert named, "the README names no extra"
    assert named <= extras, f"the README names extras that do not exist: {sorted(named - extras)}"
    # and every runtime extra is in the README, with the packages it really brings
    for extra in extras - {"dev"}:
        assert f"rewardflow[{extra}]" in readme, f"the README does not mention [{extra}]"
    for extra, requirements in _extras().items():
        if extra in ("all", "dev"):
            continue
        line = next(line for line in readme.splitlines() if f"rewardflow[{extra}]" in line and "pip install" in line)
        for requirement in requirements:
            if _package(requirement) in INDIRECT or _package(requirement).startswith("gt-"):
                continue
            assert _package(requirement) in line, f"README line for [{extra}] does not name {_package(requirement)}"
