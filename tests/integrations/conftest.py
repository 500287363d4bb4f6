"""Shared fixtures: spec files for the adapters, and closing the adapters' shared engines after each test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from rewardflow.integrations._shared import shared_engines

REWARDS = "tests.integrations._rewards_integrations"


@pytest.fixture(autouse=True)
def _close_shared_engines() -> Iterator[None]:
    # Adapters keep engines for the life of the process (as a trainer needs); a test suite must not.
    yield
    shared_engines.close_all()


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    """A two-component spec: verl-style accuracy (weight 1) plus a small length bonus (weight 0.1)."""
    path = tmp_path / "reward_spec.yaml"
    path.write_text(
        f"""
workers: 2
timeout: 1.5
rewards:
  - name: accuracy
    reward: {REWARDS}:verl_style
  - name: brevity
    reward: {REWARDS}:length_bonus
    weight: 0.1
"""
    )
    return path


@pytest.fixture
def spec_env(spec_file: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("REWARDFLOW_SPEC", str(spec_file))
    assert os.environ["REWARDFLOW_SPEC"] == str(spec_file)
    return spec_file
