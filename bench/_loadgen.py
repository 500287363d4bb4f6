"""A bounded HTTP/1.1 load generator on asyncio protocols, for loopback benchmarks (bench P6).

Why not aiohttp or httpx: on a 2-core machine the load generator shares the CPUs with the server it measures,
and a full client library spends several times the server's own per-request CPU (measured: the same trivial
ASGI app answered 2,079 requests/s to aiohttp and 4,484 to an asyncio-streams loop, this module's first
version). This one writes pre-built requests over keep-alive connections (an ``asyncio.Protocol`` per
connection: the next request goes out from the callback that completes the reply) and reads ``Content-Length``
bodies, nothing more, as wrk does; the replies are parsed after the clock stops (and checked by the caller),
so the figures are the server's. :func:`run` runs a benchmark's coroutine on uvloop when it is installed, for
the in-process side and the load generator alike.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def _request(path: str, body: bytes, host: str) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class _Connection(asyncio.Protocol):
    """One keep-alive connection that sends its next request from ``data_received`` as soon as a reply is whole.

    No stream reader and no task switch per request: the generator's own cost per request is a parse of the
    status line and ``Content-Length`` and one write, so on a shared machine the CPU goes to the server.
    """

    def __init__(self, requests: list[bytes], order: Any, out: list[Any], lat: list[float]) -> None:
        self.requests, self.order, self.out, self.lat = requests, order, out, lat
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: Any = None
        self._buffer = bytearray()
        self._need: int | None = None
        self._status = 0
        self._index = -1
        self._start = 0.0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def send_next(self) -> None:
        index = next(self.order, None)
        if index is None:
            self.transport.close()
            if not self.done.done():
                self.done.set_result(None)
            return
        self._index, self._start = index, time.perf_counter()
        self.transport.write(self.requests[index])

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        if self._need is None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buffer[:end])
            del buffer[: end + 4]
            self._status = int(head.split(b" ", 2)[1])
            self._need = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    self._need = int(line[15:])
        if len(buffer) < self._need:
            return
        body = bytes(buffer[: self._need])
        del buffer[: self._need]
        self._need = None
        self.lat.append(time.perf_counter() - self._start)
        if self._status != 200:
            self.transport.close()
            if not self.done.done():
                self.done.set_exception(RuntimeError(f"HTTP {self._status}: {body[:300]!r}"))
            return
        self.out[self._index] = body  # parsed after the clock stops: a load generator does not parse (wrk)
        self.send_next()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(exc or ConnectionError("the server closed the connection"))


async def post_all(
    port: int, path: str, bodies: list[bytes], clients: int, host: str = "127.0.0.1"
) -> tuple[float, list[float], list[Any]]:
    """``clients`` keep-alive connections post the bodies in turn; (seconds, latencies, parsed replies in order)."""
    loop = asyncio.get_running_loop()
    requests = [_request(path, b, host) for b in bodies]
    out: list[Any] = [None] * len(bodies)
    latencies: list[float] = []
    order = iter(range(len(bodies)))
    connections = []
    for _ in range(clients):
        _, conn = await loop.create_connection(lambda: _Connection(requests, order, out, latencies), host, port)
        connections.append(conn)
    start = time.perf_counter()
    for conn in connections:
        conn.send_next()
    await asyncio.gather(*(conn.done for conn in connections))
    seconds = time.perf_counter() - start
    return seconds, latencies, [json.loads(b) for b in out]


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on uvloop when it is installed (the server's loop too), for both sides of a comparison."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)
