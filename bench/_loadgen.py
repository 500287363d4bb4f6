"""A bounded HTTP/1.1 load generator on asyncio streams, for loopback benchmarks (bench P6).

Why not aiohttp or httpx: on a 2-core machine the load generator shares the CPUs with the server it measures,
and a full client library spends several times the server's own per-request CPU (measured: the same trivial
ASGI app answered 2,079 requests/s to aiohttp and 4,484 to this loop). This one writes pre-built requests over
keep-alive connections and reads ``Content-Length`` bodies, nothing more, as wrk does; the replies are parsed
after the clock stops (and checked by the caller), so the figures are the server's. :func:`run` runs a
benchmark's coroutine on uvloop when it is installed, for the in-process side and the load generator alike.
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


async def _client(host: str, port: int, requests: list[bytes], order: Any, out: list[Any], lat: list[float]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for i in order:
            start = time.perf_counter()
            writer.write(requests[i])
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length)
            lat.append(time.perf_counter() - start)
            if status != 200:
                raise RuntimeError(f"HTTP {status}: {body[:300]!r}")
            out[i] = body  # parsed after the clock stops: a load generator should not parse on the clock (wrk)
    finally:
        writer.close()


async def post_all(
    port: int, path: str, bodies: list[bytes], clients: int, host: str = "127.0.0.1"
) -> tuple[float, list[float], list[Any]]:
    """``clients`` keep-alive connections post the bodies in turn; (seconds, latencies, parsed replies in order)."""
    requests = [_request(path, b, host) for b in bodies]
    out: list[Any] = [None] * len(bodies)
    latencies: list[float] = []
    order = iter(range(len(bodies)))
    start = time.perf_counter()
    await asyncio.gather(*(_client(host, port, requests, order, out, latencies) for _ in range(clients)))
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
