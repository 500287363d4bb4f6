"""Starting a real ``rewardflow serve`` as a subprocess on a loopback port, for every server test.

``Server`` is a context manager: it picks a free port, starts ``python -m rewardflow.cli serve SPEC``, waits for
``/readyz`` and on exit sends SIGTERM (SIGKILL if it lingers). The test spec files are written per test.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

ROOT = Path(__file__).resolve().parents[2]
REWARDS = "tests.server._service_rewards"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One ``rewardflow serve`` subprocess; ``url`` is its base URL once started."""

    def __init__(self, spec: Path, *args: str, env: dict[str, str] | None = None, port: int | None = None) -> None:
        self.spec = spec
        self.args = args
        self.env = env or {}
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = spec.with_suffix(f".{self.port}.log")

    def start(self, wait: float = 90.0) -> Server:
        env = dict(os.environ, PYTHONPATH=str(ROOT), **self.env)
        cmd = [sys.executable, "-m", "rewardflow.cli", "serve", str(self.spec), "--port", str(self.port), *self.args]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server not ready after {wait}s:\n{self.log.read_text()[-3000:]}")

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, wait: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        self.terminate()
        try:
            return self.proc.wait(wait)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def write_spec(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def id_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A loopback server (no token) scoring `row_id` (the row's id column) and `gsm8k`; shared by a module."""
    d = tmp_path_factory.mktemp("id_server")
    spec = write_spec(
        d / "spec.yaml",
        f"workers: 2\nretries: 0\nrewards:\n  - reward: {REWARDS}:row_id\n    name: id\n",
    )
    with Server(spec) as server:
        yield server
