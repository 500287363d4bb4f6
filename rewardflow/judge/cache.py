"""A cache of judge replies keyed by the exact request, in memory and optionally on disk.

Covered: an LRU in memory (bounded by entry count) and, when given a path, a SQLite file that survives restarts
and is shared by processes on one machine. Keys are SHA-256 digests of the canonical JSON request body (model,
messages, sampling parameters, response format), so two requests share an entry only if the judge would have
seen byte-identical input. Only successful replies are stored; failures are never cached.

Not covered: deduplication of identical requests *in flight* (the client does that with one future per key),
expiry by age (delete the file) and cross-machine sharing.

SQLite calls are small and run in a worker thread (``asyncio.to_thread``) so the event loop never blocks on disk.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

__all__ = ["JudgeCache", "request_key"]


def request_key(body: dict[str, Any]) -> str:
    """Stable digest of a request body: same judge input, same key."""
    canonical = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class JudgeCache:
    """Memory LRU of ``key -> reply dict``, backed by an optional SQLite file."""

    def __init__(self, size: int = 10_000, path: str | Path | None = None) -> None:
        if size < 1:
            raise ValueError(f"cache size must be >= 1, got {size}")
        self.size = size
        self.path = Path(path) if path is not None else None
        self._memory: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def get(self, key: str) -> dict[str, Any] | None:
        """Memory lookup only (never touches the disk)."""
        with self._lock:
            value = self._memory.get(key)
            if value is not None:
                self._memory.move_to_end(key)
            return value

    def put(self, key: str, value: dict[str, Any]) -> None:
        """Memory store only; :meth:`aput` also writes the disk."""
        with self._lock:
            self._memory[key] = value
            self._memory.move_to_end(key)
            while len(self._memory) > self.size:
                self._memory.popitem(last=False)

    async def aget(self, key: str) -> dict[str, Any] | None:
        value = self.get(key)
        if value is None and self.path is not None:
            value = await asyncio.to_thread(self._disk_get, key)
            if value is not None:
                self.put(key, value)
        return value

    async def aput(self, key: str, value: dict[str, Any]) -> None:
        self.put(key, value)
        if self.path is not None:
            await asyncio.to_thread(self._disk_put, key, value)

    def discard(self, key: str) -> None:
        """Remove an entry from memory and disk (a small synchronous write; rare: unreadable replies only)."""
        with self._lock:
            self._memory.pop(key, None)
            if self.path is not None:
                db = self._connect()
                db.execute("DELETE FROM judge_cache WHERE key = ?", (key,))
                db.commit()

    def __len__(self) -> int:
        with self._lock:
            return len(self._memory)

    # ------------------------------------------------------------------ disk

    def _connect(self) -> sqlite3.Connection:
        # called with self._lock held
        if self._db is None:
            assert self.path is not None
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS judge_cache (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            db.commit()
            self._db = db
        return self._db

    def _disk_get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._connect().execute("SELECT value FROM judge_cache WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def _disk_put(self, key: str, value: dict[str, Any]) -> None:
        text = json.dumps(value, ensure_ascii=False)
        with self._lock:
            db = self._connect()
            db.execute("INSERT OR REPLACE INTO judge_cache (key, value) VALUES (?, ?)", (key, text))
            db.commit()

    def close(self) -> None:
        with self._lock:
            db, self._db = self._db, None
        if db is not None:
            db.close()
