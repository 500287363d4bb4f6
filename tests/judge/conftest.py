"""Shared fixtures for the judge tests: a fresh fake judge server on loopback per test, and fast retry settings."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from rewardflow.judge.testing import FakeJudgeServer

# Retries that keep fault tests fast: tiny backoff, short attempts, a distinct model per test avoids sharing state.
FAST = {"backoff": 0.01, "backoff_max": 0.02, "timeout": 2.0, "max_retries": 2}


@pytest.fixture
def server() -> Iterator[FakeJudgeServer]:
    with FakeJudgeServer() as srv:
        yield srv


@pytest.fixture
def params(server: FakeJudgeServer, request: pytest.FixtureRequest) -> dict[str, Any]:
    """Judge params pointing at this test's server; the model name is unique per test (no shared client state)."""
    return {"base_url": server.base_url, "model": f"judge-{request.node.name}", **FAST}
