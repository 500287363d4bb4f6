"""Finding a test's processes by a marker in their environment (children inherit it), for no-orphan tests."""

from __future__ import annotations

import time
from pathlib import Path


def processes_with(marker: str) -> list[int]:
    """PIDs of live processes whose environment contains ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def wait_gone(marker: str, seconds: float) -> list[int]:
    """Wait up to ``seconds`` for every marked process to exit; return those still there."""
    deadline = time.monotonic() + seconds
    left = processes_with(marker)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = processes_with(marker)
    return left
