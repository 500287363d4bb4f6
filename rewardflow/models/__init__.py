"""Placeholder registry table for the models rewards (filled by the models package)."""

from __future__ import annotations

from rewardflow.registry import Entry

BUILTINS: list[Entry] = []
