"""Fixtures for ``make test-judge-real``: a real llama-server with SmolLM2-135M-Instruct, and the session report.

Needs ``RF_LLAMA_SERVER`` and ``RF_JUDGE_GGUF``; without them every test here is skipped, which is what
``make test`` sees. ``RF_REAL_REPORT`` names a JSON file the session writes its figures to (bench/RESULTS_judge.md
quotes them).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.judge.real.llama_server import AVAILABLE, CONTEXT, GGUF, SLOTS, LlamaServer, free_port, server_version

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if AVAILABLE:
        return
    skip = pytest.mark.skip(reason="needs RF_LLAMA_SERVER and RF_JUDGE_GGUF: run `make test-judge-real`")
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def report() -> Iterator[dict[str, Any]]:
    data: dict[str, Any] = {"server": server_version(), "model": Path(GGUF).name, "slots": SLOTS, "ctx": CONTEXT}
    yield data
    target = os.environ.get("RF_REAL_REPORT")
    if target:
        Path(target).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


@pytest.fixture(scope="session")
def llama(tmp_path_factory: pytest.TempPathFactory, report: dict[str, Any]) -> Iterator[LlamaServer]:
    server = LlamaServer(free_port(), tmp_path_factory.mktemp("llama") / "server.log")
    start = time.monotonic()
    server.start()
    report["startup_s"] = round(time.monotonic() - start, 2)
    yield server
    server.stop()


@pytest.fixture
def spare(tmp_path: Path) -> Iterator[LlamaServer]:
    """A second server, for the tests that kill it (the shared one stays up)."""
    server = LlamaServer(free_port(), tmp_path / "spare.log")
    yield server
    server.stop()
