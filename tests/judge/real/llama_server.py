"""A real llama.cpp ``llama-server`` process on loopback, started and stopped by the real-server tests.

``RF_LLAMA_SERVER`` is the binary (build_llama_server.sh), ``RF_JUDGE_GGUF`` the model (fetch_model.sh).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

BINARY = os.environ.get("RF_LLAMA_SERVER", "")
GGUF = os.environ.get("RF_JUDGE_GGUF", "")
SLOTS, CONTEXT = 4, 4096  # context per slot: 4096 / 4 = 1024 tokens

AVAILABLE = bool(BINARY and GGUF and Path(BINARY).is_file() and Path(GGUF).is_file())

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LlamaServer:
    """One llama-server process on 127.0.0.1; ``stop()`` / ``start()`` keep the port (for the fault tests)."""

    def __init__(self, port: int, log: Path) -> None:
        self.port = port
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, wait: bool = True) -> LlamaServer:
        cmd = [BINARY, "-m", GGUF, "--host", "127.0.0.1", "--port", str(self.port), "-c", str(CONTEXT)]
        cmd += ["-np", str(SLOTS), "--no-kv-unified", "-t", "2", "--no-webui", "--metrics"]
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}  # idle threads sleep instead of spinning
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 180.0) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                with OPENER.open(f"http://127.0.0.1:{self.port}/health", timeout=5) as response:
                    if response.status == 200:
                        return time.monotonic() - start
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"llama-server not ready after {timeout}s: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None


def server_version() -> str:
    out = subprocess.run([BINARY, "--version"], capture_output=True, text=True, timeout=60)
    return " ".join((out.stdout + out.stderr).split())[:200]
