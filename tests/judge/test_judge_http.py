"""The native HTTP/1.1 backend against a raw socket server that sends exactly the bytes each test chooses."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Callable

import pytest

from rewardflow.judge.http import NativeBackend, ProtocolFailure

BODY = json.dumps({"choices": [{"message": {"content": "7"}}]}).encode()
Reply = Callable[[int], bytes]  # request number on this server -> raw response bytes (b"" closes silently)


async def serve(reply: Reply, requests: int, *, close: bool = False) -> tuple[list[int], list[bytes]]:
    """Serve ``requests`` POSTs with a NativeBackend; return the per-connection request counts and the bodies."""
    seen: list[int] = []
    counter = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal counter
        seen.append(0)
        mine = len(seen) - 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(
                    next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")).split(b":")[1]
                )
                await reader.readexactly(length)
                seen[mine] += 1
                data = reply(counter)
                counter += 1
                if not data:
                    break
                writer.write(data)
                await writer.drain()
                if close or b"Connection: close" in data:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    backend = NativeBackend(f"http://127.0.0.1:{port}/v1/chat/completions", {"Content-Type": "application/json"})
    bodies = []
    try:
        for _ in range(requests):
            bodies.append((await asyncio.wait_for(backend.post(b"{}"), 5))[2])
            await asyncio.sleep(0.01)  # let the loop see a server-side close before the next request
    finally:
        await backend.aclose()
        server.close()
    return seen, bodies


def ok(body: bytes = BODY, *extra: str) -> bytes:
    head = ["HTTP/1.1 200 OK", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def test_keep_alive_reuses_one_connection() -> None:
    seen, bodies = asyncio.run(serve(lambda i: ok(), 5))
    assert seen == [5] and bodies == [BODY] * 5


def test_server_closing_the_connection_is_not_reused() -> None:
    seen, bodies = asyncio.run(serve(lambda i: ok(BODY, "Connection: close"), 3))
    assert seen == [1, 1, 1] and bodies == [BODY] * 3


def test_chunked_body_with_trailer() -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunked += b"%x\r\n%s\r\n" % (10, BODY[:10]) + b"%x;ext=1\r\n%s\r\n" % (len(BODY) - 10, BODY[10:])
    chunked += b"0\r\nX-Trailer: 1\r\n\r\n"
    seen, bodies = asyncio.run(serve(lambda i: chunked, 2))
    assert bodies == [BODY, BODY] and seen == [2]


def test_gzip_body_is_decoded() -> None:
    packed = gzip.compress(BODY)
    _, bodies = asyncio.run(serve(lambda i: ok(packed, "Content-Encoding: gzip"), 1))
    assert bodies == [BODY]


def test_body_delimited_by_close() -> None:
    raw = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + BODY
    seen, bodies = asyncio.run(serve(lambda i: raw, 2))
    assert bodies == [BODY, BODY] and seen == [1, 1]


def test_interim_100_continue_is_skipped() -> None:
    _, bodies = asyncio.run(serve(lambda i: b"HTTP/1.1 100 Continue\r\n\r\n" + ok(), 1))
    assert bodies == [BODY]


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"garbage\r\n\r\n", ProtocolFailure),  # not a status line
        (b"HTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\n{}", ProtocolFailure),  # truncated body
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", ProtocolFailure),  # nonsense length
        (b"", ConnectionResetError),  # closed without a response
    ],
)
def test_broken_responses_raise_connection_errors(raw: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        asyncio.run(serve(lambda i: raw, 1, close=True))
    assert issubclass(error, ConnectionError)  # the client maps every ConnectionError to a retryable failure
