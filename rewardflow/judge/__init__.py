"""Placeholder registry table for the judge rewards (filled by the judge package)."""

from __future__ import annotations

from rewardflow.registry import Entry

BUILTINS: list[Entry] = []
