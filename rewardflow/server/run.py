"""Running the app under uvicorn, with a graceful SIGTERM.

On SIGTERM (or Ctrl-C) uvicorn stops accepting connections, lets the requests in flight finish for up to
``grace`` seconds, then runs the app's shutdown (the engine closes, its workers exit); the exit status after a
SIGTERM is 0. Before that, the service
flips ``/readyz`` to 503 so a load balancer stops routing to it. One process, one event loop, one engine:
scale out by running several servers and giving the client (:class:`rewardflow.client.RemoteEngine`) every URL.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from typing import Any

from rewardflow.server.config import ServerConfig
from rewardflow.spec import Spec

__all__ = ["build_server", "serve"]

logger = logging.getLogger(__name__)


def build_server(spec: Spec, config: ServerConfig, *, log_level: str = "warning") -> Any:
    """A ``uvicorn.Server`` for the app, whose SIGTERM handler first marks the service as stopping."""
    import uvicorn

    from rewardflow.server.app import create_app

    app = create_app(spec, config.check())
    service = app.service

    class _Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)  # after the app's start-up: spec loaded, reward workers up
            # Everything loaded so far (the app, the rewards' modules) lives as long as the process: frozen, it is
            # no longer traversed by every full garbage collection. Unfrozen, those collections measured 65-128 ms
            # each under load: an event-loop stall for every request in flight. Only in this process, which
            # `rewardflow serve` owns; an app embedded elsewhere leaves its host's collector alone.
            gc.collect()
            gc.freeze()

        def handle_exit(self, sig: int, frame: Any) -> None:
            service.begin_shutdown()
            super().handle_exit(sig, frame)
            if sig == signal.SIGTERM:
                # uvicorn re-raises captured signals after its shutdown (exit status -15); a graceful stop on
                # SIGTERM is a success, so exit 0. Ctrl-C still ends as an interrupt (130).
                self._captured_signals = [s for s in self._captured_signals if s != signal.SIGTERM]

    uv_config = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        log_level=log_level,
        access_log=False,  # no per-request logging: a log line costs more than a one-sample request
        proxy_headers=False,  # the client address is not used; no X-Forwarded-* rewriting per request
        server_header=False,
        timeout_graceful_shutdown=config.grace,
        lifespan="on",
        loop="uvloop" if _has("uvloop") else "asyncio",  # the `server` extra installs both; a bare install
        http=_http_protocol(),  # still runs, on the slower pure-Python pair
    )
    return _Server(uv_config)


class _OneWrite:
    """A transport that holds a response head until its body follows, so both leave in one write.

    uvicorn writes the status line and headers, then the body, as two socket writes: two system calls and, on
    loopback, often two wake-ups of the client, for every one-sample request. The head is held until the next
    write (the body, written in the same step of the same task) or, at the latest, until the end of the current
    event-loop turn (a response without a body); everything else passes straight through.
    """

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        if self._held is not None:
            data, self._held = self._held + data, None
        elif data[:9] == b"HTTP/1.1 " and data[-4:] == b"\r\n\r\n" and data[9:12] != b"100":
            self._held = data
            asyncio.get_running_loop().call_soon(self.flush)
            return
        self._transport.write(data)

    def flush(self) -> None:
        if self._held is not None:
            data, self._held = self._held, None
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _http_protocol() -> Any:
    """uvicorn's httptools protocol writing each response in one write (:class:`_OneWrite`), else h11."""
    if not _has("httptools"):
        return "h11"
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class OneWriteProtocol(HttpToolsProtocol):
        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(_OneWrite(transport))

    return OneWriteProtocol


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def serve(spec: Spec, config: ServerConfig, *, log_level: str = "warning") -> None:
    """Serve until SIGTERM/SIGINT; returns after a graceful shutdown."""
    server = build_server(spec, config, log_level=log_level)
    server.run()
    if not server.started:
        raise SystemExit(1)  # e.g. the port was taken, or start-up failed (uvicorn logged why)
