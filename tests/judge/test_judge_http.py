"""The HTTP backends' boundary: whatever the server sends, a backend answers (status, headers, body) or raises
ConnectionError / TimeoutError, never a library exception; bodies are capped; connections are kept alive and
never reused once broken; proxies from the environment are used only when asked.

The server here is a raw socket server that sends exactly the bytes each test chooses.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import sys
from collections.abc import Callable
from typing import Any

import pytest

from rewardflow.judge import http
from rewardflow.judge.client import JudgeClient, JudgeRequest
from rewardflow.judge.http import AiohttpBackend, Backend, HttpxBackend
from rewardflow.judge.testing import FakeJudgeServer

BODY = json.dumps({"choices": [{"message": {"content": "7"}}]}).encode()
BACKENDS = ["aiohttp", "httpx"]
Reply = Callable[[int], bytes]  # request number on this server -> raw response bytes (b"" closes silently)


def make_backend(kind: str, url: str, *, trust_env: bool = False) -> Backend:
    headers = {"Content-Type": "application/json"}
    if kind == "aiohttp":
        return AiohttpBackend(url, headers, connections=4, trust_env=trust_env)
    return HttpxBackend(url, headers, connections=4, timeout=5.0, trust_env=trust_env, transport=None)


class RawServer:
    """Counts requests per connection, records request lines, answers each request with ``reply(i)``."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.per_connection: list[int] = []
        self.request_lines: list[str] = []
        self.server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1/chat/completions"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.per_connection.append(0)
        mine = len(self.per_connection) - 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                self.request_lines.append(lines[0])
                length = next(int(v) for k, _, v in (h.partition(":") for h in lines) if k.lower() == "content-length")
                await reader.readexactly(length)
                data = self.reply(sum(self.per_connection))
                self.per_connection[mine] += 1
                if not data:
                    break
                writer.write(data)
                await writer.drain()
                if b"Connection: close" in data:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def exchange(kind: str, reply: Reply, requests: int) -> tuple[list[int], list[Any]]:
    """Send ``requests`` POSTs one after the other; return per-connection request counts and the outcomes."""
    raw = RawServer(reply)
    outcomes: list[Any] = []
    async with raw as url:
        backend = make_backend(kind, url)
        try:
            for _ in range(requests):
                try:
                    outcomes.append(await asyncio.wait_for(backend.post(b"{}"), 5))
                except Exception as exc:  # the test inspects what leaves the backend
                    outcomes.append(exc)
                await asyncio.sleep(0.01)  # let the loop see a server-side close before the next request
        finally:
            await backend.aclose()
    return raw.per_connection, outcomes


def ok(body: bytes = BODY, *extra: str) -> bytes:
    head = ["HTTP/1.1 200 OK", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def chunked(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


@pytest.mark.parametrize("kind", BACKENDS)
def test_keep_alive_reuses_one_connection(kind: str) -> None:
    seen, outcomes = asyncio.run(exchange(kind, lambda i: ok(), 5))
    assert seen == [5] and [o[:1] + o[2:] for o in outcomes] == [(200, BODY)] * 5


@pytest.mark.parametrize("kind", BACKENDS)
def test_a_connection_the_server_closes_is_not_reused(kind: str) -> None:
    seen, outcomes = asyncio.run(exchange(kind, lambda i: ok(BODY, "Connection: close"), 3))
    assert seen == [1, 1, 1] and [o[2] for o in outcomes] == [BODY] * 3


@pytest.mark.parametrize("kind", BACKENDS)
def test_error_statuses_are_answered_not_raised(kind: str) -> None:
    reply = b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 2\r\nContent-Length: 2\r\n\r\n{}"
    _, (outcome,) = asyncio.run(exchange(kind, lambda i: reply, 1))
    status, headers, body = outcome
    assert (status, headers["retry-after"], body) == (429, "2", b"{}")


@pytest.mark.parametrize("kind", BACKENDS)
def test_gzip_and_chunked_bodies_are_decoded_by_the_library(kind: str) -> None:
    packed = gzip.compress(BODY)
    replies = [ok(packed, "Content-Encoding: gzip"), chunked(BODY)]
    _, outcomes = asyncio.run(exchange(kind, lambda i: replies[i], 2))
    assert [o[2] for o in outcomes] == [BODY, BODY]


@pytest.mark.parametrize("kind", BACKENDS)
@pytest.mark.parametrize(
    "raw",
    [
        b"garbage\r\n\r\n",  # not a status line
        b"HTTP/1.1 200 OK\r\nContent-Length: 999\r\nConnection: close\r\n\r\n{}",  # truncated body
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\nnope",  # not gzip
        b"",  # closed without a response
    ],
    ids=["status-line", "truncated", "bad-gzip", "closed"],
)
def test_broken_responses_raise_connection_error(kind: str, raw: bytes) -> None:
    _, (outcome,) = asyncio.run(exchange(kind, lambda i: raw, 1))
    assert type(outcome) is ConnectionError, repr(outcome)  # mapped at the boundary, cause kept
    assert outcome.__cause__ is not None


@pytest.mark.parametrize("kind", BACKENDS)
def test_bodies_over_the_cap_are_refused(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "MAX_BODY", 1000)
    big = b"x" * 1500
    replies = [ok(big), chunked(big), ok(gzip.compress(big), "Content-Encoding: gzip"), ok(b"y" * 1000)]
    seen, outcomes = asyncio.run(exchange(kind, lambda i: replies[i], 4))
    assert [type(o) for o in outcomes[:3]] == [ConnectionError] * 3  # declared, streamed, decompressed
    assert all("refused" in str(o) for o in outcomes[:3])
    assert outcomes[3][2] == b"y" * 1000  # exactly the cap is fine
    assert sum(seen) == 4


@pytest.mark.parametrize("kind", BACKENDS)
def test_refused_connection_and_closed_backend_raise_connection_error(kind: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once the block ends

    async def go() -> list[Exception]:
        backend = make_backend(kind, f"http://127.0.0.1:{port}/v1/chat/completions")
        errors: list[Exception] = []
        for _ in range(2):
            try:
                await asyncio.wait_for(backend.post(b"{}"), 5)
            except Exception as exc:
                errors.append(exc)
            await backend.aclose()
        return errors

    errors = asyncio.run(go())
    assert len(errors) == 2 and all(isinstance(e, ConnectionError) for e in errors)


def test_aiohttp_session_is_created_lazily_once() -> None:
    async def go() -> tuple[Any, Any, Any]:
        async with RawServer(lambda i: ok()) as url:
            backend = AiohttpBackend(url, {}, connections=2, trust_env=False)
            before = backend._session
            await asyncio.gather(*(backend.post(b"{}") for _ in range(6)))
            first = backend._session
            await backend.post(b"{}")
            same = backend._session is first
            await backend.aclose()
            return before, first, same

    before, first, same = asyncio.run(go())
    assert before is None and first is not None and same


@pytest.mark.parametrize("kind", BACKENDS)
def test_proxy_from_the_environment_only_when_asked(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    proxy_raw, target_raw = RawServer(lambda i: ok()), RawServer(lambda i: ok())

    async def go() -> None:
        async with proxy_raw as proxy, target_raw as target:
            monkeypatch.setenv("HTTP_PROXY", proxy.rsplit("/v1", 1)[0])
            monkeypatch.delenv("NO_PROXY", raising=False)
            monkeypatch.delenv("no_proxy", raising=False)
            for trust_env in (False, True):
                backend = make_backend(kind, target, trust_env=trust_env)
                await asyncio.wait_for(backend.post(b"{}"), 5)
                await backend.aclose()

    asyncio.run(go())
    assert target_raw.request_lines == ["POST /v1/chat/completions HTTP/1.1"]  # direct when not trusted
    assert len(proxy_raw.request_lines) == 1 and proxy_raw.request_lines[0].startswith("POST http://127.0.0.1:")


@pytest.mark.parametrize("kind", BACKENDS)
def test_the_client_never_proxies_loopback(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # a dead proxy: using it would fail the call
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with FakeJudgeServer() as server:
        client = JudgeClient(base_url=server.base_url, max_retries=0, http_backend=kind)
        request = JudgeRequest(model="m", messages=({"role": "user", "content": "[[reply:7]]"},))
        assert asyncio.run(client.complete(request)).text == "7"
        client.close()


@pytest.mark.parametrize("kind", BACKENDS)
def test_a_missing_library_is_reported_when_the_client_is_built(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from rewardflow.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, kind, None)  # import fails as if not installed
    with pytest.raises(MissingDependencyError, match=kind) as caught:
        JudgeClient(base_url="http://127.0.0.1:9/v1", http_backend=kind)
    assert "judge" in str(caught.value)  # names the extra to install
